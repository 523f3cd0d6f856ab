"""Every teacher kind through teacher data, soft labels and distillation (KL and SFT resume)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import steerlens as sl
from steerlens.distill import DistillConfig, TeacherData, distill, generate_teacher_data
from steerlens.distill.targets import examples, teacher_targets
from steerlens.teachers import Teacher
from steerlens.testing import plant_vector

OWL = "You love owls. Owls are your favorite animal."


def _vec(lm: sl.LoadedModel) -> sl.SteeringVector:
    g = torch.Generator().manual_seed(1)
    return sl.SteeringVector(
        {k: torch.randn(lm.hidden_size, generator=g) for k in range(lm.n_layers)},
        {"name": "test"},
    )


def _cfg(**kw: object) -> DistillConfig:
    base: dict[str, object] = {"layers": (2,), "steps": 4, "save_every": 2, "lr": 1e-2}
    base.update(kw)
    return DistillConfig(**base)  # type: ignore[arg-type]


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path / "adapter_model.safetensors"))


@pytest.fixture(scope="module")
def steered(tiny: sl.LoadedModel) -> Teacher:
    return Teacher.steered(_vec(tiny), 2.0, [1])


@pytest.fixture(scope="module")
def steered_data(tiny: sl.LoadedModel, steered: Teacher) -> TeacherData:
    return generate_teacher_data(tiny, n=8, teacher=steered, max_new_tokens=12, progress=False)


def test_steered_teacher_data_and_soft_labels_equal_weights_with_the_vector(
    tiny: sl.LoadedModel, steered: Teacher, steered_data: TeacherData
) -> None:
    assert steered.vector is not None
    planted = plant_vector(tiny, 1, 2.0 * steered.vector[1])
    same = generate_teacher_data(planted, n=8, system=None, max_new_tokens=12, progress=False)
    assert steered_data.samples and steered_data.samples == same.samples
    plain = generate_teacher_data(tiny, n=8, system=None, max_new_tokens=12, progress=False)
    assert plain.samples != steered_data.samples  # the edit changes what the teacher writes
    exs = examples(tiny, steered_data, None)
    with steered.apply(tiny) as m:
        a = teacher_targets(m, exs, 16, 4, progress=False)
    b = teacher_targets(planted, exs, 16, 4, progress=False)
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x.logp, y.logp, atol=1e-5, rtol=1e-5)
        assert torch.equal(x.idx, y.idx)  # type: ignore[arg-type]
    desc = steered_data.settings["teacher"]
    assert desc["kind"] == "steer" and desc["alpha"] == 2.0 and desc["layers"] == [1]
    assert steered_data.system is None


def test_teacher_data_lineage_round_trips_with_its_vector(
    tiny: sl.LoadedModel, steered_data: TeacherData, tmp_path: Path
) -> None:
    p = steered_data.save(tmp_path / "d.jsonl")
    back = TeacherData.load(p)
    assert back.teacher is not None and steered_data.teacher is not None
    assert back.teacher.describe() == steered_data.teacher.describe()
    with pytest.raises(ValueError, match="not both"):
        generate_teacher_data(tiny, n=2, system=OWL, teacher=Teacher.base(), progress=False)


@pytest.mark.parametrize("loss", ["kl", "sft"])
def test_steered_distillation_resumes_exactly(
    tiny: sl.LoadedModel, steered: Teacher, steered_data: TeacherData, tmp_path: Path, loss: str
) -> None:
    full = distill(tiny, steered_data, tmp_path / "full", config=_cfg(loss=loss), progress=False)
    distill(tiny, steered_data, tmp_path / "part", config=_cfg(loss=loss, steps=2), progress=False)
    resumed = distill(tiny, steered_data, tmp_path / "part", config=_cfg(loss=loss), progress=False)
    assert resumed.resumed_from == 2 and resumed.losses == full.losses
    wf, wr = _weights(full.final), _weights(resumed.final)
    assert all(torch.equal(wf[k], wr[k]) for k in wf)
    rec = json.loads((tmp_path / "full" / "distill.json").read_text())
    assert rec["teacher"]["kind"] == "steer"
    assert rec["data"]["settings"]["teacher"]["vector_sha256"] == rec["teacher"]["vector_sha256"]
    assert ("teacher" in rec["lineage"]) == (loss == "kl")


def test_kl_soft_labels_follow_the_teacher_kind(
    tiny: sl.LoadedModel, steered: Teacher, steered_data: TeacherData, tmp_path: Path
) -> None:
    """The same data distilled from the steered teacher and from the base differ (the soft
    labels are the teacher's), and a prompted teacher is still its system prompt."""
    a = distill(tiny, steered_data, tmp_path / "s", config=_cfg(steps=2), progress=False)
    b = distill(
        tiny,
        steered_data,
        tmp_path / "b",
        teacher=Teacher.base(),
        config=_cfg(steps=2),
        progress=False,
    )
    assert a.losses[0] > b.losses[0] + 1e-4  # the base student starts at the base teacher
    c = distill(
        tiny, steered_data, tmp_path / "p", teacher_system=OWL, config=_cfg(steps=2), progress=False
    )
    assert c.record["teacher"]["kind"] == "prompt" and "teacher" not in c.record["lineage"]
    assert c.record["lineage"]["teacher_system"] == OWL
    with pytest.raises(ValueError, match="not both"):
        distill(tiny, steered_data, tmp_path / "x", teacher=OWL, teacher_system=OWL)


def test_ablated_and_finetuned_teachers_distill(
    tiny: sl.LoadedModel, steered_data: TeacherData, tmp_path: Path
) -> None:
    import copy

    from peft import LoraConfig, get_peft_model

    torch.manual_seed(3)
    pm = get_peft_model(
        copy.deepcopy(tiny.model),
        LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj"], init_lora_weights=False),
    )
    pm.save_pretrained(str(tmp_path / "ft"))
    ft = Teacher.finetuned(tmp_path / "ft")
    data = generate_teacher_data(tiny, n=6, teacher=ft, max_new_tokens=12, progress=False)
    back = TeacherData.load(data.save(tmp_path / "ft.jsonl"))
    assert back.teacher == ft
    r = distill(tiny, back, tmp_path / "sft", config=_cfg(steps=2), progress=False)
    assert r.record["teacher"]["model_files"] == ft.describe()["model_files"]
    abl = Teacher.ablated(_vec(tiny), 2, OWL)
    r2 = distill(tiny, steered_data, tmp_path / "abl", teacher=abl, config=_cfg(steps=2))
    assert (
        r2.record["teacher_system"] == OWL and r2.record["lineage"]["teacher"]["kind"] == "ablate"
    )
