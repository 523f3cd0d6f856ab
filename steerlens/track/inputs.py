"""What :func:`~steerlens.track.track_checkpoints` accepts: probe prompts from a trait or a list,
a checkpoint series from a folder or a list, a teacher vector checked against the base."""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from steerlens.checkpoints import CheckpointSeries
from steerlens.core.vectors import SteeringVector
from steerlens.inputs.prompts import EncodedPrompt, PositionSpec, check_prompts
from steerlens.loading.models import LoadedModel

__all__ = [
    "TrackRun",
    "as_series",
    "as_vector",
    "check_vector",
    "default_position",
    "probe_prompts",
]


def probe_prompts(trait_or_prompts: Any) -> list[str | Any]:
    """Probe prompts from a trait (anything with ``probe_chats(system=None)``, called with no
    system prompt) or a plain prompt list."""
    if hasattr(trait_or_prompts, "probe_chats"):
        items = list(trait_or_prompts.probe_chats(system=None))
    elif isinstance(trait_or_prompts, (str, bytes)):
        raise TypeError("pass a list of probe prompts (or a trait spec), not a single string")
    else:
        items = list(trait_or_prompts)
    return check_prompts(items, "track_checkpoints probes")


def as_series(x: Any) -> CheckpointSeries:
    if isinstance(x, CheckpointSeries):
        return x
    if isinstance(x, (str, os.PathLike)):
        return CheckpointSeries.discover(Path(x))
    if isinstance(x, Sequence):
        return CheckpointSeries.from_paths(list(x))
    raise TypeError(
        f"a checkpoint series must be a folder path, a list of checkpoint folders or a "
        f"CheckpointSeries, got {type(x).__name__}"
    )


def as_vector(vector: Any) -> SteeringVector:
    if isinstance(vector, SteeringVector):
        return vector
    if isinstance(vector, Mapping):
        return SteeringVector(dict(vector))
    raise TypeError(
        f"the teacher vector must be a SteeringVector or a {{layer: tensor}} dict, got "
        f"{type(vector).__name__}"
    )


def check_vector(lm: LoadedModel, vec: SteeringVector, layers: Sequence[int] | None) -> list[int]:
    if vec.hidden_size != lm.hidden_size:
        raise ValueError(
            f"hidden size mismatch: the teacher vector has d={vec.hidden_size} but "
            f"{lm.name} has d={lm.hidden_size}. Extract the vector on the base model of this "
            "series."
        )
    too_deep = [layer for layer in vec.layers if layer >= lm.n_layers]
    if too_deep:
        raise ValueError(
            f"layer count mismatch: the teacher vector has layers {too_deep} but {lm.name} has "
            f"only {lm.n_layers} blocks (0..{lm.n_layers - 1}). Extract the vector on the base "
            "model of this series."
        )
    fp = vec.meta.get("model_fingerprint")
    if fp is not None and fp != lm.fingerprint:
        warnings.warn(
            f"the teacher vector was extracted on a model with fingerprint {fp}, not this base "
            f"({lm.fingerprint}); alignment assumes both share the base",
            stacklevel=3,
        )
    wanted = vec.layers if layers is None else [int(x) for x in layers]
    missing = [layer for layer in wanted if layer not in vec]
    if missing:
        raise ValueError(f"the teacher vector has no layers {missing}; it has {vec.layers}")
    return sorted(set(wanted))


def default_position(vec: SteeringVector) -> str:
    pos = vec.meta.get("position")
    return pos if pos in ("last", "prompt", "all") else "last"


@dataclass
class TrackRun:
    """What every step of one tracking run shares: model, vector, layers, probe prompts (encoded
    and in length batches) and the series."""

    lm: LoadedModel
    vec: SteeringVector
    layers: list[int]
    prompts: list[Any]
    pos: PositionSpec
    encs: list[EncodedPrompt]
    batches: list[list[int]]
    all_series: dict[str, CheckpointSeries]

    @property
    def n(self) -> int:
        return len(self.encs)

    @property
    def d(self) -> int:
        return self.lm.hidden_size

    @property
    def deepest(self) -> int:
        return max(self.layers)
