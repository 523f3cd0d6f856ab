"""The statistics of a track: per-series arrays against the nulls, and the excess alignment
of the main over the control series (formulas in :mod:`steerlens.track`)."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from steerlens.checkpoints import CheckpointSeries
from steerlens.measures.stats import correct, random_directions
from steerlens.track.inputs import TrackRun
from steerlens.track.nulls import NullConfig, excess_bootstrap, layer_stats
from steerlens.track.results import SERIES_ARRAYS, ExcessAlignment, SeriesTrack

__all__ = ["Key", "Rows", "excess_alignment", "series_track", "series_tracks"]

Rows = dict[int, torch.Tensor]
Key = tuple[str, int]


def series_track(
    run: TrackRun,
    name: str,
    ser: CheckpointSeries,
    rows_by: Mapping[Key, Rows],
    base_rows: Rows,
    first: Mapping[Key, int],
    stat: dict[str, Any],
) -> tuple[SeriesTrack, dict[int, Rows]]:
    """One series' arrays (row 0: the base, step 0) and its per-step shift rows.

    ``stat`` holds ``cfg`` (:class:`NullConfig`), ``iso_dirs``, ``base_means``, ``null_rows``,
    ``null_span`` and ``correction``."""
    layers, n, d = run.layers, run.n, run.d
    steps = [0, *ser.steps] if 0 not in ser.steps else ser.steps
    arr = {k: np.full((len(steps), len(layers)), np.nan) for k in SERIES_ARRAYS}
    shifts: dict[int, Rows] = {}
    null_rows = stat["null_rows"]
    for r, step in enumerate(steps):
        have = (name, step) in rows_by
        if step == 0 and not have:
            sh = {k: torch.zeros(n, d) for k in layers}
        else:
            sh = {k: rows_by[(name, step)][k] - base_rows[k] for k in layers}
        shifts[step] = sh
        pvals = []
        for j, layer in enumerate(layers):
            if null_rows is not None and layer in null_rows:
                span = null_rows[layer]
            else:
                span = base_rows[layer] if stat["null_span"] == "base" else sh[layer]
            mean_shift = (
                rows_by[(name, step)][layer].double().mean(0) - stat["base_means"][layer]
                if have
                else torch.zeros(d, dtype=torch.float64)
            )
            st = layer_stats(mean_shift, run.vec[layer], stat["iso_dirs"], span, stat["cfg"])
            for k, v in st.items():
                arr[k][r, j] = v
            pvals.append(max(st["p_iso"], st["p_cov"]))
        arr["p_adj"][r] = correct(pvals, stat["correction"])
    paths = [str(ser.by_step(s).path) if s != 0 or 0 in ser.steps else "base" for s in steps]
    fb = [first.get((name, s), -1) for s in steps]
    return SeriesTrack(name, steps, paths, first_block=fb, **arr), shifts


def series_tracks(
    run: TrackRun,
    rows_by: Mapping[Key, Rows],
    base_rows: Rows,
    first: Mapping[Key, int],
    cfg: NullConfig,
    null_rows: Mapping[int, torch.Tensor] | None,
    null_span: str,
    correction: str,
) -> tuple[dict[str, SeriesTrack], dict[str, dict[int, Rows]]]:
    """:func:`series_track` of every series, sharing the isotropic directions and base means."""
    stat = {
        "cfg": cfg,
        "iso_dirs": random_directions(run.d, cfg.n_null, cfg.seed),
        "base_means": {k: base_rows[k].double().mean(0) for k in run.layers},
        "null_rows": null_rows,
        "null_span": null_span,
        "correction": correction,
    }
    tracks: dict[str, SeriesTrack] = {}
    shifts: dict[str, dict[int, Rows]] = {}
    for name, ser in run.all_series.items():
        tracks[name], shifts[name] = series_track(run, name, ser, rows_by, base_rows, first, stat)
    return tracks, shifts


def excess_alignment(
    run: TrackRun,
    tracks: Mapping[str, SeriesTrack],
    shifts: Mapping[str, dict[int, Rows]],
    n_boot: int,
    seed: int,
    level: float,
) -> ExcessAlignment | None:
    """EAS(main) − EAS(control) with bootstrap CIs at the steps both series have."""
    if "control" not in tracks:
        return None
    main, ctrl = tracks["main"], tracks["control"]
    common_steps = [s for s in main.steps if s in ctrl.steps and s != 0]
    if not common_steps:
        warnings.warn(
            f"main steps {main.steps} and control steps {ctrl.steps} share no checkpoint step: "
            "no excess alignment",
            stacklevel=3,
        )
        return None
    shape = (len(common_steps), len(run.layers))
    ex = {k: np.full(shape, np.nan) for k in ("estimate", "lo", "hi", "p")}
    for r, step in enumerate(common_steps):
        for j, layer in enumerate(run.layers):
            b = excess_bootstrap(
                shifts["main"][step][layer],
                shifts["control"][step][layer],
                run.vec[layer],
                n_boot=n_boot,
                seed=seed + r,
                level=level,
            )
            for k, v in b.items():
                ex[k][r, j] = v
    return ExcessAlignment(common_steps, ex["estimate"], ex["lo"], ex["hi"], ex["p"], level, n_boot)
