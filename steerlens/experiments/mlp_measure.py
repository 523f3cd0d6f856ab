"""What the ``mlp-aux`` experiment (:mod:`steerlens.experiments.mlp_aux`) measures beyond the
tracks: the unit-permutation null of each student's alignment; and over seeds: accuracies of the teacher and both students with
Student-t intervals over seeds, the paired same − different margin, the alignment curves and
the fractions of seeds beating each null; nothing tuned to an answer. Results are the
:mod:`~steerlens.experiments.mlp_records` Records."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np
import torch
from scipy import stats as sps

from steerlens.core.vectors import SteeringVector
from steerlens.experiments.mlp_records import (
    MlpAuxAccuracy,
    MlpAuxBootstrap,
    MlpAuxCurves,
    MlpAuxEpochCurves,
    MlpAuxFractions,
    MlpAuxInterval,
    MlpAuxMargin,
    MlpAuxPermNull,
    MlpAuxSeed,
    MlpAuxStudent,
    MlpAuxSummary,
    MlpAuxVerdict,
)
from steerlens.measures.stats import bootstrap, cosines, z_and_p
from steerlens.track import ModuleTrack

__all__ = ["SITES", "permutation_null", "summarize", "t_interval", "verdict"]

SITES = ("layers.0", "layers.1")
"""The tracked sites of the MLP (both hidden layers)."""

P = TypeVar("P")


def permutation_null(
    track: ModuleTrack, vt: SteeringVector, n_null: int, seed: int
) -> MlpAuxPermNull:
    """The unit-permutation null of each tracked step and site: the observed EAS (the track's)
    against cos(vˢ, π(vᵀ)) for random permutations π of vᵀ's coordinates, z and p
    (``stats.z_and_p``, +1 corrected). It keeps vᵀ's values (a ReLU site's shifts share a sign
    pattern the isotropic and covariance nulls do not have) and destroys only which unit is
    which: exactly what a different initialisation does, so it asks whether a student moved
    *the teacher's units* the teacher's way."""
    ser = track.series
    out = MlpAuxPermNull()
    g = torch.Generator().manual_seed(int(seed))
    for r, step in enumerate(ser.steps[1:], start=1):
        zs, ps = [], []
        for j, k in enumerate(sorted(track.shifts[step])):
            v = track.shifts[step][k].double().mean(0)
            idx = torch.rand(n_null, v.shape[0], generator=g).argsort(dim=1)
            z, p = z_and_p(float(ser.eas[r, j]), cosines(v, vt[k].double()[idx]))
            zs.append(z)
            ps.append(p)
        out.z.append(zs)
        out.p.append(ps)
    return out


def t_interval(values: Sequence[float], level: float = 0.95) -> dict[str, float]:
    """Mean and Student-t interval mean ± t_{(1+level)/2, n−1} · sd/√n (sd with ddof 1); the
    interval is the mean itself for one value."""
    a = np.asarray(values, dtype=float)
    mean = float(a.mean())
    if a.size < 2:
        return {"mean": mean, "lo": mean, "hi": mean, "n": int(a.size)}
    half = float(sps.t.ppf((1 + level) / 2, a.size - 1)) * float(a.std(ddof=1)) / math.sqrt(a.size)
    return {"mean": mean, "lo": mean - half, "hi": mean + half, "n": int(a.size)}


def _ci(values: Sequence[float]) -> MlpAuxInterval:
    return MlpAuxInterval.from_json(t_interval(values))


def _curves(arrays: Sequence[Any]) -> list[list[MlpAuxInterval]]:
    """[site][tracked epoch] t-interval over seeds of per-seed track arrays [step × site]
    (rows after the base row 0)."""
    arrs = np.array([np.asarray(a, dtype=float)[1:] for a in arrays])
    return [
        [_ci(arrs[:, e, j].tolist()) for e in range(arrs.shape[1])] for j in range(arrs.shape[2])
    ]


def _last_frac(rows: Sequence[Any]) -> list[float]:
    """[site] fraction of seeds whose last-epoch p (rows: per seed [epoch][site]) is < 0.05."""
    return [float(np.mean([np.asarray(r)[-1][j] < 0.05 for r in rows])) for j in range(len(SITES))]


def summarize(per_seed: Sequence[MlpAuxSeed]) -> MlpAuxSummary:
    """Accuracies, the paired same − different contrast and the alignment curves over seeds."""

    def both(cls: Callable[[P, P], Any], f: Callable[[list[MlpAuxStudent]], P]) -> Any:
        return cls(f([p.same for p in per_seed]), f([p.diff for p in per_seed]))

    margin = np.array([p.same.acc for p in per_seed]) - np.array([p.diff.acc for p in per_seed])
    boot = bootstrap(lambda i: float(margin[i].mean()), len(margin), n_boot=2000, seed=0)
    perms = [st.perm_null for p in per_seed for st in (p.same, p.diff)]
    excess_last = np.array([np.asarray(p.excess.estimate, dtype=float)[-1] for p in per_seed])
    epochs = per_seed[0].epochs
    return MlpAuxSummary(
        accuracy=MlpAuxAccuracy(
            teacher=_ci([p.teacher_acc for p in per_seed]),
            init=_ci([p.init_acc.A for p in per_seed]),
            same_init=_ci([p.same.acc for p in per_seed]),
            different_init=_ci([p.diff.acc for p in per_seed]),
        ),
        margin=MlpAuxMargin(
            **vars(_ci(margin.tolist())),
            bootstrap_over_seeds=MlpAuxBootstrap.from_json(boot),
            per_seed=margin.tolist(),
        ),
        interval="Student t over seeds (n−1 df), 95%; margin paired by seed",
        epochs=epochs,
        sites=list(SITES),
        eas=both(MlpAuxCurves, lambda sts: _curves([st.track.eas for st in sts])),
        z_cov=both(MlpAuxCurves, lambda sts: _curves([st.track.z_cov for st in sts])),
        acc_by_epoch=both(
            MlpAuxEpochCurves,
            lambda sts: [_ci([st.acc_by_epoch[e] for st in sts]) for e in range(len(epochs))],
        ),
        frac_seeds_beating_nulls_last_epoch=both(
            MlpAuxFractions, lambda sts: _last_frac([st.track.p_adj for st in sts])
        ),
        frac_seeds_beating_permutation_null_last_epoch=(
            both(
                MlpAuxFractions,
                lambda sts: _last_frac([st.perm_null.p for st in sts if st.perm_null]),
            )
            if all(x is not None for x in perms)
            else None
        ),
        excess_last_epoch=[_ci(excess_last[:, j].tolist()) for j in range(len(SITES))],
        iso_null_band=[
            float(np.mean([p.iso_null_band[0] for p in per_seed])),
            float(np.mean([p.iso_null_band[1] for p in per_seed])),
        ],
    )


def verdict(summary: MlpAuxSummary, dataset: str) -> MlpAuxVerdict:
    """Headline and lines from the numbers (nothing tuned to an answer)."""
    acc, m = summary.accuracy, summary.margin
    holds = m.lo > 0
    eas = summary.eas
    head = (
        f"{dataset}: same-init students reach {acc.same_init.mean:.1%} test accuracy vs "
        f"{acc.different_init.mean:.1%} from a different init (teacher "
        f"{acc.teacher.mean:.1%}); margin {m.mean:+.1%} [{m.lo:+.1%}, {m.hi:+.1%}] "
        f"(95% t-interval over {m.n} seeds) — "
        + ("the shared initialisation carries the trait" if holds else "no reliable margin")
    )
    frac = summary.frac_seeds_beating_nulls_last_epoch
    lo_n, hi_n = summary.iso_null_band
    lines = [
        "Students saw only the teacher's auxiliary logits of uniform noise; chance is 10%.",
        "Alignment of the student shift with the teacher shift at the last epoch (EAS, "
        + ", ".join(
            f"{s}: same {eas.same[j][-1].mean:+.3f} / different {eas.diff[j][-1].mean:+.3f}"
            for j, s in enumerate(SITES)
        )
        + f"); isotropic null 95% band {lo_n:+.3f}..{hi_n:+.3f}.",
        f"Seeds whose student beats both nulls at the last epoch (Holm over sites): same "
        f"{frac.same}, different {frac.diff}.",
    ]
    perm = summary.frac_seeds_beating_permutation_null_last_epoch
    if perm is not None:
        lines.append(
            "Seeds beating the unit-permutation null (p < 0.05) at the last epoch: same "
            f"{perm.same}, different {perm.diff}; the isotropic and covariance nulls miss "
            "the sign pattern every ReLU shift shares, so the different-init student and the "
            "permutation null are the controls that count."
        )
    return MlpAuxVerdict(head, lines, "strong" if holds else "none")
