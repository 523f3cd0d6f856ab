"""The svd experiment: its measurements, and the whole run on a tiny model (and SmolLM2)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from steerlens.experiments import SvdConfig, get, names
from steerlens.experiments.svd import run
from steerlens.experiments.svd_measure import sign_flip_p, transfer, transfer_verdict
from steerlens.testing import tiny_model


def test_sign_flip_p_is_exact_for_small_samples() -> None:
    d = np.ones(8)
    assert sign_flip_p(d) == pytest.approx(2 / 256)  # all-plus and all-minus patterns
    assert sign_flip_p(np.array([1.0, -1.0, 1.0, -1.0])) == 1.0
    big = np.random.default_rng(0).normal(0.5, 1.0, 40)
    assert 0 < sign_flip_p(big) < 0.05


def test_transfer_fraction_and_intervals() -> None:
    base = np.array([-5.0, -6.0, -4.0, -5.0])
    teacher = base + 2.0
    control = base + 0.1
    student = control + np.array([0.9, 1.1, 1.0, 1.0])
    tr = transfer(student, control, teacher, base, n_boot=200)
    assert tr.delta == pytest.approx(1.0) and tr.fraction == pytest.approx(0.5)
    assert tr.delta_lo <= 1.0 <= tr.delta_hi and tr.delta_lo > 0
    assert tr.fraction_lo is not None and tr.fraction_lo <= 0.5 <= tr.fraction_hi  # type: ignore[operator]
    flat = transfer(student, control, base + 0.01, base, n_boot=50)
    assert flat.fraction is None  # no teacher gap: nothing to be a fraction of
    with pytest.raises(ValueError, match="same eval prompts"):
        transfer(student[:3], control, teacher, base)


def test_positive_control_needs_behavior_and_alignment() -> None:
    def row(delta: float, p: float, ex: float, exp: float) -> dict[str, object]:
        tr = {"delta": delta, "delta_lo": 0, "delta_hi": 0, "delta_p": p, "fraction": None}
        return {"transfer": tr, "alignment": {"excess": ex, "excess_p": exp}}

    v = transfer_verdict({"steered": row(1.0, 0.01, 0.2, 0.01), "base": row(0, 1, 0, 1)})
    assert v["positive_control"] and v["inherited"] == {"steered": True}
    assert not transfer_verdict({"steered": row(1.0, 0.01, 0.2, 0.2)})["positive_control"]
    assert not transfer_verdict({"steered": row(-1.0, 0.01, 0.2, 0.01)})["positive_control"]
    # a student that moves away from its teacher (the steered teacher *lowers* B) inherited
    # nothing, however significant its Δ
    t = transfer(np.full(6, -5.0), np.full(6, -6.0), np.full(6, -7.0), np.full(6, -6.5))
    assert t.delta == 1.0 and t.fraction is not None and t.fraction < 0
    away = {"transfer": t.to_json(), "alignment": {"excess": 0.2, "excess_p": 0.01}}
    assert not transfer_verdict({"steered": away})["positive_control"]
    toward = transfer(np.full(6, -5.0), np.full(6, -6.0), np.full(6, -4.0), np.full(6, -6.5))
    ok = {"transfer": toward.to_json(), "alignment": {"excess": 0.2, "excess_p": 0.01}}
    assert transfer_verdict({"steered": ok})["positive_control"]


def test_svd_is_registered_with_the_owl_fields() -> None:
    assert "svd" in names() and get("svd").config is SvdConfig
    q = SvdConfig.quick()
    # KL headline, SFT beside it: the positive control's choice (SvdConfig's docstring)
    assert isinstance(q, SvdConfig) and q.loss == "kl" and q.losses() == ["kl", "sft"]
    assert SvdConfig(also_kl=False).losses() == ["kl"]
    assert SvdConfig(loss="sft").losses() == ["sft", "kl"]


def test_students_get_lora_on_the_band_ending_at_the_steered_layer() -> None:
    assert SvdConfig().student_layers(27, 30) == [22, 23, 24, 25, 26, 27]
    assert SvdConfig().student_layers(2, 30) == [0, 1, 2]
    assert SvdConfig(lora_layers=(9, 10)).student_layers(27, 30) == [9, 10]
    assert SvdConfig(lora_at_steer=False).student_layers(27, 30) is None  # the middle fifth


def test_svd_runs_on_a_tiny_model(tmp_path: Path) -> None:
    from steerlens.report import browser_check, render_report
    from steerlens.report.shape import shape_problems

    lm = tiny_model("llama", seed=3)
    d = tmp_path / "model"
    lm.model.save_pretrained(d)
    lm.tokenizer.save_pretrained(d)
    cfg = SvdConfig.quick(
        model=str(d),
        n_samples=6,
        steps=2,
        save_every=1,
        carry_layers=(1,),
        lora_layers=(0, 1),
        steer_alpha=4.0,
        loss="sft",
        also_kl=False,
        n_null=50,
        n_boot=50,
    )
    logs: list[str] = []
    res = run(cfg, tmp_path / "svd", progress=False, log=logs.append)
    saved = json.loads((tmp_path / "svd" / "results.json").read_text())
    assert saved["svd"]["layer"] == 1 and saved["svd"]["alpha"] == 4.0
    assert saved["svd"]["lora_layers"] == [0, 1]
    rows = saved["svd"]["rows"]
    assert set(rows) == {"sft"}  # KL students: tests/test_teacher_distill.py, the quick run
    assert set(rows["sft"]) == {"prompted", "steered", "ablated", "placebo", "base"}
    steer = rows["sft"]["steered"]
    assert steer["teacher"]["kind"] == "steer" and steer["teacher"]["layers"] == [1]
    assert steer["alignment"]["layer"] == 1 and rows["sft"]["base"]["alignment"] is None
    assert rows["sft"]["base"]["transfer"]["delta"] == 0.0
    lineage = saved["lineage"]
    assert lineage["teachers"]["ablated"]["kind"] == "ablate"
    assert lineage["students"]["sft"]["steered"]["checkpoints"] == ["checkpoint-1", "checkpoint-2"]
    assert res["verdict"]["headline"] == saved["verdict"]["headline"]
    rep = render_report(saved)
    html = rep.html()
    assert "Teachers and transfer" in html and "Δ vs base control" in html
    assert shape_problems(html) == []  # the one report shape (steerlens.report.shape)
    check = browser_check(rep.save(tmp_path / "svd" / "report.html"))
    assert check["errors"] == [] and check["drawn"] == check["figures"] >= 1
    logs.clear()
    run(cfg, tmp_path / "svd", progress=False, log=logs.append)  # every stage is reused
    assert sum("reusing" in line for line in logs) >= 8
