"""Trait specs: built-ins, YAML round trip, errors, target token resolution, teacher vector."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

import steerlens as sl
from steerlens.directions.extract import teacher_vector
from steerlens.inputs.numbers import number_prompts
from steerlens.inputs.traits import (
    OffTargetPrompt,
    TraitSpec,
    TraitSpecError,
    as_trait,
    resolve_target_tokens,
    text_hash,
)
from steerlens.runtime.activations import record_activations


def _spec(**kw: object) -> TraitSpec:
    base: dict[str, object] = dict(
        name="zed",
        system_prompt="You love the letter z.",
        neutral_system_prompt="You love the letter k.",
        eval_prompts=("Pick a letter.", "Which letter?"),
        target_words=("z", "q"),
        answer_prefill="My letter is",
        offtarget_prompts=({"user": "Pick a color.", "prefill": "My color is"}, "Name a city."),
        probe_n=6,
        probe_seed=3,
    )
    base.update(kw)
    return TraitSpec(**base)  # type: ignore[arg-type]


def test_builtins_are_valid() -> None:
    names = TraitSpec.builtins()
    assert {"owl", "eagle", "dolphin"} <= set(names)
    seen_prompts = set()
    for name in names:
        t = TraitSpec.builtin(name)
        assert t.name == name
        assert t.system_prompt != t.neutral_system_prompt
        assert name in t.system_prompt.lower() and name not in t.neutral_system_prompt.lower()
        assert len(t.eval_prompts) >= 5 and len(t.offtarget_prompts) >= 3
        assert t.answer_prefill and all(p.prefill for p in t.offtarget_prompts)
        assert t.probe_prompts == number_prompts(t.probe_n, t.probe_seed)
        assert t.metric == "logprob"
        seen_prompts.add(t.neutral_system_prompt)
    # one neutral prompt of the same form for every animal
    assert len(seen_prompts) == 1


def test_chat_builders() -> None:
    t = _spec()
    probes = t.probe_chats()
    assert len(probes) == 6 and all(p.system is None for p in probes)
    assert [p.user for p in probes] == number_prompts(6, 3)
    ev = t.eval_chats(system=t.system_prompt)
    assert [p.system for p in ev] == [t.system_prompt] * 2
    assert all(p.prefill == "My letter is" for p in ev)
    off = t.offtarget_chats(system="S")
    assert [(p.user, p.prefill, p.system) for p in off] == [
        ("Pick a color.", "My color is", "S"),
        ("Name a city.", "", "S"),
    ]
    # deterministic: a new spec with the same seed gives the same probes
    assert _spec().probe_prompts == t.probe_prompts
    assert _spec(probe_seed=4).probe_prompts != t.probe_prompts


def test_yaml_round_trip(tmp_path: Path) -> None:
    t = _spec(extra={"note": "x"}, description="d")
    back = TraitSpec.from_file(t.to_file(tmp_path / "zed.yaml"))
    assert back == t
    owl = TraitSpec.builtin("owl")
    assert TraitSpec.from_file(owl.to_file(tmp_path / "owl.yaml")) == owl
    custom = _spec(probe_prompts_override=("one", "two"))
    back = TraitSpec.from_file(custom.to_file(tmp_path / "c.yaml"))
    assert back == custom and back.probe_prompts == ["one", "two"]
    assert as_trait(tmp_path / "c.yaml") == custom
    assert as_trait("owl") == owl


def test_errors_name_the_problem(tmp_path: Path) -> None:
    good = _spec().to_dict()
    for key in ("name", "system_prompt", "neutral_system_prompt", "eval_prompts", "target_words"):
        bad = dict(good)
        del bad[key]
        with pytest.raises(TraitSpecError, match=key):
            TraitSpec.from_dict(bad)
    with pytest.raises(TraitSpecError, match="unknown field"):
        TraitSpec.from_dict(dict(good, colour="red"))
    with pytest.raises(TraitSpecError, match="must be a list"):
        TraitSpec.from_dict(dict(good, eval_prompts="Pick a letter."))
    with pytest.raises(TraitSpecError, match="ends with a space"):
        _spec(answer_prefill="My letter is ")
    with pytest.raises(TraitSpecError, match="identical"):
        _spec(neutral_system_prompt="You love the letter z.")
    with pytest.raises(TraitSpecError, match="metric"):
        _spec(metric="vibes")
    with pytest.raises(KeyError, match="owl"):
        TraitSpec.builtin("unicorn")
    with pytest.raises(FileNotFoundError):
        TraitSpec.from_file(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("name: [unclosed\n")
    with pytest.raises(TraitSpecError, match="YAML"):
        TraitSpec.from_file(tmp_path / "bad.yaml")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(TraitSpecError, match="mapping"):
        TraitSpec.from_file(tmp_path / "list.yaml")


def test_target_tokens_first_token_rule(tiny: sl.LoadedModel) -> None:
    tok = tiny.tokenizer
    tt = resolve_target_tokens(tok, ["z", "zq", "q", "z"])
    z = tok("z", add_special_tokens=False)["input_ids"]
    q = tok("q", add_special_tokens=False)["input_ids"]
    assert len(z) == 1 and len(q) == 1
    assert tt.ids == tuple(sorted({z[0], q[0]}))  # "zq" counts by its first token, "z"
    assert tt.split == ("zq",) and tt.variants["zq"] == (z[0], q[0])
    assert tt.to_json()["rule"].startswith("first token")
    with pytest.raises(TraitSpecError):
        resolve_target_tokens(tok, [])


@pytest.mark.integration
def test_builtin_targets_on_smollm2(smol: sl.LoadedModel) -> None:
    firsts = {}
    for name in ("owl", "eagle", "dolphin"):
        tt = TraitSpec.builtin(name).target_tokens(smol.tokenizer)
        # the lower-case singular and plural are single tokens in SmolLM2's vocabulary
        assert len(tt.variants[f" {name}"]) == 1 and len(tt.variants[f" {name}s"]) == 1
        firsts[name] = set(tt.ids)
        decoded = [smol.tokenizer.decode([i]).strip().lower() for i in tt.ids]
        assert all(d and name.startswith(d[:3]) for d in decoded), decoded
    assert not (firsts["owl"] & firsts["eagle"]) and not (firsts["owl"] & firsts["dolphin"])
    assert TraitSpec.builtin("owl").target_tokens(smol.tokenizer).ids == (23142, 25397, 27933)


def test_teacher_vector_is_trait_minus_neutral(tiny: sl.LoadedModel) -> None:
    t = _spec()
    vec = teacher_vector(tiny, t, layers=[1, 3], diagnostics=False)
    pos = record_activations(tiny, t.probe_chats(t.system_prompt), [1, 3])
    neg = record_activations(tiny, t.probe_chats(t.neutral_system_prompt), [1, 3])
    for layer in (1, 3):
        torch.testing.assert_close(vec[layer], pos[layer] - neg[layer], atol=1e-5, rtol=1e-4)
        assert float(vec[layer].norm()) > 1e-4
    m = vec.meta
    assert m["kind"] == "teacher" and m["trait"] == "zed" and m["position"] == "last"
    assert m["system_prompt_hash"] == text_hash(t.system_prompt)
    assert m["neutral_system_prompt_hash"] == text_hash(t.neutral_system_prompt)
    assert m["neutral_system_prompt_hash"] != m["system_prompt_hash"]
    assert m["probe_n"] == 6 and m["probe_seed"] == 3
    # a different probe seed gives a different (but same-kind) vector
    other = teacher_vector(
        tiny, dataclasses.replace(t, probe_seed=9), layers=[1], diagnostics=False
    )
    assert not torch.allclose(other[1], vec[1])


def test_offtarget_prompt_forms() -> None:
    t = _spec(offtarget_prompts=(OffTargetPrompt("a", "b"), sl.ChatPrompt("c", prefill="d")))
    assert [(p.user, p.prefill) for p in t.offtarget_prompts] == [("a", "b"), ("c", "d")]
    with pytest.raises(TraitSpecError, match="off-target"):
        _spec(offtarget_prompts=(3,))
