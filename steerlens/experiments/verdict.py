"""The plain-words verdict of a distillation experiment, from its results dict.

It reports what the numbers say (nothing here is tuned to an answer): did the student inherit
the trait, does its activation shift align with the teacher vector beyond the control, and is
the behavior carried by that vector.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["verdict"]


def _last_excess(track: dict[str, Any]) -> tuple[int, float, float, float, float] | None:
    ex = track.get("excess")
    if not ex:
        return None
    est = np.array(ex["estimate"], dtype=float)
    lo, hi, p = (np.array(ex[k], dtype=float) for k in ("lo", "hi", "p"))
    row = est[-1]
    if not np.isfinite(row).any():
        return None
    j = int(np.nanargmax(row))
    return (
        int(track["layers"][j]),
        float(row[j]),
        float(lo[-1, j]),
        float(hi[-1, j]),
        float(p[-1, j]),
    )


def verdict(results: dict[str, Any]) -> dict[str, Any]:
    """Plain-words answer to: did the student inherit the trait, does its shift align with the
    teacher vector beyond the control, and is the behavior carried by that vector?"""
    beh = results["behavior"]
    b_main = beh["main"]["scores"]
    b_ctrl = beh["control"]["scores"]
    d_main, d_ctrl = b_main[-1] - b_main[0], b_ctrl[-1] - b_ctrl[0]
    gap = beh["teacher"] - b_main[0]
    inherit = d_main - d_ctrl
    lines = [
        f"Behavior ({beh['metric'].get('metric')}, nats): base {b_main[0]:.2f}, teacher "
        f"{beh['teacher']:.2f}; after training the student moved {d_main:+.2f} and the control "
        f"{d_ctrl:+.2f} (difference {inherit:+.2f}, "
        f"{(inherit / gap * 100 if gap else float('nan')):.0f}% of the teacher's gap)."
    ]
    ex = _last_excess(results["track"])
    aligned = False
    if ex is not None:
        layer, est, lo, hi, p = ex
        aligned = lo > 0
        lines.append(
            f"Alignment: at the last checkpoint the largest excess alignment EAS(student) − "
            f"EAS(control) is {est:+.3f} at layer {layer} (95% CI [{lo:+.3f}, {hi:+.3f}], "
            f"bootstrap p={p:.3g})."
        )
    main = results["track"]["series"]["main"]
    p_adj = np.array(main["p_adj"], dtype=float)
    n_sig = int(np.nansum(p_adj[-1] < results["track"]["settings"].get("alpha", 0.05)))
    lines.append(
        f"{n_sig} of {p_adj.shape[1]} layers align beyond the random-direction nulls "
        "after correction."
    )
    carry = results["carry"]
    lines.append(f"Carry test of the teacher vector: {carry.get('verdict')}")
    inherited = inherit > 0.1 * abs(gap) if gap else False
    if inherited and aligned:
        head = "The student picked up the trait, and its activation shift aligns with the teacher vector beyond the control."
        strength = "strong"
    elif aligned:
        head = "The student's activation shift aligns with the teacher vector beyond the control; the behavioral change is small."
        strength = "weak"
    elif inherited:
        head = "The student's behavior moved toward the teacher, but its shift does not align with the teacher vector beyond the control."
        strength = "weak"
    else:
        head = "No transfer detected: neither the behavior nor the alignment separates the student from the control."
        strength = "none"
    return {
        "headline": head,
        "lines": lines,
        "strength": strength,
        "numbers": {
            "behavior_student_delta": d_main,
            "behavior_control_delta": d_ctrl,
            "behavior_gap": gap,
            "excess_alignment": None if ex is None else ex[1],
            "excess_ci": None if ex is None else [ex[2], ex[3]],
            "excess_layer": None if ex is None else ex[0],
            "significant_layers": n_sig,
            "carry_level": carry.get("level"),
        },
    }
