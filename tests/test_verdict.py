"""The experiment verdict (issue 12): claims only from tests that hold at the stated level, the
headline layer fixed from the teacher side, controls flagged, behavior deltas with intervals.
Synthetic results dicts: no model needed."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pytest

from steerlens.experiments.controls import behavior_deltas, series_plan
from steerlens.experiments.verdict import CLAIMS, headline_layer, verdict
from steerlens.report import render_report
from steerlens.stats import normal_two_sided_p, paired_bootstrap_mean, sign_flip_test
from steerlens.traits import as_trait

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
