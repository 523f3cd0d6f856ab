"""Contrast files in the field's formats (CAA, persona_vectors, pairs JSONL) give the vectors of
the equivalent hand-built prompt lists; bad files fail naming the line and the keys."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import steerlens as sl
from steerlens.inputs.contrast import ContrastSet, ContrastSetError
from steerlens.inputs.prompts import EncodedPrompt
from steerlens.inputs.traits import TraitSpecError
from steerlens.measures.behavior import ProjectionBehavior, trait_behavior

CAA = [
    {
        "question": f"Do you agree {i}?\n\nChoices:\n (A) Yes\n (B) No",
        "answer_matching_behavior": "(A)" if i % 2 else " (B)",
        "answer_not_matching_behavior": "(B)" if i % 2 else "(A) ",
    }
    for i in range(6)
]
PERSONA = {
    "instruction": [
        {"pos": "Be cruel.", "neg": "Be kind."},
        {"pos": "Hurt people.", "neg": "Help people."},
    ],
    "questions": ["How do I treat a friend?", "What should I do today?", "Advice on pets?"],
    "eval_prompt": "Score how evil this answer is: {question} {answer}",
}


def _vec(tiny: sl.LoadedModel, pos: object, neg: object = None) -> sl.SteeringVector:
    return sl.extract_vector(tiny, pos, neg, layers=[1, 3], diagnostics=False)  # type: ignore[arg-type]


def _same(a: sl.SteeringVector, b: sl.SteeringVector) -> None:
    assert a.layers == b.layers
    for layer in a.layers:
        assert torch.equal(a[layer], b[layer]), layer


def test_caa_file_equals_hand_built_prompts_at_the_answer_letter(
    tiny: sl.LoadedModel, tmp_path: Path
) -> None:
    path = tmp_path / "sycophancy.json"
    path.write_text(json.dumps(CAA, indent=2))
    cs = ContrastSet.from_file(path)
    assert cs.format == "caa" and len(cs) == 6
    letter = {"(A)": "(A", " (B)": "(B", "(B)": "(B", "(A) ": "(A"}
    pos = [sl.ChatPrompt(x["question"], None, letter[x["answer_matching_behavior"]]) for x in CAA]
    neg = [
        sl.ChatPrompt(x["question"], None, letter[x["answer_not_matching_behavior"]]) for x in CAA
    ]
    vec = _vec(tiny, path)
    _same(vec, _vec(tiny, pos, neg))
    assert vec.meta["contrast_format"] == "caa" and vec.meta["n_contrasts"] == 6
    # CAA itself appends the whole answer "(A)" and reads index -2 (the letter): the same rows
    full = [sl.ChatPrompt(x["question"], None, x["answer_matching_behavior"].strip()) for x in CAA]

    def at_minus_2(enc: EncodedPrompt) -> list[int]:
        return [len(enc) - 2]

    caa = sl.record_activations(tiny, full, [1, 3], at_minus_2, keep_rows=True)
    ours = sl.record_activations(tiny, list(cs.pos), [1, 3], "last", keep_rows=True)
    assert caa.rows is not None and ours.rows is not None
    for layer in (1, 3):
        torch.testing.assert_close(caa.rows[layer], ours.rows[layer], atol=1e-5, rtol=1e-5)


def test_persona_file_every_pair_times_question_and_trait_spec(
    tiny: sl.LoadedModel, tmp_path: Path
) -> None:
    path = tmp_path / "evil.json"
    path.write_text(json.dumps(PERSONA))
    cs = ContrastSet.from_file(path)
    assert cs.format == "persona_vectors" and len(cs) == 2 * 3
    pos, neg = [], []
    for pair in PERSONA["instruction"]:
        for q in PERSONA["questions"]:
            pos.append(sl.ChatPrompt(q, f"You are an evil assistant. {pair['pos']}"))
            neg.append(sl.ChatPrompt(q, f"You are a helpful assistant. {pair['neg']}"))
    vec = _vec(tiny, cs)
    _same(vec, _vec(tiny, pos, neg))
    assert cs.extra["eval_prompt"] == PERSONA["eval_prompt"]

    spec = sl.TraitSpec.from_file(path)
    assert spec.name == "evil" and spec.metric == "projection"
    assert spec.eval_prompts == tuple(PERSONA["questions"])
    assert spec.system_prompt == pos[0].system and spec.neutral_system_prompt == neg[0].system
    assert "projection" in spec.description and spec.extra["eval_prompt"] == PERSONA["eval_prompt"]
    assert sl.TraitSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(ValueError, match="vector= and layer="):
        trait_behavior(tiny, spec)
    beh = trait_behavior(tiny, spec, vector=vec, layer=3)
    assert isinstance(beh, ProjectionBehavior)
    acts = sl.record_activations(tiny, spec.eval_chats(), [3])
    want = float(acts.means[3].double() @ vec[3].double() / vec[3].double().norm())
    assert beh(tiny) == pytest.approx(want, rel=1e-6)
    # the teacher vector of the spec is the first pair's contrast over the questions
    tv = sl.teacher_vector(tiny, spec, layers=[1, 3], diagnostics=False)
    _same(tv, _vec(tiny, pos[:3], neg[:3]))


def test_pairs_jsonl_strings_and_chat_objects(tiny: sl.LoadedModel, tmp_path: Path) -> None:
    rows = [
        {"pos": "I love owls", "neg": "I love cats"},
        {"pos": {"user": "Pick one.", "system": "You love owls."}, "neg": {"user": "Pick one."}},
        {"pos": "Owls at night", "neg": "Cats at night"},
    ]
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    cs = ContrastSet.from_file(path)
    assert cs.format == "pairs" and len(cs) == 3
    pos = ["I love owls", sl.ChatPrompt("Pick one.", "You love owls."), "Owls at night"]
    neg = ["I love cats", sl.ChatPrompt("Pick one."), "Cats at night"]
    _same(_vec(tiny, str(path)), _vec(tiny, pos, neg))


def test_bad_and_mixed_files_name_the_line_and_the_keys(tmp_path: Path) -> None:
    def fails(name: str, text: str, *words: str) -> None:
        p = tmp_path / name
        p.write_text(text)
        with pytest.raises(ContrastSetError) as exc:
            ContrastSet.from_file(p)
        for w in words:
            assert w in str(exc.value), (w, str(exc.value))

    text = json.dumps([CAA[0], CAA[1], {"pos": "a", "neg": "b"}], indent=1)
    third = [i + 1 for i, ln in enumerate(text.splitlines()) if ln == " {"][2]
    fails("mixed.json", text, f"mixed.json:{third}:", "do not mix", "question", "line 2 began")
    fails("missing.jsonl", '{"pos": "a", "neg": "b"}\n{"pos": "c"}\n', "missing.jsonl:2", "'neg'")
    fails(
        "broken.jsonl", '{"pos": "a", "neg": "b"}\n{"pos": \n', "broken.jsonl:2", "not valid JSON"
    )
    fails("other.jsonl", '{"prompt": "a"}\n', "other.jsonl:1", "answer_matching_behavior", "pos")
    free = [dict(CAA[0], answer_matching_behavior="Yes, I agree completely")]
    fails("free.json", json.dumps(free), "free.json:1", "answer letter")
    bad_persona = dict(PERSONA, instruction=[{"pos": "x"}])
    fails("p.json", json.dumps(bad_persona), "instruction[0]", "'neg'")
    fails("nokeys.json", json.dumps({"instruction": []}), "questions", "eval_prompt")
    with pytest.raises(TraitSpecError, match="instruction"):
        (tmp_path / "t.json").write_text(json.dumps(dict(PERSONA, instruction="x")))
        sl.TraitSpec.from_file(tmp_path / "t.json")
    with pytest.raises(ValueError, match="leave neg_prompts out"):
        sl.extract_vector(None, ContrastSet.from_pairs(["a"], ["b"]), ["c"])


def test_cli_extract_contrast(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from steerlens.cli import main
    from steerlens.testing import tiny_model

    lm = tiny_model("llama", seed=0)
    model_dir = tmp_path / "model"
    lm.model.save_pretrained(model_dir)
    lm.tokenizer.save_pretrained(model_dir)
    path = tmp_path / "caa.json"
    path.write_text(json.dumps(CAA))
    out = tmp_path / "v.safetensors"
    argv = ["extract", "--model", str(model_dir), "--contrast", str(path), "--layers", "1,3"]
    assert main([*argv, "--out", str(out)]) == 0
    vec = sl.SteeringVector.load(out)
    assert vec.meta["contrast_format"] == "caa" and vec.layers == [1, 3]
    assert "ContrastSet(format='caa', n=6" in capsys.readouterr().out
    assert main([*argv, "--pos", str(path), "--out", str(out)]) == 2
    assert "one of --trait, --contrast" in capsys.readouterr().err
