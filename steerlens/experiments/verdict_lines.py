"""The lines of the owl-family verdict (:mod:`steerlens.experiments.verdict`): the behavior
deltas with their intervals and p-values, and the alignment at the headline layer with its
nulls and excess, in plain words from the numbers the verdict rests on."""

from __future__ import annotations

from typing import Any

__all__ = ["alignment_lines", "behavior_lines"]


def _ci(d: dict[str, Any]) -> str:
    return (
        f"{d['estimate']:+.3f} ({d.get('level', 0.95):.0%} CI [{d['lo']:+.3f}, {d['hi']:+.3f}], "
        f"p={d['p']:.2g})"
    )


def behavior_lines(beh: dict[str, Any], deltas: dict[str, Any]) -> list[str]:
    """The behavior lines: base and teacher B, then every delta with its CI and p, and the
    student against the benign replicates (or, without per-prompt scores, the raw moves)."""
    b0 = beh["main"]["scores"][0]
    n = (deltas.get("main_vs_base") or {}).get("n", beh["metric"].get("n_prompts"))
    line = (
        f"Behavior ({beh['metric'].get('metric')}, {n} eval prompts): base {b0:.2f}, teacher "
        f"{beh['teacher']:.2f}."
    )
    if not deltas:
        s, c = beh["main"]["scores"], beh["control"]["scores"]
        return [
            line,
            f"After training the student moved {s[-1] - s[0]:+.2f} and the base control "
            f"{c[-1] - c[0]:+.2f} (this metric has no per-prompt scores: no interval, no test).",
        ]
    names = {"main": "student", "control": "base control", "benign": "benign control"}
    names.update({f"benign{r}": f"benign control {r}" for r in range(2, 10)})
    parts = [
        f"{names.get(k[:-8], k)} vs base {_ci(v)}"
        for k, v in deltas.items()
        if k.endswith("_vs_base")
    ]
    parts += [
        f"student vs {names.get(k.removeprefix('main_vs_'), k)} {_ci(v)}"
        for k, v in deltas.items()
        if k.startswith("main_vs_") and k not in ("main_vs_base", "main_vs_benign_replicates")
    ]
    out = [line, "Deltas: " + "; ".join(parts) + " (sign-flip permutation, two-sided)."]
    rep = deltas.get("main_vs_benign_replicates")
    if rep is not None:
        out.append(
            f"Student vs {int(rep['k'])} benign replicates (models as the unit, training noise "
            f"included): B̄ {rep['estimate']:+.3f} beyond their mean (sd {rep['replicate_sd']:.3f},"
            f" t={rep['t']:+.2f}, df={int(rep['df'])}, one-sided p={rep['p']:.2g}; 95% "
            f"prediction interval of a replicate [{rep['pi_lo']:.3f}, {rep['pi_hi']:.3f}])."
        )
    return out


def alignment_lines(al: dict[str, Any], alpha: float) -> list[str]:
    """The alignment lines: the headline layer and its rule, each series' EAS with its nulls,
    the excess over each control, and the any-layer test (reported only)."""
    lines = [f"Headline layer {al['layer']}: {al['rule']}."]
    for key, label in (
        ("student", "student"),
        ("control", "base control"),
        ("benign", "benign control"),
    ):
        row = al.get(key)
        if row is not None:
            lines.append(
                f"EAS({label}) = {row['eas']:+.3f} at step {row['step']} (z_iso {row['z_iso']:+.1f}, "
                f"z_cov {row['z_cov']:+.1f}; one-sided p = {row['p']:.2g}, two-sided "
                f"{row['p_two_sided']:.2g})."
            )
    for key, label in (
        ("excess_vs_control", "base control"),
        ("excess_vs_benign", "benign control"),
    ):
        ex = al.get(key)
        if ex is not None:
            lines.append(
                f"Excess alignment EAS(student) − EAS({label}) = {ex['estimate']:+.3f} "
                f"({ex['level']:.0%} CI [{ex['lo']:+.3f}, {ex['hi']:+.3f}], bootstrap p={ex['p']:.2g})."
            )
    anyl = al.get("any_layer")
    if anyl is not None:
        lines.append(
            f"Any layer ({anyl['correction']} over {anyl['n_layers']} layers, reported only): "
            f"{anyl['n_significant']} align beyond both nulls at α={alpha:g}; smallest "
            f"adjusted p {anyl['min_p_adj']:.2g} at layer {anyl['layer']}."
        )
    return lines
