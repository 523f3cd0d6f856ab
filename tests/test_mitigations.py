"""Mitigations of trait transfer (issue 18): vetting, the trait-direction regulariser, and
preventative steering during training only."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

import steerlens as sl
from steerlens.core.vectors import SteeringVector
from steerlens.distill import (
    DistillConfig,
    Mitigation,
    TeacherData,
    distill,
    student_loss,
    vet_by_scores,
)
from steerlens.distill.mitigations import TrainingMitigation
from steerlens.distill.student import inner_hf, make_student
from steerlens.distill.targets import examples
from steerlens.testing import tiny_model

OWL = "You love owls. Owls are your favorite animal."


@pytest.fixture(scope="module")
def data() -> TeacherData:
    samples: list[dict[str, Any]] = [
        {
            "user": f"Continue {i}, {i + 3}",
            "response": ", ".join(str(5 * i + j) for j in range(2 + i % 3)),
        }
        for i in range(6)
    ]
    return TeacherData.from_samples(samples, {"system": OWL, "mode": "given"})


def _vec(lm: sl.LoadedModel, layers: tuple[int, ...] = (2, 3)) -> SteeringVector:
    g = torch.Generator().manual_seed(1)
    return SteeringVector({ly: torch.randn(lm.hidden_size, generator=g) for ly in layers})


def _cfg(**kw: Any) -> DistillConfig:
    base: dict[str, Any] = {"layers": (2, 3), "steps": 3, "save_every": 3, "lr": 1e-2}
    base.update(kw)
    return DistillConfig(**base)


def test_vetting_drops_exactly_the_top_k(data: TeacherData) -> None:
    scores = [0.5, 3.0, -1.0, float("nan"), 2.0, 0.1]
    res = vet_by_scores(data, scores, 2 / 6)
    assert res.dropped == [1, 4]  # the two highest; NaN never ranks high
    assert res.data.samples == [data.samples[i] for i in (0, 2, 3, 5)]
    assert res.data.settings["vetting"]["dropped"] == [1, 4]
    assert res.data.sha256 != data.sha256
    rnd = vet_by_scores(data, scores, 2 / 6, mode="random", seed=3)
    assert len(rnd.dropped) == 2 and len(rnd.data.samples) == 4
    assert rnd.dropped == vet_by_scores(data, scores, 2 / 6, mode="random", seed=3).dropped
    with pytest.raises(ValueError, match="drops nothing"):
        vet_by_scores(data, scores, 0.01)
    with pytest.raises(ValueError, match="score every sample"):
        vet_by_scores(data, scores[:3], 0.5)


def test_regulariser_gradient_matches_finite_differences(data: TeacherData) -> None:
    lm = tiny_model("llama", seed=0)
    lm.model.double()
    cfg = _cfg()
    m = Mitigation(_vec(lm), (2, 3), reg_lambda=0.7)
    exs = examples(lm, data, None)
    tm = TrainingMitigation(lm, exs, m, first=2, batch=4)
    st = make_student(lm, cfg, [2, 3])
    st.eval()  # no dropout: every forward the same function of the weights
    hf = inner_hf(st)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in st.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.3)
    idx = [0, 2, 5]
    bex = [exs[i] for i in idx]
    from steerlens.distill.targets import batch_tensors

    ids, mask, pos, *_ = batch_tensors(bex, lm.tokenizer.pad_token_id, lm.device)

    def pen() -> torch.Tensor:
        with tm.hooks(hf) as cap:
            hf(input_ids=ids, attention_mask=mask, position_ids=pos)
        return tm.penalty(cap, bex, idx).double()

    p = next(p for n, p in st.named_parameters() if "lora_A" in n and "layers.2" in n)
    val = pen()
    assert float(val.detach()) > 0
    (grad,) = torch.autograd.grad(val, [p])
    eps = 1e-3  # Llama's RMSNorm computes in float32: smaller steps drown in its rounding
    for j in [(0, 0), (1, 3), (2, 5)]:
        with torch.no_grad():
            p[j] += eps
            up = float(pen())
            p[j] -= 2 * eps
            down = float(pen())
            p[j] += eps
        assert (up - down) / (2 * eps) == pytest.approx(float(grad[j]), rel=2e-3, abs=1e-7)


def test_unshifted_student_has_zero_penalty(tiny: sl.LoadedModel, data: TeacherData) -> None:
    exs = examples(tiny, data, None)
    tm = TrainingMitigation(tiny, exs, Mitigation(_vec(tiny), (2,), reg_lambda=1.0), 2, 4)
    st = make_student(tiny, _cfg(), [2, 3])  # LoRA B = 0: the student is the base
    from steerlens.distill.trainer import Trainer

    tr = Trainer(tiny, data, OWL, _cfg(), [2, 3], False, Mitigation(_vec(tiny), (2,), 1.0))
    with torch.no_grad():
        plain = Trainer(tiny, data, OWL, _cfg(), [2, 3], False)
        a = float(tr.loss(inner_hf(st), [0, 1, 2]))
        b = float(plain.loss(inner_hf(st), [0, 1, 2]))
    assert a == pytest.approx(b, abs=1e-6)
    assert len(tm.base_proj) == len(exs)


def test_regulariser_trains_recorded_and_shrinks_the_shift(
    tiny: sl.LoadedModel, data: TeacherData, tmp_path: Path
) -> None:
    vec = _vec(tiny)
    cfg = _cfg(steps=12, save_every=12, lr=3e-3)
    plain = distill(tiny, data, tmp_path / "plain", teacher=OWL, config=cfg, progress=False)
    reg = distill(
        tiny,
        data,
        tmp_path / "reg",
        teacher=OWL,
        config=cfg,
        progress=False,
        mitigation=Mitigation(vec, (3,), reg_lambda=5.0),
    )
    rec = json.loads((tmp_path / "reg" / "distill.json").read_text())
    assert rec["lineage"]["mitigation"]["reg_lambda"] == 5.0
    assert rec["lineage_hash"] != plain.record["lineage_hash"]
    exs = examples(tiny, data, None)
    tm = TrainingMitigation(tiny, exs, Mitigation(vec, (3,), reg_lambda=1.0), 2, 8)

    def shift(res: Any) -> float:
        st = res.load(tiny)
        with torch.no_grad(), tm.hooks(st.model) as cap:
            from steerlens.distill.targets import batch_tensors

            ids, mask, pos, *_ = batch_tensors(exs, tiny.tokenizer.pad_token_id, tiny.device)
            st.model(input_ids=ids, attention_mask=mask, position_ids=pos)
        return float(tm.penalty(cap, exs, range(len(exs))))

    assert shift(reg) < shift(plain)


def test_preventative_steering_is_training_only(
    tiny: sl.LoadedModel, data: TeacherData, tmp_path: Path
) -> None:
    vec = _vec(tiny)
    plain = distill(tiny, data, tmp_path / "plain", teacher=OWL, config=_cfg(), progress=False)
    zero = distill(
        tiny,
        data,
        tmp_path / "zero",
        teacher=OWL,
        config=_cfg(),
        progress=False,
        mitigation=Mitigation(vec, (2,), steer_alpha=0.0),
    )
    wa, wb = (load_file(str(r.final / "adapter_model.safetensors")) for r in (plain, zero))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert plain.losses == zero.losses
    steered = distill(
        tiny,
        data,
        tmp_path / "steer",
        teacher=OWL,
        config=_cfg(),
        progress=False,
        mitigation=Mitigation(vec, (2,), steer_alpha=4.0),
    )
    assert steered.losses != plain.losses  # the steering acted during training
    # evaluation is unchanged by the option: no hook of ours on the loaded student or base
    # (transformers installs its own output-capturing hooks the first time a model records
    # hidden states; those belong to the model, not to the training)
    st = steered.load(tiny)
    for model in (st.model, tiny.model):
        assert not [
            f
            for mod in model.modules()
            for f in mod._forward_hooks.values()
            if not getattr(f, "__module__", "").startswith("transformers.")
        ]
    # the loaded student equals its adapter merged without steering: the held-out loss of the
    # loaded student is what a fresh load of the same folder gives
    a = student_loss(tiny, st, data, teacher=OWL, config=_cfg())
    b = student_loss(
        tiny, sl.load_model(steered.final, base=tiny), data, teacher=OWL, config=_cfg()
    )
    assert a == b
    assert student_loss(tiny, tiny, data, teacher=OWL, config=_cfg()) > 0


def test_regulariser_is_monotone_in_lambda(tmp_path: Path) -> None:
    """A steered teacher plants v at block 1; the student (LoRA 2-3, 4 Adam steps, lr 2e-3: not
    saturated) is regularised at block 2. The penalised quantity, the mean shift projection on
    v̂ at the training positions, and the penalty itself fall strictly as λ goes 0 → 1 → 10
    (measured: +0.063, +0.054, +0.006; mean squares 0.0040, 0.0029, 0.00004)."""
    from steerlens.teachers import Teacher

    lm = tiny_model("llama", seed=0)
    samples = [
        {
            "user": f"Continue {i}, {i + 3}",
            "response": ", ".join(str(5 * i + j) for j in range(2 + i % 3)),
        }
        for i in range(8)
    ]
    data = TeacherData.from_samples(samples, {"system": None, "mode": "given"})
    v = torch.randn(lm.hidden_size, generator=torch.Generator().manual_seed(1))
    vec = SteeringVector({2: v})
    teacher = Teacher.steered(SteeringVector({1: v}), 4.0, layers=(1,))
    exs = examples(lm, data, None)
    tm = TrainingMitigation(lm, exs, Mitigation(vec, (2,), reg_lambda=1.0), 2, 8)
    # top-k soft labels: the measured transfer below is through the teacher's whole distribution
    # (under number-only labels the planted shift transfers ~10x less on this tiny model)
    cfg = DistillConfig(layers=(2, 3), steps=4, save_every=4, lr=2e-3, kl_targets="top_k")
    mean, sq = [], []
    for lam in (0.0, 1.0, 10.0):
        mit = None if lam == 0 else Mitigation(vec, (2,), reg_lambda=lam)
        res = distill(
            lm,
            data,
            tmp_path / f"l{lam:g}",
            teacher=teacher,
            config=cfg,
            progress=False,
            mitigation=mit,
        )
        s = tm.shifts(res.load(lm).model, exs, lm.tokenizer.pad_token_id)[2]
        mean.append(float(s.mean()))
        sq.append(float(s.pow(2).mean()))
    assert mean[0] > 0.03  # the planted direction transfers without the regulariser
    assert mean[0] - mean[1] > 0.004 and mean[1] - mean[2] > 0.02
    assert sq[0] - sq[1] > 5e-4 and sq[1] - sq[2] > 1e-3
