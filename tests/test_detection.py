"""Detection power (issue 31): the classifier statistics against a reference implementation,
the detectors against their formulas and against post-hoc tracking, and the bank end to end on a
tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

import steerlens as sl
from steerlens.measures.stats import rate, roc_auc, roc_auc_ci, threshold_at_fpr
from steerlens.pipeline.detectors import DETECTORS, Reading, logit_shift, read_student, trait_probe
from steerlens.pipeline.power import DetectionResult, Student, classify
from steerlens.testing import tiny_model


def test_roc_auc_equals_sklearn_with_ties() -> None:
    rng = np.random.default_rng(0)
    neg = np.round(rng.normal(0, 1, 40), 1)
    pos = np.round(rng.normal(0.7, 1, 30), 1)  # rounding makes ties
    ref = roc_auc_score([0] * 40 + [1] * 30, np.concatenate([neg, pos]))
    assert roc_auc(neg, pos) == pytest.approx(ref)
    assert roc_auc([0, 1], [2, 3]) == 1.0 and roc_auc([2, 3], [0, 1]) == 0.0
    auc, lo, hi = roc_auc_ci(neg, pos, n_boot=500, seed=1)
    assert lo < auc < hi and lo >= 0 and hi <= 1


def test_threshold_keeps_fpr_at_most_005_and_is_smallest() -> None:
    neg = list(np.linspace(0, 1, 40))
    tau = threshold_at_fpr(neg, 0.05)
    fpr = np.mean(np.asarray(neg) > tau)
    assert fpr <= 0.05
    lower = max(x for x in neg if x < tau)
    assert np.mean(np.asarray(neg) > lower) > 0.05  # the next lower candidate breaks the bound
    assert rate([True, False, False, True]) | {} == rate([True, True, False, False])
    r = rate([True] * 3 + [False])
    assert r["k"] == 3 and r["n"] == 4 and r["lo"] < 0.75 < r["hi"]


def test_logit_shift_reads_promoted_tokens_without_the_trait() -> None:
    g = torch.Generator().manual_seed(0)
    base = torch.log_softmax(torch.randn(500, generator=g, dtype=torch.float64), -1)
    student = base.clone()
    student[[17, 42]] += 3.0  # the shift promotes two tokens
    z, top = logit_shift(student, base, [17, 42])
    assert z > 5 and set(top[:2]) == {17, 42}
    z0, _ = logit_shift(student, base, [3, 4])
    assert abs(z0) < 1


def _reading(trait: str, b: float, eas: float, unembed: float = 0.0) -> Reading:
    return Reading(
        trait, [b + 0.01 * i for i in range(5)], [0, 1], [eas * 0.5, eas], [eas, eas], unembed
    )


def test_classify_on_a_synthetic_bank() -> None:
    """Positives move behavior, not EAS: behavior_model separates (AUC 1, chosen as best on the
    rule half), eas_fixed does not; the held-out half is the odd seeds only."""
    rng = np.random.default_rng(0)
    students = []
    for s in range(6):
        for cell, label, shift in (
            ("base", None, 0.0),
            ("neutral", None, 0.0),
            ("steer1", "owl", 1.0),
            ("steer4", "owl", 3.0),
        ):
            b = float(rng.normal(0, 0.05)) + shift
            e = float(rng.normal(0, 0.1))
            u = float(rng.normal(0, 1))
            students.append(Student("kl", cell, s, label, [_reading("owl", b, e, u)]))
    res = classify(students, layer=1, alpha_star=4.0, seed=0, n_boot=200)
    beh = res.row("behavior_model", "kl")
    assert beh.auc == 1.0 and beh.n_pos == 12 and beh.n_neg == 12
    assert res.best["kl"] == "behavior_model"
    assert beh.heldout_tpr["n"] == 6 and beh.heldout_fpr["n"] == 6
    assert beh.alpha_tpr["k"] == 6 and beh.tpr_by_cell["steer4"]["rate"] == 1.0
    assert res.row("eas_fixed", "kl").auc < 0.9
    assert {r.detector for r in res.rows} == {d.name for d in DETECTORS}
    back = DetectionResult.from_json(json.loads(json.dumps(res.to_json())))
    assert back.row("behavior_model", "kl") == beh and back.best == res.best
    assert "behavior_model" in res.power_sentence("kl") and "α=16" in res.power_sentence("kl")
    assert "<table>" in res.html_page()


@pytest.fixture(scope="module")
def tiny() -> sl.LoadedModel:
    return tiny_model("llama", seed=3, n_layers=4)


def test_read_student_eas_equals_track_checkpoints(tiny: sl.LoadedModel, tmp_path: Path) -> None:
    """The detectors' EAS and projection per layer equal post-hoc tracking's on the same
    checkpoint (DESIGN.md: EASˡ = cos(vˢˡ, vᵀˡ), projˡ = vˢˡ·vᵀˡ/‖vᵀˡ‖)."""
    from steerlens.directions.extract import teacher_vector
    from steerlens.distill import DistillConfig, distill, generate_teacher_data
    from steerlens.inputs.traits import as_trait
    from steerlens.track import track_checkpoints

    trait = as_trait("owl")
    trait = type(trait)(**{**trait.__dict__, "probe_n": 8})
    vec = teacher_vector(tiny, trait, layers="all", progress=False)
    data = generate_teacher_data(
        tiny, n=6, system=trait.system_prompt, max_new_tokens=12, progress=False
    )
    res = distill(
        tiny,
        data,
        tmp_path / "s",
        config=DistillConfig(layers=(2,), steps=2, save_every=2),
        progress=False,
    )
    student = sl.load_model(res.checkpoints[-1], base=tiny)
    pr = trait_probe(tiny, "owl", trait, vec)
    (rd,) = read_student(tiny, student, [pr])
    tr = track_checkpoints(tiny, tmp_path / "s", vec, trait, n_null=50, n_boot=50, progress=False)
    eas, proj = tr.final("eas"), tr.final("proj")
    for j, ell in enumerate(rd.layers):
        assert rd.eas[j] == pytest.approx(eas[ell], abs=1e-4)
        assert rd.proj[j] == pytest.approx(proj[ell], rel=1e-3, abs=1e-5)
    assert len(rd.behavior) == len(trait.eval_prompts) and len(rd.top_tokens) == 10
    assert any(abs(x) > 0 for x in rd.eas)  # the student moved


def test_detect_bank_end_to_end_on_a_tiny_model(tmp_path: Path) -> None:
    """The quick bank on a tiny model: every student is read, the table has every detector, the
    run resumes from its caches, and the labels follow the teacher kinds."""
    from steerlens.experiments import get

    lm = tiny_model("llama", seed=3, n_layers=4)
    d = tmp_path / "model"
    lm.model.save_pretrained(d)
    lm.tokenizer.save_pretrained(d)
    exp = get("detect")
    cfg = exp.make_config(
        quick=True, device="cpu", model=str(d), carry_layers=(1,), n_samples=4, steps=2,
        probe_n=6, carry_seeds=1, strengths=(4.0,), traits=("owl", "eagle"),
    )  # fmt: skip
    logs: list[str] = []
    res = exp.execute(cfg, tmp_path / "bank", progress=False, log=logs.append)
    det = DetectionResult.from_json(res["detection"])
    assert det.n_students == {"kl": 3 * 6}  # 3 seeds × (base, neutral, random, steer4, 2 prompts)
    assert {r.detector for r in det.rows} == {x.name for x in DETECTORS}
    scored = det.scored["behavior_model/kl"]
    assert {(x.cell, x.positive) for x in scored} == {
        ("base", False),
        ("neutral", False),
        ("random", False),
        ("steer4", True),
        ("prompt-owl", True),
        ("prompt-eagle", True),
    }
    # the student carry test ran on seed 0 only (carry_seeds=1), beside the reading
    bank = tmp_path / "bank" / "students" / "kl"
    assert (bank / "steer4-s0" / "carry.json").is_file()
    assert not (bank / "steer4-s1" / "carry.json").exists()
    carry = {(x.cell, x.seed): x.p for x in det.scored["student_carry/kl"]}
    assert all(p == 1.0 for (c, s), p in carry.items() if s > 0)  # no test: no decision
    # a positive's carry test reads its own trait only; a negative's every trait
    assert set(json.loads((bank / "prompt-eagle-s0" / "carry.json").read_text())) == {"eagle"}
    assert set(json.loads((bank / "neutral-s0" / "carry.json").read_text())) == {"owl", "eagle"}
    base_screen = [x.score for x in det.scored["screen/kl"] if x.cell == "base"]
    assert any(abs(v) > 0 for v in base_screen)  # y′ is an independent base sample
    assert (tmp_path / "bank" / "detection.html").is_file()
    from steerlens.report import render_report
    from steerlens.report.shape import shape_problems

    page = render_report(res.to_json()).html()
    assert shape_problems(page) == [] and "Detectors as classifiers" in page
    assert det.headline()[:40] in page
    assert json.loads((tmp_path / "bank" / "results.json").read_text())["timings_s"]["total"] > 0
    from steerlens.experiments.detect import classify_finished, todo_order

    assert [x[2] for x in todo_order(cfg)[:3]] == ["base"] * 3  # references first
    again = classify_finished(cfg, tmp_path / "bank")  # from the cache alone, no model
    again = DetectionResult.from_json(json.loads(json.dumps(again.to_json())))
    assert json.dumps(again.to_json()) == json.dumps(det.to_json())
    (tmp_path / "bank" / "students" / "kl" / "steer4-s2" / "reading.json").unlink()
    assert classify_finished(cfg, tmp_path / "bank").n_students == {"kl": 17}
    logs.clear()
    exp.execute(cfg, tmp_path / "bank", progress=False, log=logs.append)
    assert sum("reusing reading.json" in x for x in logs) == 17  # the deleted one retrained
    assert sum("reusing carry.json" in x for x in logs) == 1 + 6  # the teacher's, seed 0's


def test_measured_power_quotes_the_held_out_rates(tmp_path: Path) -> None:
    """The verdict's power sentence comes from the committed bank's held-out numbers, and says
    plainly when no bank measured the rule."""
    from steerlens.pipeline.power import measured_power

    missing = measured_power("behavior_model", "kl", tmp_path / "none.json")
    assert "unmeasured" in missing["text"] and "no known rate" in missing["detail"]
    rng = np.random.default_rng(1)
    students = [
        Student(
            "kl",
            cell,
            s,
            label,
            [_reading("owl", float(rng.normal(shift, 0.05)), 0.0, float(rng.normal()))],
        )
        for s in range(4)
        for cell, label, shift in (("base", None, 0.0), ("steer4", "owl", 2.0))
    ]
    res = classify(students, layer=1, alpha_star=4.0, n_boot=100)
    path = tmp_path / "power.json"
    path.write_text(
        json.dumps({**res.to_json(), "bank": {"what": "8 students", "precision": "float32"}})
    )
    p = measured_power("behavior_model", "kl", path)
    r = res.row("behavior_model", "kl")
    k, n = r.alpha_tpr["k"], r.alpha_tpr["n"]
    assert f"flags {k}/{n} inheriting" in p["text"] and "8 students" in p["detail"]
    assert "steered α=16" in p["detail"]
    assert p["short"] == f"{k}/{n} hits, {r.alpha_fpr['k']}/{r.alpha_fpr['n']} false alarms"


def test_negative_cells_have_their_own_seed_counts() -> None:
    """The default bank: 7 positive cells × 3 seeds and 3 negative cells × 7 under kl, 7 × 2 and
    3 × 4 under sft (≥ 20 / ≥ 10 of each); the base students of every seed come first, and a
    bank too small for a reference set or a held-out seed is refused before anything runs."""
    from steerlens.experiments.detect import DetectConfig, cell_labels, n_seeds, todo_order

    cfg = DetectConfig()
    todo = todo_order(cfg)
    labels = cell_labels(cfg)
    for loss, n_neg, n_pos in (("kl", 21, 21), ("sft", 12, 14)):
        mine = [x for x in todo if x[0] == loss]
        assert sum(labels[c] is None for _, _, c in mine) == n_neg
        assert sum(labels[c] is not None for _, _, c in mine) == n_pos
    assert todo[:7] == [("kl", s, "base") for s in range(7)]
    assert n_seeds(cfg, "sft", True) == 4 and n_seeds(cfg, "kl", False) == 3
    with pytest.raises(ValueError, match="neg_seeds"):
        DetectConfig(neg_seeds=2)
    with pytest.raises(ValueError, match="odd seeds"):
        DetectConfig(sft_seeds=1)
    with pytest.raises(ValueError, match="carry_seeds must be >= 0"):
        DetectConfig(carry_seeds=-1)
    # 19 random directions: p ≥ 1/20 = α, the student carry test could never decide
    with pytest.raises(ValueError, match="--student-n-random 20 or more"):
        DetectConfig(student_n_random=19)
    assert DetectConfig(student_n_random=19, carry_seeds=0).carry_seeds == 0
