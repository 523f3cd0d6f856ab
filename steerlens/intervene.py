"""Interventions on the residual stream as context managers (DESIGN.md "Hook modes").

- ``add``:         h ← h + α v
- ``project_out``: h ← h − (h·v̂) v̂
- ``replace``:     h ← h − (h·v̂) v̂ + (h_base·v̂) v̂, with h_base the base model's activation
  on the same tokens (``base=`` a model), or a fixed base projection (``base=`` a number or a
  per-layer dict of numbers).

``positions`` picks where: ``all``; ``prompt`` (forward passes with no earlier tokens: the
prompt, or a plain forward); ``generated`` (decoding steps with a filled cache, told apart by
what each forward is given: :func:`steerlens.core.hf_compat.past_length`). The hooks are removed when
the block exits, also after an exception; the model's weights are never touched.

An edit that changes nothing is an error, never a silent no-op: every backend counts the
positions it edits, and a block that ran the model but edited no position raises
:class:`~steerlens.runtime.edits.NoOpEditError` on exit, naming the mode, the positions and the likely
cause. The formulas and the plan are :mod:`steerlens.runtime.edits`; this module is the front end.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch

from steerlens.core.vectors import SteeringVector
from steerlens.loading.models import LoadedModel, as_model
from steerlens.runtime.backends import backend_for
from steerlens.runtime.edits import (
    MODES,
    Mode,
    NoOpEditError,
    Positions,
    add_vector,
    make_plan,
    project_out,
    replace_component,
    resolve_directions,
)

__all__ = [
    "MODES",
    "Mode",
    "NoOpEditError",
    "Positions",
    "ablate",
    "add_vector",
    "project_out",
    "replace_component",
    "resolve_directions",
    "steer",
    "steer_model",
]


@contextmanager
def steer(
    model: Any,
    vector: SteeringVector | Mapping[int, torch.Tensor] | torch.Tensor,
    alpha: float = 1.0,
    layers: int | Sequence[int] | str | None = None,
    mode: Mode = "add",
    *,
    positions: Positions = "all",
    base: Any = None,
) -> Iterator[LoadedModel]:
    """Apply ``vector`` at ``layers`` inside the ``with`` block (see module doc for formulas).

    Works with plain forwards and with ``generate`` (KV cache included), on every backend
    (the model's :func:`~steerlens.runtime.backends.backend_for`). Yields the wrapped model, so
    ``with steer(model, v, 4.0, layers=[15]) as m: m.generate(prompts)`` works. Raises
    :class:`~steerlens.runtime.edits.NoOpEditError` on exit if the model ran but nothing was edited.
    ``model`` and a ``base=`` model are anything :func:`~steerlens.loading.models.as_model` accepts.
    """
    if base is not None and not isinstance(base, (int, float, Mapping)):
        base = as_model(base)
    with steer_model(
        as_model(model), vector, alpha, layers, mode, positions=positions, base=base
    ) as m:
        yield m


@contextmanager
def steer_model(
    lm: LoadedModel,
    vector: SteeringVector | Mapping[int, torch.Tensor] | torch.Tensor,
    alpha: float = 1.0,
    layers: int | Sequence[int] | str | None = None,
    mode: Mode = "add",
    *,
    positions: Positions = "all",
    base: LoadedModel | float | Mapping[int, float] | None = None,
) -> Iterator[LoadedModel]:
    """:func:`steer` on a :class:`~steerlens.loading.models.LoadedModel` as it is (``base`` one too,
    or numbers): the entry for library code that already holds the typed model."""
    plan = make_plan(lm, vector, alpha, layers, mode, positions=positions, base=base)
    with backend_for(lm).steer(plan) as m:
        yield m
    plan.check()  # not reached when the block raised: that error is the one to see


@contextmanager
def ablate(
    model: Any,
    vector: SteeringVector | Mapping[int, torch.Tensor] | torch.Tensor,
    layers: int | Sequence[int] | str | None = None,
    *,
    positions: Positions = "all",
) -> Iterator[LoadedModel]:
    """Project ``vector`` out at ``layers``: ``steer(..., mode="project_out")``."""
    with steer(model, vector, 1.0, layers, "project_out", positions=positions) as m:
        yield m
