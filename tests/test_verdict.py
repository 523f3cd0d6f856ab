"""The experiment verdict (issue 12): claims only from tests that hold at the stated level, the
headline layer fixed from the teacher side, controls flagged, behavior deltas with intervals.
Synthetic results dicts: no model needed."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from steerlens.experiments.verdict import CLAIMS, headline_layer, verdict
from steerlens.inputs.traits import as_trait
from steerlens.measures.stats import (
    normal_two_sided_p,
    paired_bootstrap_mean,
    prediction_t_test,
    sign_flip_test,
)
from steerlens.pipeline.controls import behavior_deltas, series_plan
from steerlens.pipeline.detectors import Reading
from steerlens.pipeline.signature import (
    ACTIVATION_DETECTORS,
    SignatureTest,
    activation_rule,
    signature_test,
)
from steerlens.report import render_report

LAYERS = [3, 15, 27]


def _series(eas: list[float], z: list[float], p: list[float]) -> dict[str, Any]:
    """A two-row track series (base, last checkpoint) over LAYERS."""
    zero = [0.0] * len(LAYERS)
    return {
        "steps": [0, 4],
        "eas": [zero, eas],
        "z_iso": [zero, z],
        "z_cov": [zero, z],
        "p_iso": [[1.0] * 3, p],
        "p_cov": [[1.0] * 3, p],
        "p_adj": [[1.0] * 3, [min(1.0, 3 * x) for x in p]],
    }


def _results(
    *,
    student_p: float,
    excess_p: float,
    behavior_shift: float,
    control_eas: float = 0.0,
    control_z: float = 0.0,
    clean_layer: int | None = 15,
) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    base = rng.normal(-6.0, 0.5, size=50).tolist()
    control = [b + rng.normal(0, 0.05) for b in base]
    main = [c + behavior_shift + rng.normal(0, 0.05) for c in control]
    series = {
        "main": {
            "steps": [0, 4],
            "scores": [np.mean(base), np.mean(main)],
            "last_per_prompt": main,
        },
        "control": {
            "steps": [0, 4],
            "scores": [np.mean(base), np.mean(control)],
            "last_per_prompt": control,
        },
    }
    beh = {
        **series,
        "teacher": -2.0,
        "benign_teacher": -5.5,
        "metric": {"metric": "logprob", "n_prompts": 50},
        "base_per_prompt": base,
        "deltas": behavior_deltas(base, series, n_boot=500),
    }
    track = {
        "layers": LAYERS,
        "series": {
            "main": _series([0.1, 0.3, 0.1], [1.0, 5.0, 1.0], [0.3, student_p, 0.3]),
            "control": _series([0.0, control_eas, 0.0], [0.0, control_z, 0.0], [0.5] * 3),
        },
        "excess": {
            "steps": [4],
            "estimate": [[0.1, 0.3, 0.1]],
            "lo": [[-0.1, 0.1, -0.1]],
            "hi": [[0.3, 0.5, 0.3]],
            "p": [[0.2, excess_p, 0.2]],
            "level": 0.95,
        },
        "settings": {"correction": "holm"},
    }
    carry = {
        "clean_peak": {"layer": clean_layer, "S": 0.4},
        "raw_peak": {"layer": 27, "S": 0.6},
        "verdict": "weakly carried: …",
        "level": "weakly carried",
    }
    return {"config": {"alpha": 0.05}, "behavior": beh, "track": track, "carry": carry}


def test_paired_bootstrap_and_sign_flip_are_right_on_known_cases() -> None:
    const = paired_bootstrap_mean([0.5] * 20, n_boot=200)
    assert const["estimate"] == const["lo"] == const["hi"] == pytest.approx(0.5)
    # all 20 positive: only the all-plus sign pattern reaches the observed mean
    sf = sign_flip_test([0.5] * 20, n_perm=2000, seed=1)
    assert sf["p"] == pytest.approx(1 / 2001, abs=2 / 2001)
    sym = sign_flip_test([1.0, -1.0] * 10, n_perm=2000)
    assert sym["statistic"] == 0.0 and sym["p"] == 1.0
    noisy = np.random.default_rng(0).normal(0.0, 1.0, 40)
    b = paired_bootstrap_mean(noisy, n_boot=2000, seed=0)
    assert b["lo"] < b["estimate"] < b["hi"] and b["n"] == 40
    assert abs(b["se"] - noisy.std(ddof=1) / np.sqrt(40)) < 0.05
    assert normal_two_sided_p(1.959964) == pytest.approx(0.05, abs=1e-4)
    with pytest.raises(ValueError, match="alternative"):
        sign_flip_test([1.0], alternative="sideways")


def test_series_plan_default_control_is_the_base_and_placebo_uses_the_neutral_teacher() -> None:
    owl = as_trait("owl")
    assert [(s.name, s.system) for s in series_plan(owl, benign=False)] == [
        ("main", owl.system_prompt),
        ("control", None),
    ]
    plan = series_plan(owl, benign=True, placebo=True)
    assert [s.name for s in plan] == ["main", "control", "benign"]
    assert plan[0].system == owl.neutral_system_prompt and "placebo" in plan[0].role


def test_headline_layer_is_fixed_from_the_teacher_side_with_its_rule() -> None:
    assert headline_layer({"clean_peak": {"layer": 15}}, LAYERS)[0] == 15
    layer, rule = headline_layer({"clean_peak": {"layer": None}, "raw_peak": {"layer": 27}}, LAYERS)
    assert layer == 27 and "raw-peak" in rule
    layer, rule = headline_layer({}, LAYERS)
    assert layer == 15 and "middle" in rule


def test_claims_follow_the_tests() -> None:
    inh = verdict(_results(student_p=0.3, excess_p=0.3, behavior_shift=0.2))
    assert inh["claim"] == "inherited" and inh["strength"] == "strong"
    mc = inh["numbers"]["behavior"]["main_vs_control"]
    assert mc["lo"] > 0 and mc["p"] < 0.05 and mc["n"] == 50
    sig = verdict(_results(student_p=0.01, excess_p=0.01, behavior_shift=0.0))
    assert sig["claim"] == "activation signature without behavior change"
    assert sig["numbers"]["alignment"]["layer"] == 15
    # a signature needs both the student's own null and the excess over the base control
    for sp, ep in ((0.01, 0.2), (0.2, 0.01)):
        assert verdict(_results(student_p=sp, excess_p=ep, behavior_shift=0.0))["claim"] == (
            "no evidence"
        )
    # the layer is the teacher-side one: a significant layer elsewhere does not count
    r = _results(student_p=0.01, excess_p=0.01, behavior_shift=0.0, clean_layer=27)
    assert verdict(r)["claim"] == "no evidence"
    assert set(CLAIMS) >= {inh["claim"], sig["claim"]}
    text = " ".join(sig["lines"])
    assert "CI [" in text and "p=" in text and "Headline layer 15" in text
    # each delta is named once, by its series: no raw key such as "main_vs_base" in the text
    (deltas,) = [x for x in inh["lines"] if x.startswith("Deltas: ")]
    assert len(re.findall(r"student vs base [+-]", deltas)) == 1
    assert deltas.count("student vs base control") == 1
    assert "_vs_" not in deltas


def test_a_control_that_aligns_on_its_own_is_flagged_in_either_direction() -> None:
    for eas, z in ((-0.2, -4.0), (0.2, 4.0)):
        v = verdict(
            _results(student_p=0.3, excess_p=0.3, behavior_shift=0.0, control_eas=eas, control_z=z)
        )
        assert len(v["flags"]) == 1 and "base control" in v["flags"][0]
        assert ("against" if eas < 0 else "along") in v["flags"][0]
    quiet = verdict(_results(student_p=0.3, excess_p=0.3, behavior_shift=0.0, control_z=1.0))
    assert quiet["flags"] == []


def test_report_shows_the_series_side_by_side() -> None:
    res = _results(student_p=0.01, excess_p=0.01, behavior_shift=0.0)
    res["verdict"] = verdict(res)
    html = render_report({"verdict": res["verdict"]}).html()
    assert "Evidence: student and controls side by side" in html
    assert "base control" in html and "EAS at layer 15" in html


def _with_benign(res: dict[str, Any], offsets: list[float], seed: int = 1) -> dict[str, Any]:
    """``res`` plus benign replicates whose per-prompt scores are the control's shifted by each
    offset (model-level training noise) plus prompt noise; deltas recomputed."""
    rng = np.random.default_rng(seed)
    beh = res["behavior"]
    control = beh["control"]["last_per_prompt"]
    base = beh["base_per_prompt"]
    series = {k: beh[k] for k in ("main", "control")}
    for r, off in enumerate(offsets, start=1):
        rows = [c + off + rng.normal(0, 0.05) for c in control]
        series["benign" if r == 1 else f"benign{r}"] = {
            "steps": [0, 4],
            "scores": [float(np.mean(base)), float(np.mean(rows))],
            "last_per_prompt": rows,
        }
    beh.update(series)
    beh["deltas"] = behavior_deltas(base, series, seed=0, n_boot=500)
    return res


def test_inherited_needs_the_student_beyond_the_benign_replicates() -> None:
    """A student that beats the base control per prompt but sits inside the benign replicates'
    spread (the placebo case: a neutral-prompt teacher raises the score by itself) is not
    called inherited; one well beyond the replicates is."""
    inside = _with_benign(
        _results(student_p=0.5, excess_p=0.5, behavior_shift=0.10), [0.02, 0.15, 0.09]
    )
    d = inside["behavior"]["deltas"]
    assert d["main_vs_control"]["p"] < 0.05 and d["main_vs_control"]["estimate"] > 0
    rep = d["main_vs_benign_replicates"]
    assert rep["k"] == 3 and rep["series"] == ["benign", "benign2", "benign3"]
    assert rep["p"] > 0.05
    v = verdict(inside)
    assert v["claim"] != "inherited"
    assert any("benign replicates" in line for line in v["lines"])
    beyond = _with_benign(
        _results(student_p=0.5, excess_p=0.5, behavior_shift=0.60), [0.02, 0.05, 0.03]
    )
    rep = beyond["behavior"]["deltas"]["main_vs_benign_replicates"]
    assert rep["p"] < 0.05 and rep["estimate"] > 0.5
    v = verdict(beyond)
    assert v["claim"] == "inherited" and "benign" in v["headline"]
    assert not any("no benign replicates" in f for f in v["flags"])


def test_inherited_without_replicates_is_flagged() -> None:
    v = verdict(_results(student_p=0.5, excess_p=0.5, behavior_shift=0.30))
    assert v["claim"] == "inherited"
    assert "base control only" in v["headline"]
    assert any("no benign replicates" in f for f in v["flags"])


def test_prediction_t_test_formula_and_calibration() -> None:
    from scipy import stats as st

    from steerlens.measures.stats import prediction_t_test

    r = prediction_t_test(1.0, [0.0, 0.2, 0.4])
    s = float(np.std([0.0, 0.2, 0.4], ddof=1))
    t = (1.0 - 0.2) / (s * np.sqrt(1 + 1 / 3))
    assert r["t"] == pytest.approx(t) and r["df"] == 2
    assert r["p"] == pytest.approx(float(st.t.sf(t, 2)))
    assert r["pi_lo"] < 0.2 < r["pi_hi"]
    # exchangeable normal draws: the false-positive rate is the nominal level
    rng = np.random.default_rng(0)
    hits = [prediction_t_test(x[0], x[1:])["p"] < 0.05 for x in rng.normal(size=(4000, 4))]
    assert abs(float(np.mean(hits)) - 0.05) < 0.012
    with pytest.raises(ValueError, match="at least 2 replicates"):
        prediction_t_test(0.0, [1.0])
    with pytest.raises(ValueError, match="identical"):
        prediction_t_test(0.0, [1.0, 1.0])


def test_series_plan_replicates_have_their_own_seeds() -> None:
    plan = series_plan(as_trait("owl"), benign=True, replicates=3)
    assert [p.name for p in plan] == ["main", "control", "benign", "benign2", "benign3"]
    offsets = [p.seed_offset for p in plan]
    assert offsets[:2] == [0, 0] and len(set(offsets[2:])) == 3 and 0 not in offsets[2:]
    assert {p.file for p in plan} == {"teacher", "base", "benign", "benign2", "benign3"}
    placebo = series_plan(as_trait("owl"), benign=True, placebo=True, replicates=2)
    assert placebo[0].system == placebo[2].system and placebo[0].file == "placebo"
    assert placebo[0].seed_offset != placebo[2].seed_offset  # independent draws


def test_the_verdict_quotes_the_power_of_its_rule() -> None:
    """Issue 31: the verdict states how often its behavior rule misses, from the committed
    detection bank (pipeline/detection_power.json), or says plainly that no bank measured it."""
    from steerlens.pipeline.power import POWER_FILE, measured_power

    v = verdict(_results(student_p=0.3, excess_p=0.3, behavior_shift=0.2))
    # no benign replicates: the per-prompt test against the base control decided
    expected = measured_power("behavior_vs_control", "kl")
    assert f"behavior rule {expected['short']};" in v["power"]["text"]
    assert v["power"]["detail"].startswith(f"Behavior rule: {expected['detail']}")
    with_reps = verdict(
        _with_benign(_results(student_p=0.3, excess_p=0.3, behavior_shift=0.2), [0.0, 0.1, 0.05])
    )
    model = measured_power("behavior_model", "kl")
    assert f"behavior rule {model['short']};" in with_reps["power"]["text"]
    assert expected["detail"] in v["lines"][-2]
    # without a model-level activation test the activation rule is the unmeasured EAS one
    assert v["power"]["text"].endswith("activation rule unmeasured.")
    if POWER_FILE.is_file():
        assert "false alarms" in v["power"]["text"] and "Measured power" in v["lines"][-2]
    else:
        assert "behavior rule unmeasured" in v["power"]["text"]
    # with it, the verdict quotes proj_fixed's measured power
    r = _results(student_p=0.3, excess_p=0.3, behavior_shift=0.0)
    r["signature"] = signature_test(
        _readings({"main": 9.0, "control": 1.0, "benign": 2.0}), 15
    ).to_json()
    act = measured_power("proj_fixed", "kl")  # the detector the signature ran
    assert verdict(r)["power"]["text"].endswith(f"activation rule {act['short']}.")
    assert verdict(r)["power"]["detail"].endswith(f"Activation rule: {act['detail']}")
    assert len(verdict(r)["power"]["text"]) < 110  # it stands on the report's first screen


def _readings(proj: dict[str, float]) -> dict[str, Reading]:
    """Readings at layers [3, 15] whose proj at 15 is ``proj`` (EAS a fixed fraction of it)."""
    return {
        k: Reading("owl", [0.0], [3, 15], [0.0, v / 100], [0.0, v], 0.0) for k, v in proj.items()
    }


def test_signature_test_is_the_banks_detector_on_the_runs_controls() -> None:
    """The model-level activation test (pipeline/signature.py): proj_fixed is
    stats.prediction_t_test of the student's proj at ℓ* against the controls'; with fewer than
    2 varying controls it does not decide; a behavior detector is refused."""
    rd = _readings({"main": 9.0, "control": 1.0, "benign": 2.0, "benign2": 1.5})
    t = signature_test(rd, 15, "proj_fixed")
    ref = prediction_t_test(9.0, [1.0, 2.0, 1.5])
    assert t.tested and t.score == 9.0 and t.p == pytest.approx(ref["p"])
    assert t.controls == ["control", "benign", "benign2"] and t.eas["main"] == 0.09
    assert SignatureTest.from_json(t.to_json()) == t
    assert not signature_test(_readings({"main": 9.0, "control": 1.0}), 15).tested
    flat = signature_test(_readings({"main": 9.0, "control": 1.0, "benign": 1.0}), 15)
    assert flat.p == 1.0 and not flat.significant(0.05)
    eas = signature_test(rd, 15, "eas_fixed")
    assert eas.score == pytest.approx(0.09) and eas.p == pytest.approx(
        prediction_t_test(0.09, [0.01, 0.02, 0.015])["p"]
    )
    with pytest.raises(ValueError, match="activation detector"):
        signature_test(rd, 15, "behavior_model")


def test_activation_rule_is_the_banks_choice_among_activation_detectors(tmp_path: Path) -> None:
    """The verdict's activation detector is the committed bank's rule-half choice among the
    activation detectors (calibrated first, then TPR at p<α), proj_fixed without a bank."""
    from steerlens.pipeline.power import POWER_FILE, DetectionResult, DetectorRow

    assert activation_rule("kl", tmp_path / "none.json") == "proj_fixed"
    if POWER_FILE.is_file():
        assert activation_rule("kl") in ACTIVATION_DETECTORS

    def row(name: str, fpr: float, tpr: float, auc: float) -> DetectorRow:
        return DetectorRow(name, "", "kl", 4, 4, 0.5, 0.0, 1.0, auc, fpr, tpr, 0.0, {}, {}, {}, {})

    rows = [
        row("behavior_model", 0.0, 1.0, 0.9),  # not an activation detector
        row("eas_fixed", 0.2, 0.9, 0.9),  # not calibrated on the rule half
        row("eas_max", 0.0, 0.5, 0.7),
        row("proj_fixed", 0.0, 0.4, 0.95),
    ]
    f = tmp_path / "power.json"
    DetectionResult(15, 2.0, 0.05, rows, {}, {}, {}).save(f)
    assert activation_rule("kl", f) == "eas_max"
    assert activation_rule("sft", f) == "proj_fixed"  # the bank did not run sft


def test_the_signature_claim_follows_the_model_level_test_when_there_is_one() -> None:
    """Issue 31: with a model-level activation test in the results, the signature claim is
    that test (the bank's detector), whatever the probe-prompt EAS tests say."""
    r = _results(student_p=0.01, excess_p=0.01, behavior_shift=0.0)
    r["signature"] = signature_test(
        _readings({"main": 1.2, "control": 1.0, "benign": 2.0}), 15
    ).to_json()
    v = verdict(r)
    assert v["claim"] == "no evidence"  # EAS alone would have said "signature"
    assert v["numbers"]["alignment"]["signature_rule"] == "proj_fixed"
    assert any(x.startswith("Model-level activation test") for x in v["lines"])
    r = _results(student_p=0.3, excess_p=0.3, behavior_shift=0.0)
    r["signature"] = signature_test(
        _readings({"main": 9.0, "control": 1.0, "benign": 2.0, "benign2": 1.4}), 15
    ).to_json()
    assert verdict(r)["claim"] == "activation signature without behavior change"
