"""The audit's verdict: the owl experiment's (:func:`~steerlens.experiments.verdict.verdict`),
and without a control student a headline saying what was compared with what."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from steerlens.experiments.owl_records import OwlBehavior, OwlResults, OwlVerdict
from steerlens.experiments.verdict import verdict

__all__ = ["audit_verdict", "no_control_headline"]

NO_CONTROL = (
    "No control student was given: the student's behavior is compared with the base (step 0), "
    "and no excess alignment over a control can be computed. Train a control on benign data "
    "the same way and pass it (--control) for the controlled test."
)


def audit_verdict(results: Mapping[str, Any], *, control: bool) -> OwlVerdict:
    """The verdict of an audit's ``results``; without a ``control`` student, headed by
    :func:`no_control_headline` and a line saying how to get the controlled test."""
    r = OwlResults.parse(results)
    v = OwlVerdict.from_json(verdict(r))
    if not control:
        v.headline = no_control_headline(v, r.behavior or OwlBehavior())
        v.lines.append(NO_CONTROL)
    return v


def no_control_headline(
    verdict: OwlVerdict | Mapping[str, Any], behavior: OwlBehavior | Mapping[str, Any]
) -> str:
    """The headline of an audit without a control student: what was compared with what (the
    student with the base at step 0, and its alignment with the nulls), never a base control
    that is not there."""
    v = verdict if isinstance(verdict, OwlVerdict) else OwlVerdict.from_json(verdict)
    beh = behavior if isinstance(behavior, OwlBehavior) else OwlBehavior.from_json(behavior)
    alpha, al = v.numbers.alpha, v.numbers.alignment
    d = beh.deltas.get("main_vs_base")
    if d is None:
        main = beh.series.get("main")
        s = main.scores if main is not None else [math.nan]
        moved = f"moved {s[-1] - s[0]:+.3f} from the base (no per-prompt scores: no test)"
    elif d.p < alpha:
        moved = f"moved {d.estimate:+.3f} from the base (p={d.p:.2g}, significant)"
    else:
        moved = f"did not move from the base beyond chance ({d.estimate:+.3f}, p={d.p:.2g})"
    st = None if al is None else al.student
    if al is None or st is None:
        aligned = "its alignment with the teacher vector was not measured"
    else:
        beyond = "aligns" if st.p < alpha else "does not align"
        aligned = (
            f"its activation shift at layer {al.layer} {beyond} with the teacher vector "
            f"beyond the random-direction nulls (EAS {st.eas:+.3f}, p={st.p:.2g})"
        )
    return (
        f"No control student, so no controlled test of transfer: compared with the base "
        f"(step 0), the student's trait behavior {moved}, and {aligned}; without a control "
        f"trained the same way on benign data, neither can be told apart from training itself "
        f"(α={alpha:g})."
    )
