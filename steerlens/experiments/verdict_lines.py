"""The lines of the owl-family verdict (:mod:`steerlens.experiments.verdict`): the behavior
deltas with their intervals and p-values, and the alignment at the headline layer with its
nulls and excess, in plain words from the numbers the verdict rests on."""

from __future__ import annotations

from steerlens.experiments.owl_records import OwlAlignment, OwlBehavior, OwlDelta, OwlNamedDeltas

__all__ = ["alignment_lines", "behavior_lines"]


def _ci(d: OwlDelta) -> str:
    return f"{d.estimate:+.3f} ({d.level or 0.95:.0%} CI [{d.lo:+.3f}, {d.hi:+.3f}], p={d.p:.2g})"


def _name(series: str) -> str:
    names = {"main": "student", "control": "base control", "benign": "benign control"}
    names.update({f"benign{r}": f"benign control {r}" for r in range(2, 10)})
    return names.get(series, series)


def behavior_lines(beh: OwlBehavior) -> list[str]:
    """The behavior lines: base and teacher B, then every delta with its CI and p, and the
    student against the benign replicates (or, without per-prompt scores, the raw moves)."""
    main, ctrl, deltas, named = beh.main, beh.control, beh.deltas, OwlNamedDeltas.of(beh.deltas)
    if main is None or ctrl is None:
        raise KeyError("behavior: the verdict needs the student's and the base control's series")
    mb = named.main_vs_base
    n = mb.n if mb is not None and mb.n is not None else beh.n_prompts
    line = (
        f"Behavior ({beh.metric_name}, {n} eval prompts): base {main.scores[0]:.2f}, "
        f"teacher {beh.teacher:.2f}."
    )
    if not deltas:
        s, c = main.scores, ctrl.scores
        return [
            line,
            f"After training the student moved {s[-1] - s[0]:+.2f} and the base control "
            f"{c[-1] - c[0]:+.2f} (this metric has no per-prompt scores: no interval, no test).",
        ]
    parts = [
        f"{_name(k.removesuffix('_vs_base'))} vs base {_ci(v)}"
        for k, v in deltas.items()
        if k.endswith("_vs_base")
    ]
    parts += [
        f"student vs {_name(k.removeprefix('main_vs_'))} {_ci(v)}"
        for k, v in deltas.items()
        if k.startswith("main_vs_") and k not in ("main_vs_base", "main_vs_benign_replicates")
    ]
    out = [line, "Deltas: " + "; ".join(parts) + " (sign-flip permutation, two-sided)."]
    rep = named.main_vs_benign_replicates
    if rep is not None:
        out.append(
            f"Student vs {int(rep.k or 0)} benign replicates (models as the unit, training noise "
            f"included): B̄ {rep.estimate:+.3f} beyond their mean (sd {rep.replicate_sd:.3f},"
            f" t={rep.t:+.2f}, df={int(rep.df or 0)}, one-sided p={rep.p:.2g}; 95% "
            f"prediction interval of a replicate [{rep.pi_lo:.3f}, {rep.pi_hi:.3f}])."
        )
    return out


def alignment_lines(al: OwlAlignment, alpha: float) -> list[str]:
    """The alignment lines: the headline layer and its rule, each series' EAS with its nulls,
    the excess over each control, and the any-layer test (reported only)."""
    lines = [f"Headline layer {al.layer}: {al.rule}."]
    for label, row in (
        ("student", al.student),
        ("base control", al.control),
        ("benign control", al.benign),
    ):
        if row is not None:
            lines.append(
                f"EAS({label}) = {row.eas:+.3f} at step {row.step} (z_iso {row.z_iso:+.1f}, "
                f"z_cov {row.z_cov:+.1f}; one-sided p = {row.p:.2g}, two-sided "
                f"{row.p_two_sided:.2g})."
            )
    for label, ex in (
        ("base control", al.excess_vs_control),
        ("benign control", al.excess_vs_benign),
    ):
        if ex is not None:
            lines.append(
                f"Excess alignment EAS(student) − EAS({label}) = {ex.estimate:+.3f} "
                f"({ex.level:.0%} CI [{ex.lo:+.3f}, {ex.hi:+.3f}], bootstrap p={ex.p:.2g})."
            )
    anyl = al.any_layer
    if anyl is not None:
        lines.append(
            f"Any layer ({anyl.correction} over {anyl.n_layers} layers, reported only): "
            f"{anyl.n_significant} align beyond both nulls at α={alpha:g}; smallest "
            f"adjusted p {anyl.min_p_adj:.2g} at layer {anyl.layer}."
        )
    return lines
