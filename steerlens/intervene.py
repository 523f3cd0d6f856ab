"""Interventions on the residual stream as context managers (DESIGN.md "Hook modes").

- ``add``:         h ← h + α v
- ``project_out``: h ← h − (h·v̂) v̂
- ``replace``:     h ← h − (h·v̂) v̂ + (h_base·v̂) v̂, with h_base the base model's activation
  on the same tokens (``base=`` a model), or a fixed base projection (``base=`` a number or a
  per-layer dict of numbers).

``positions`` picks where: ``all``; ``prompt`` (forward passes with an empty KV cache: the
prompt, or a plain forward); ``generated`` (decoding steps with a filled cache, told apart by
what each forward is given: :func:`steerlens.hf_compat.past_length`). The hooks are removed when
the block exits, also after an exception; the model's weights are never touched.

An edit that changes nothing is an error, never a silent no-op: every backend counts the
positions it edits, and a block that ran the model but edited no position raises
:class:`~steerlens.backends.protocol.NoOpEditError` on exit, naming the mode, the positions
and the likely cause.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Literal

import torch

from steerlens.models import LoadedModel, as_model
from steerlens.sites import resolve_layers
from steerlens.vectors import SteeringVector

Mode = Literal["add", "project_out", "replace"]
Positions = Literal["all", "prompt", "generated"]
MODES = ("add", "project_out", "replace")


def add_vector(h: torch.Tensor, v: torch.Tensor, alpha: float) -> torch.Tensor:
    """h + α v."""
    return h + alpha * v


def project_out(h: torch.Tensor, v_hat: torch.Tensor) -> torch.Tensor:
    """h − (h·v̂) v̂ for unit v̂."""
    return h - (h @ v_hat).unsqueeze(-1) * v_hat


def replace_component(
    h: torch.Tensor, v_hat: torch.Tensor, base_proj: torch.Tensor
) -> torch.Tensor:
    """h − (h·v̂) v̂ + b v̂, where b = h_base·v̂ (broadcast over h's leading dims)."""
    return project_out(h, v_hat) + base_proj.unsqueeze(-1) * v_hat


def resolve_directions(
    vector: SteeringVector | Mapping[int, torch.Tensor] | torch.Tensor,
    layers: int | Sequence[int] | str | None,
    n_layers: int,
) -> dict[int, torch.Tensor]:
    if isinstance(vector, torch.Tensor):
        if layers is None:
            raise ValueError("a bare tensor needs layers=: say where to apply it")
        return {layer: vector for layer in resolve_layers(layers, n_layers)}
    dirs = vector.directions if isinstance(vector, SteeringVector) else dict(vector)
    if layers is None:
        chosen = resolve_layers(list(dirs), n_layers)
    else:
        chosen = resolve_layers(layers, n_layers)
        missing = [layer for layer in chosen if layer not in dirs]
        if missing:
            raise KeyError(
                f"the vector has no direction at layers {missing}; it has {sorted(dirs)}"
            )
    return {layer: dirs[layer] for layer in chosen}


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

    Works with plain forwards and with ``generate`` (KV cache included). Yields the wrapped
    model, so ``with steer(model, v, 4.0, layers=[15]) as m: m.generate(prompts)`` works.
    """
    from steerlens.backends import steer_foreign

    # one implementation for every runtime: the plan (formulas above) applied by the model's
    # backend (torch hooks for HF models, interventions for nnsight, hooks for TransformerLens)
    with steer_foreign(
        as_model(model), vector, alpha, layers, mode, positions=positions, base=base
    ) as m:
        yield m


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
