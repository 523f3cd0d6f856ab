"""What the ``mlp-aux`` experiment (:mod:`steerlens.experiments.mlp_aux`) measures beyond the
tracks: the unit-permutation null of each student's alignment; and over seeds: accuracies of the teacher and both students with
Student-t intervals over seeds, the paired same − different margin, the alignment curves and
the fractions of seeds beating each null; nothing tuned to an answer."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from scipy import stats as sps

from steerlens.stats import bootstrap, cosines, z_and_p
from steerlens.track import ModuleTrack
from steerlens.vectors import SteeringVector

__all__ = ["SITES", "permutation_null", "summarize", "t_interval", "verdict"]

SITES = ("layers.0", "layers.1")
"""The tracked sites of the MLP (both hidden layers)."""


def permutation_null(
    track: ModuleTrack, vt: SteeringVector, n_null: int, seed: int
) -> dict[str, list[list[float]]]:
    """The unit-permutation null of each tracked step and site: the observed EAS (the track's)
    against cos(vˢ, π(vᵀ)) for random permutations π of vᵀ's coordinates, z and p
    (``stats.z_and_p``, +1 corrected). It keeps vᵀ's values (a ReLU site's shifts share a sign
    pattern the isotropic and covariance nulls do not have) and destroys only which unit is
    which: exactly what a different initialisation does, so it asks whether a student moved
    *the teacher's units* the teacher's way."""
    ser = track.series
    out: dict[str, list[list[float]]] = {"z": [], "p": []}
    g = torch.Generator().manual_seed(int(seed))
    for r, step in enumerate(ser.steps[1:], start=1):
        zs, ps = [], []
        for j, k in enumerate(sorted(track.shifts[step])):
            v = track.shifts[step][k].double().mean(0)
            idx = torch.rand(n_null, v.shape[0], generator=g).argsort(dim=1)
            z, p = z_and_p(float(ser.eas[r, j]), cosines(v, vt[k].double()[idx]))
            zs.append(z)
            ps.append(p)
        out["z"].append(zs)
        out["p"].append(ps)
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


def _curves(per_seed: Sequence[dict[str, Any]], who: str, key: str) -> list[list[dict[str, float]]]:
    """[layer][tracked epoch] t-interval over seeds of the track array ``key`` (rows after the
    base row 0)."""
    arrs = np.array([np.asarray(p[who]["track"][key], dtype=float)[1:] for p in per_seed])
    return [
        [t_interval(arrs[:, e, j].tolist()) for e in range(arrs.shape[1])]
        for j in range(arrs.shape[2])
    ]


def summarize(per_seed: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Accuracies, the paired same − different contrast and the alignment curves over seeds."""
    same = [p["same"]["acc"] for p in per_seed]
    diff = [p["diff"]["acc"] for p in per_seed]
    margin = np.array(same) - np.array(diff)
    boot = bootstrap(lambda i: float(margin[i].mean()), len(margin), n_boot=2000, seed=0)
    sig = [
        [
            float(np.mean([np.asarray(p[w]["track"]["p_adj"])[-1][j] < 0.05 for p in per_seed]))
            for j in range(len(SITES))
        ]
        for w in ("same", "diff")
    ]
    perm = {
        w: [
            float(np.mean([p[w]["perm_null"]["p"][-1][j] < 0.05 for p in per_seed]))
            for j in range(len(SITES))
        ]
        for w in ("same", "diff")
        if all("perm_null" in p[w] for p in per_seed)
    }
    excess_last = np.array([np.asarray(p["excess"]["estimate"], dtype=float)[-1] for p in per_seed])
    return {
        "accuracy": {
            "teacher": t_interval([p["teacher_acc"] for p in per_seed]),
            "init": t_interval([p["init_acc"]["A"] for p in per_seed]),
            "same_init": t_interval(same),
            "different_init": t_interval(diff),
        },
        "margin": {
            **t_interval(margin.tolist()),
            "bootstrap_over_seeds": boot,
            "per_seed": margin.tolist(),
        },
        "interval": "Student t over seeds (n−1 df), 95%; margin paired by seed",
        "epochs": per_seed[0]["epochs"],
        "sites": list(SITES),
        "eas": {w: _curves(per_seed, w, "eas") for w in ("same", "diff")},
        "z_cov": {w: _curves(per_seed, w, "z_cov") for w in ("same", "diff")},
        "acc_by_epoch": {
            w: [
                t_interval([p[w]["acc_by_epoch"][e] for p in per_seed])
                for e in range(len(per_seed[0]["epochs"]))
            ]
            for w in ("same", "diff")
        },
        "frac_seeds_beating_nulls_last_epoch": {"same": sig[0], "diff": sig[1]},
        "frac_seeds_beating_permutation_null_last_epoch": perm,
        "excess_last_epoch": [t_interval(excess_last[:, j].tolist()) for j in range(len(SITES))],
        "iso_null_band": [
            float(np.mean([p["iso_null_band"][0] for p in per_seed])),
            float(np.mean([p["iso_null_band"][1] for p in per_seed])),
        ],
    }


def verdict(summary: dict[str, Any], dataset: str) -> dict[str, Any]:
    """Headline and lines from the numbers (nothing tuned to an answer)."""
    acc, m = summary["accuracy"], summary["margin"]
    n = m["n"]
    holds = m["lo"] > 0
    eas = summary["eas"]
    last = {w: [eas[w][j][-1]["mean"] for j in range(len(SITES))] for w in ("same", "diff")}
    head = (
        f"{dataset}: same-init students reach {acc['same_init']['mean']:.1%} test accuracy vs "
        f"{acc['different_init']['mean']:.1%} from a different init (teacher "
        f"{acc['teacher']['mean']:.1%}); margin {m['mean']:+.1%} [{m['lo']:+.1%}, {m['hi']:+.1%}] "
        f"(95% t-interval over {n} seeds) — "
        + ("the shared initialisation carries the trait" if holds else "no reliable margin")
    )
    lines = [
        "Students saw only the teacher's auxiliary logits of uniform noise; chance is 10%.",
        "Alignment of the student shift with the teacher shift at the last epoch (EAS, "
        + ", ".join(
            f"{s}: same {last['same'][j]:+.3f} / different {last['diff'][j]:+.3f}"
            for j, s in enumerate(SITES)
        )
        + f"); isotropic null 95% band {summary['iso_null_band'][0]:+.3f}..{summary['iso_null_band'][1]:+.3f}.",
        "Seeds whose student beats both nulls at the last epoch (Holm over sites): same "
        f"{summary['frac_seeds_beating_nulls_last_epoch']['same']}, different "
        f"{summary['frac_seeds_beating_nulls_last_epoch']['diff']}.",
    ]
    perm = summary.get("frac_seeds_beating_permutation_null_last_epoch")
    if perm:
        lines.append(
            "Seeds beating the unit-permutation null (p < 0.05) at the last epoch: same "
            f"{perm['same']}, different {perm['diff']}; the isotropic and covariance nulls miss "
            "the sign pattern every ReLU shift shares, so the different-init student and the "
            "permutation null are the controls that count."
        )
    return {"headline": head, "lines": lines, "strength": "strong" if holds else "none"}
