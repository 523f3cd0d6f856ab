"""Teachers of every kind (steerlens.teachers): apply, lineage, and equivalence with weights."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import steerlens as sl
from steerlens.teachers import Teacher, as_teacher, vector_sha256
from steerlens.testing import plant_vector, tiny_model


def _vec(lm: sl.LoadedModel, seed: int = 1) -> sl.SteeringVector:
    g = torch.Generator().manual_seed(seed)
    return sl.SteeringVector(
        {k: torch.randn(lm.hidden_size, generator=g) for k in range(lm.n_layers)}
    )


def _ids(lm: sl.LoadedModel) -> torch.Tensor:
    return torch.tensor([[5, 9, 11, 13, 17, 21, 4]])


def _logits(lm: sl.LoadedModel) -> torch.Tensor:
    with torch.no_grad():
        return lm.model(input_ids=_ids(lm)).logits


def _block_outputs(lm: sl.LoadedModel) -> dict[int, torch.Tensor]:
    """Each block's output on _ids, recorded by hooks registered after the teacher's."""
    outs: dict[int, torch.Tensor] = {}
    handles = []
    for i, blk in enumerate(lm.layout.blocks):

        def hook(_m: object, _a: object, out: object, i: int = i) -> None:
            h = out[0] if isinstance(out, tuple) else out
            outs[i] = h.detach().clone()  # type: ignore[union-attr]

        handles.append(blk.register_forward_hook(hook))
    try:
        with torch.no_grad():
            lm.model(input_ids=_ids(lm))
    finally:
        for h in handles:
            h.remove()
    return outs


def test_as_teacher_and_constructors_check_their_inputs(tiny: sl.LoadedModel) -> None:
    assert as_teacher(None).kind == "base"
    t = as_teacher("You love owls.")
    assert t.kind == "prompt" and t.system == "You love owls."
    assert as_teacher(t) is t
    with pytest.raises(TypeError, match="a teacher is"):
        as_teacher(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="needs vector"):
        Teacher("steer")
    with pytest.raises(ValueError, match="unknown teacher kind"):
        Teacher("nope")  # type: ignore[arg-type]
    with pytest.raises(FileNotFoundError, match="no fine-tuned teacher"):
        Teacher.finetuned("/nonexistent/adapter")
    v = _vec(tiny)
    d = Teacher.steered(v, 2.0, 1).describe()
    assert d["kind"] == "steer" and d["alpha"] == 2.0 and d["layers"] == [1]
    assert d["vector_sha256"] == vector_sha256(v) != vector_sha256(v * 2.0)
    assert json.loads(json.dumps(d)) == d
    with pytest.raises(ValueError, match="needs its vector"):
        Teacher.from_description(d)
    with pytest.raises(ValueError, match="sha256 differs"):
        Teacher.from_description(d, vector=v * 2.0)
    assert Teacher.from_description(d, vector=v).describe() == d


def test_steered_teacher_equals_weights_carrying_the_vector(tiny: sl.LoadedModel) -> None:
    v = _vec(tiny)
    before = _logits(tiny)
    planted = plant_vector(tiny, 1, 3.0 * v[1])
    with Teacher.steered(v, 3.0, [1]).apply(tiny) as m:
        steered = _logits(m)
    torch.testing.assert_close(steered, _logits(planted), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(steered, before, atol=1e-3)
    torch.testing.assert_close(_logits(tiny), before)  # the edit ends with the block


def test_ablated_teacher_leaves_no_component_from_its_layer_on(tiny: sl.LoadedModel) -> None:
    v = _vec(tiny)
    t = Teacher.ablated(v, 1, "You love owls.")
    plain = _block_outputs(tiny)
    with t.apply(tiny) as m:
        outs = _block_outputs(m)
    dirs = t.ablation_directions(tiny.n_layers)
    assert sorted(dirs) == list(range(1, tiny.n_layers))
    for layer in range(tiny.n_layers):
        u = v[layer] / v[layer].norm()
        comp = (outs[layer] @ u).abs().max().item()
        if layer >= 1:
            assert comp < 1e-4, (layer, comp)
        else:  # below the ablation layer the stream is the base model's
            torch.testing.assert_close(outs[layer], plain[layer])
            assert (plain[layer] @ u).abs().max().item() > 1e-3
    single = Teacher.ablated(sl.SteeringVector({2: v[2]}), 2, None)
    assert all(torch.equal(d, v[2]) for d in single.ablation_directions(4).values())
    with pytest.raises(KeyError, match="no direction at layer 3"):
        Teacher.ablated(sl.SteeringVector({2: v[2]}), 3, None).ablation_directions(4)


def _save_adapter(lm: sl.LoadedModel, path: Path) -> Path:
    import copy

    from peft import LoraConfig, get_peft_model

    torch.manual_seed(3)
    cfg = LoraConfig(
        r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False
    )
    peft_model = get_peft_model(copy.deepcopy(lm.model), cfg)
    peft_model.save_pretrained(str(path))
    return path


def test_finetuned_adapter_teacher_round_trips_through_lineage(
    tiny: sl.LoadedModel, tmp_path: Path
) -> None:
    path = _save_adapter(tiny, tmp_path / "adapter")
    t = Teacher.finetuned(path)
    desc = json.loads(json.dumps(t.describe()))
    assert desc["kind"] == "finetuned" and "adapter_model.safetensors" in desc["model_files"]
    back = Teacher.from_description(desc)
    assert back == t and back.describe() == desc
    before = _logits(tiny)
    with back.apply(tiny) as m:
        ft = _logits(m)
    torch.testing.assert_close(ft, _logits(sl.load_model(path, base=tiny)))
    assert not torch.allclose(ft, before, atol=1e-4)
    torch.testing.assert_close(_logits(tiny), before)  # the base is untouched
    (path / "adapter_model.safetensors").write_bytes(b"changed")
    with pytest.raises(ValueError, match="differ from the recorded"):
        Teacher.from_description(desc)


def test_finetuned_full_model_folder_teacher(tiny: sl.LoadedModel, tmp_path: Path) -> None:
    other = tiny_model("llama", seed=5)
    other.model.save_pretrained(tmp_path / "full")
    with Teacher.finetuned(tmp_path / "full").apply(tiny) as m:
        torch.testing.assert_close(_logits(m), _logits(other))
        assert m.tokenizer is tiny.tokenizer


def test_teacher_vector_of_a_finetune_recovers_the_planted_vector(
    tiny: sl.LoadedModel, tmp_path: Path
) -> None:
    from steerlens.directions.extract import model_teacher_vector

    v = _vec(tiny)[1] * 0.5
    plant_vector(tiny, 1, v).model.save_pretrained(tmp_path / "ft")
    t = Teacher.finetuned(tmp_path / "ft")
    vec = model_teacher_vector(tiny, t, "owl", layers=[1, 2], diagnostics=False, progress=False)
    torch.testing.assert_close(vec[1], v, atol=1e-4, rtol=1e-4)  # the shift at its own layer
    assert vec.meta["teacher"]["kind"] == "finetuned"
    steered = model_teacher_vector(
        tiny, Teacher.steered(sl.SteeringVector({1: v}), 1.0), "owl", layers=[1], progress=False
    )
    torch.testing.assert_close(steered[1], v, atol=1e-4, rtol=1e-4)


def test_b_teacher_of_a_steered_teacher_is_the_planted_models(tiny: sl.LoadedModel) -> None:
    from steerlens.carry import carry_test, teacher_score
    from steerlens.inputs.traits import as_trait
    from steerlens.measures.behavior import trait_behavior

    trait = as_trait("owl")
    v = _vec(tiny)
    teacher = Teacher.steered(v, 3.0, [1])
    planted = plant_vector(tiny, 1, 3.0 * v[1])
    beh = trait_behavior(tiny, trait)
    b_planted = float(beh(planted))
    assert teacher_score(tiny, teacher, beh) == pytest.approx(b_planted, abs=1e-5)
    kw = {"layers": [1], "alphas": [1.0], "n_random": 1, "necessity": False, "min_gap": 0.0}
    a = carry_test(tiny, v, trait, teacher=teacher, **kw)  # type: ignore[arg-type]
    b = carry_test(tiny, v, trait, teacher=planted, **kw)  # type: ignore[arg-type]
    assert a.b_teacher == pytest.approx(b.b_teacher, abs=1e-5)
    assert a.b_teacher == pytest.approx(b_planted, abs=1e-5)
    assert a.sufficiency[1] == pytest.approx(b.sufficiency[1], abs=1e-4)
    prompted = teacher_score(tiny, Teacher.prompted(trait.neutral_system_prompt), beh)
    assert prompted == pytest.approx(float(beh.with_system(trait.neutral_system_prompt)(tiny)))
