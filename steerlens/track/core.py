"""``track_checkpoints``: the tracking run, step by step (formulas in :mod:`steerlens.track`).

1. :func:`_prepare`: check the vector, probe prompts and settings; encode and batch the prompts;
2. :func:`_split_cached`: which checkpoints the row cache already holds;
3. :func:`_first_blocks`: per checkpoint, the first block it changes (``skip_unchanged_blocks``);
4. :func:`_base_rows`: the base pass (capturing block inputs for the replay);
5. :func:`_checkpoint_rows_all`: each checkpoint's rows (replay or full forward), cached;
6. :mod:`~steerlens.track.series` (``series_tracks``, ``excess_alignment``):
   the statistics;
7. :func:`_settings` / :func:`_provenance`: how and on what it was computed.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from tqdm.auto import tqdm

from steerlens.checkpoints import Checkpoint, CheckpointSeries, first_changed_block
from steerlens.core.common import tqdm_disable
from steerlens.core.vectors import SteeringVector
from steerlens.inputs.prompts import (
    PositionSpec,
    as_prompt,
    encode,
    position_indices,
    prompt_set_hash,
)
from steerlens.loading.models import as_model, cache_root, describe
from steerlens.runtime.activations import length_batches
from steerlens.runtime.backends.upper import BlockInputs
from steerlens.runtime.batching import check_context
from steerlens.track.cache import RowCache, tokenizer_key
from steerlens.track.inputs import (
    TrackRun,
    as_series,
    as_vector,
    check_vector,
    default_position,
    probe_prompts,
)
from steerlens.track.nulls import NullConfig
from steerlens.track.replay import base_pass, checkpoint_rows, replay_self_check
from steerlens.track.results import AlignmentTrack
from steerlens.track.series import Key, Rows, excess_alignment, series_tracks
from steerlens.version import __version__

__all__ = ["NullSpan", "track_checkpoints"]

NullSpan = Literal["base", "shift"]


def _check_settings(null_span: str, correction: str, n_null: int, n_boot: int) -> None:
    if null_span not in ("base", "shift"):
        raise ValueError(f"null_span must be 'base' or 'shift', got {null_span!r}")
    if correction not in ("holm", "bh"):
        raise ValueError(f"unknown correction {correction!r}: use 'holm' or 'bh'")
    if n_null < 1 or n_boot < 1:
        raise ValueError("n_null and n_boot must be >= 1")


def _prepare(
    model: Any,
    vector: Any,
    trait_or_prompts: Any,
    layers: Sequence[int] | None,
    position: PositionSpec | None,
) -> TrackRun:
    """Check the model, vector and probe prompts (:func:`_encode_run` fills in the rest)."""
    lm = as_model(model)
    vec = as_vector(vector)
    track_layers = check_vector(lm, vec, layers)
    prompts = probe_prompts(trait_or_prompts)
    pos: PositionSpec = position if position is not None else default_position(vec)
    return TrackRun(lm, vec, track_layers, prompts, pos, [], [], {})


def _encode_run(run: TrackRun, series: Any, control: Any, batch_size: int) -> None:
    """The series, and the probe prompts encoded (each checked) and in length batches."""
    run.all_series["main"] = as_series(series)
    if control is not None:
        run.all_series["control"] = as_series(control)
    run.encs = [encode(run.lm.tokenizer, p) for p in run.prompts]
    for i, e in enumerate(run.encs):
        if len(e) == 0:
            raise ValueError(f"probe prompt {i} tokenizes to no tokens")
        position_indices(e, run.pos, i)
    check_context(run.lm, run.encs, "probe prompt")
    run.batches = length_batches(run.encs, batch_size)


def _row_cache(
    run: TrackRun,
    cache_dir: str | os.PathLike[str] | Literal[False] | None,
    rows_dtype: torch.dtype,
) -> RowCache:
    """The row cache (root None when off: ``cache_dir=False`` or a custom position)."""
    root = None
    if cache_dir is not False and isinstance(run.pos, str):
        root = Path(cache_dir).expanduser() if cache_dir else cache_root() / "track"
    common = {
        "base": run.lm.fingerprint,
        "tokenizer": tokenizer_key(run.lm.tokenizer),
        "prompts": prompt_set_hash(run.prompts),
        "layers": run.layers,
        "position": run.pos if isinstance(run.pos, str) else "custom",
        "rows_dtype": str(rows_dtype),
    }
    return RowCache(root, common)


def _split_cached(
    run: TrackRun, cache: RowCache
) -> tuple[dict[str, list[Checkpoint]], dict[Key, Rows]]:
    """Per series, the checkpoints to compute, and the rows of those the cache holds."""
    todo: dict[str, list[Checkpoint]] = {}
    cached: dict[Key, Rows] = {}
    for name, ser in run.all_series.items():
        todo[name] = []
        for ck in ser:
            hit = cache.load(ck.signature(), run.layers, run.n, run.d)
            if hit is None:
                todo[name].append(ck)
            else:
                cached[(name, ck.step)] = hit
    return todo, cached


def _first_blocks(
    run: TrackRun, todo: Mapping[str, list[Checkpoint]], skip: bool
) -> dict[Key, int]:
    """The first block each checkpoint to compute changes (0 when not skipping)."""
    return {
        (name, ck.step): first_changed_block(run.lm, ck) if skip else 0
        for name, cks in todo.items()
        for ck in cks
    }


def _base_rows(
    run: TrackRun,
    cache: RowCache,
    capture: int | None,
    rows_dtype: torch.dtype,
    progress: bool | None,
) -> tuple[Rows, BlockInputs | None]:
    """The base rows (cached or computed) and, with ``capture``, the block inputs for replay,
    kept only if replaying the base reproduces its rows."""
    base_rows = cache.load("base", run.layers, run.n, run.d)
    inputs: BlockInputs | None = None
    if base_rows is None or capture is not None:
        fresh, inputs = base_pass(
            run.lm, run.encs, run.batches, run.layers, run.pos, capture, progress=progress
        )
        if inputs is not None and not replay_self_check(
            run.lm, inputs, run.encs, run.layers, run.pos, fresh
        ):
            warnings.warn(
                f"replaying blocks from {inputs.start} did not reproduce the base activations "
                f"of {type(run.lm.model).__name__}; using full truncated forwards instead",
                stacklevel=3,
            )
            inputs = None
        if base_rows is None:
            cache.save("base", fresh, rows_dtype)
            base_rows = {k: v.to(rows_dtype).float() for k, v in fresh.items()}
        del fresh
    return base_rows, inputs


def _checkpoint_rows_all(
    run: TrackRun,
    todo: Mapping[str, list[Checkpoint]],
    first: Mapping[Key, int],
    inputs: BlockInputs | None,
    base_rows: Rows,
    cache: RowCache,
    rows_dtype: torch.dtype,
    batch_size: int,
    progress: bool | None,
) -> tuple[dict[Key, Rows], dict[str, list[float]]]:
    """Rows of every checkpoint to compute (replay from its first changed block when the
    captured inputs start at or below it; a copy of the base's when it changes nothing
    tracked), saved to the cache; and the seconds each took."""
    timings: dict[str, list[float]] = {}
    rows_by: dict[Key, Rows] = {}
    total = sum(len(v) for v in todo.values())
    bar = tqdm(total=total, desc="checkpoints", disable=tqdm_disable(progress), leave=False)
    try:
        for name, ser in run.all_series.items():
            timings[name] = []
            if not todo[name]:
                continue
            with ser.open(run.lm) as load:
                for ck in todo[name]:
                    t0 = time.perf_counter()
                    s = first[(name, ck.step)]
                    if s > run.deepest:
                        rows = {k: v.clone() for k, v in base_rows.items()}
                    else:
                        m = load(ck)
                        use = inputs if (inputs is not None and s >= inputs.start) else None
                        rows = checkpoint_rows(
                            m,
                            run.prompts,
                            run.encs,
                            run.layers,
                            run.pos,
                            batch_size,
                            use,
                            base_rows,
                        )
                        del m
                    cache.save(ck.signature(), rows, rows_dtype)
                    rows_by[(name, ck.step)] = {
                        k: v.to(rows_dtype).float() for k, v in rows.items()
                    }
                    timings[name].append(time.perf_counter() - t0)
                    bar.update(1)
    finally:
        bar.close()
    return rows_by, timings


def track_checkpoints(
    model: Any,
    series: str | os.PathLike[str] | CheckpointSeries | Sequence[str | os.PathLike[str]],
    vector: SteeringVector | Mapping[int, torch.Tensor],
    trait_or_prompts: Any,
    *,
    control: str | os.PathLike[str] | CheckpointSeries | None = None,
    layers: Sequence[int] | None = None,
    position: PositionSpec | None = None,
    batch_size: int = 32,
    cache_dir: str | os.PathLike[str] | Literal[False] | None = None,
    n_null: int = 1000,
    n_boot: int = 1000,
    null_span: NullSpan = "base",
    null_rows: Mapping[int, torch.Tensor] | None = None,
    correction: str = "holm",
    alpha: float = 0.05,
    alternative: str = "greater",
    level: float = 0.95,
    seed: int = 0,
    rows_dtype: torch.dtype = torch.float32,
    skip_unchanged_blocks: bool = True,
    progress: bool | None = None,
) -> AlignmentTrack:
    """Track EAS, projection and norm of the student shift against ``vector`` per checkpoint
    and layer, against nulls, and (with ``control``) the excess alignment over a control run.

    ``model`` is the base θ₀ (a :class:`LoadedModel` or HF model); ``series``/``control`` are
    folders of ``checkpoint-N`` subfolders (full weights or PEFT adapters), checkpoint lists or
    :class:`CheckpointSeries`. ``trait_or_prompts`` gives the probe prompts: a prompt list or a
    trait spec (its ``probe_chats(system=None)``: no system prompt). ``position`` defaults to
    the vector's recorded position ("last" if none). ``cache_dir`` defaults to
    ``~/.cache/steerlens/track`` (``False``: no cache). ``skip_unchanged_blocks`` runs, per
    checkpoint, only the blocks above the lowest block it changes (recorded as
    ``settings["fast"]`` and ``provenance["replay_start_block"]``). See the module docstring of
    :mod:`steerlens.track` for every formula.
    """
    t_start = time.perf_counter()
    run = _prepare(model, vector, trait_or_prompts, layers, position)
    _check_settings(null_span, correction, n_null, n_boot)
    _encode_run(run, series, control, batch_size)
    cache = _row_cache(run, cache_dir, rows_dtype)
    todo, cached = _split_cached(run, cache)
    first = _first_blocks(run, todo, skip_unchanged_blocks)
    starts = [s for s in first.values() if 0 < s <= run.deepest]
    capture = min(starts) if (skip_unchanged_blocks and starts) else None

    t_base = time.perf_counter()
    base_rows, inputs = _base_rows(run, cache, capture, rows_dtype, progress)
    t_base = time.perf_counter() - t_base
    rows_by, timings = _checkpoint_rows_all(
        run, todo, first, inputs, base_rows, cache, rows_dtype, batch_size, progress
    )
    rows_by.update(cached)

    tracks, shifts = series_tracks(
        run,
        rows_by,
        base_rows,
        first,
        NullConfig(n_null, seed, alternative),
        null_rows,
        null_span,
        correction,
    )
    excess = excess_alignment(run, tracks, shifts, n_boot, seed, level)

    settings = _settings(
        run,
        batch_size,
        n_null,
        n_boot,
        null_span,
        null_rows,
        correction,
        alpha,
        alternative,
        level,
        seed,
        rows_dtype,
        skip_unchanged_blocks,
    )
    seconds = {"base_pass": t_base, "checkpoints": timings}
    provenance = _provenance(run, cache, todo, inputs, seconds, t_start)
    return AlignmentTrack(run.layers, tracks, excess, settings, provenance)


def _settings(
    run: TrackRun,
    batch_size: int,
    n_null: int,
    n_boot: int,
    null_span: str,
    null_rows: Mapping[int, torch.Tensor] | None,
    correction: str,
    alpha: float,
    alternative: str,
    level: float,
    seed: int,
    rows_dtype: torch.dtype,
    skip_unchanged_blocks: bool,
) -> dict[str, Any]:
    """How the track was computed (``"fast"``: the ``skip_unchanged_blocks`` switch, under the
    key earlier releases wrote)."""
    return {
        "position": run.pos if isinstance(run.pos, str) else "custom",
        "layers": run.layers,
        "batch_size": batch_size,
        "n_null": n_null,
        "n_boot": n_boot,
        "null_span": "custom" if null_rows is not None else null_span,
        "correction": correction,
        "alpha": alpha,
        "alternative": alternative,
        "level": level,
        "seed": seed,
        "rows_dtype": str(rows_dtype),
        "fast": skip_unchanged_blocks,
        "decision": "p = max(p_iso, p_cov), corrected across layers per checkpoint",
    }


def _provenance(
    run: TrackRun,
    cache: RowCache,
    todo: Mapping[str, list[Checkpoint]],
    inputs: BlockInputs | None,
    seconds: dict[str, Any],
    t_start: float,
) -> dict[str, Any]:
    """What the track was computed on: base, vector, series, prompts, cache, timings."""
    all_series = run.all_series
    return {
        "base": describe(run.lm),
        "vector": {"meta": run.vec.meta, "norms": run.vec.norms()},
        "series": {k: s.to_json() for k, s in all_series.items()},
        "signatures": {k: {c.step: c.signature() for c in s} for k, s in all_series.items()},
        "prompts_hash": cache.common["prompts"],
        "n_prompts": run.n,
        "probe_examples": [str(as_prompt(p))[:200] for p in run.prompts[:3]],
        "cache_dir": str(cache.root) if cache.root is not None else None,
        "computed": {k: [c.step for c in v] for k, v in todo.items()},
        "replay_start_block": inputs.start if inputs is not None else None,
        "seconds": {**seconds, "total": time.perf_counter() - t_start},
        "steerlens_version": __version__,
    }
