"""Interventions on the residual stream as context managers (DESIGN.md "Hook modes").

- ``add``:         h ← h + α v
- ``project_out``: h ← h − (h·v̂) v̂
- ``replace``:     h ← h − (h·v̂) v̂ + (h_base·v̂) v̂, with h_base the base model's activation
  on the same tokens (``base=`` a model), or a fixed base projection (``base=`` a number or a
  per-layer dict of numbers).

``positions`` picks where: ``all``; ``prompt`` (forward passes with an empty KV cache: the
prompt, or a plain forward); ``generated`` (decoding steps with a filled cache). The hooks are
removed when the block exits, also after an exception; the model's weights are never touched.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from steerlens.activations import truncated_forward
from steerlens.models import LoadedModel, as_model, check_same_shape
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


def replace_component(h: torch.Tensor, v_hat: torch.Tensor, base_proj: torch.Tensor) -> torch.Tensor:
    """h − (h·v̂) v̂ + b v̂, where b = h_base·v̂ (broadcast over h's leading dims)."""
    return project_out(h, v_hat) + base_proj.unsqueeze(-1) * v_hat


def _directions(
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
            raise KeyError(f"the vector has no direction at layers {missing}; it has {sorted(dirs)}")
    return {layer: dirs[layer] for layer in chosen}


@dataclass
class _CallState:
    decoding: bool = False
    full_ids: torch.Tensor | None = None
    base_proj: dict[int, torch.Tensor] = field(default_factory=dict)


def _cache_len(kwargs: Mapping[str, Any]) -> int:
    cache = kwargs.get("past_key_values")
    if cache is None:
        return 0
    if hasattr(cache, "get_seq_length"):
        return int(cache.get_seq_length())
    try:
        return int(cache[0][0].shape[-2])
    except (TypeError, IndexError, AttributeError):
        return 0


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
    lm = as_model(model)
    if lm.extra.get("backend") not in (None, "hf"):  # nnsight, TransformerLens, sharded
        from steerlens.backends import steer_foreign

        with steer_foreign(lm, vector, alpha, layers, mode, positions=positions, base=base) as m:
            yield m
        return
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}: use one of {MODES}")
    if positions not in ("all", "prompt", "generated"):
        raise ValueError(f"unknown positions {positions!r}: use 'all', 'prompt' or 'generated'")
    dirs = _directions(vector, layers, lm.n_layers)
    d = lm.hidden_size
    for layer, v in dirs.items():
        if v.shape[-1] != d:
            raise ValueError(
                f"hidden size mismatch: the vector at layer {layer} has d={v.shape[-1]} but the "
                f"model has d={d}; extract the vector from this model's base"
            )
    dev, dt = lm.device, lm.dtype
    vecs = {k: v.to(dev, torch.float32) for k, v in dirs.items()}
    units: dict[int, torch.Tensor] = {}
    for k, v in vecs.items():
        n = v.norm()
        if mode != "add" and n == 0:
            raise ValueError(f"zero vector at layer {k}: cannot project it out")
        units[k] = v / n if n > 0 else v

    base_lm: LoadedModel | None = None
    fixed: dict[int, float] = {}
    if mode == "replace":
        if base is None:
            raise ValueError("mode='replace' needs base=: the base model, or its projection(s)")
        if isinstance(base, (int, float)):
            fixed = {k: float(base) for k in dirs}
        elif isinstance(base, Mapping):
            fixed = {k: float(base[k]) for k in dirs}
        else:
            base_lm = as_model(base)
            check_same_shape(lm, base_lm, ("model", "base"))

    state = _CallState()
    handles = []

    def pre_hook(_mod: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        past = _cache_len(kwargs)
        state.decoding = past > 0
        if base_lm is None:
            return
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is None:
            raise ValueError("replace mode with a base model needs input_ids (not inputs_embeds)")
        if past == 0 or state.full_ids is None:
            state.full_ids = ids
        else:
            state.full_ids = torch.cat([state.full_ids, ids], dim=1)
        full = state.full_ids
        mask = kwargs.get("attention_mask")
        if mask is None or mask.shape[-1] != full.shape[-1]:
            mask = torch.ones_like(full)
        pos = (mask.long().cumsum(-1) - 1).clamp(min=0)
        with torch.inference_mode():
            outs = truncated_forward(base_lm, full, mask, pos, list(dirs))
        t = ids.shape[1]
        state.base_proj = {k: (o[:, -t:, :].float() @ units[k]) for k, o in outs.items()}

    def make_hook(layer: int) -> Any:
        def hook(_mod: Any, _args: Any, output: Any) -> Any:
            if positions == "prompt" and state.decoding:
                return None
            if positions == "generated" and not state.decoding:
                return None
            h = output[0] if isinstance(output, tuple) else output
            hf = h.float()
            if mode == "add":
                new = add_vector(hf, vecs[layer], alpha)
            elif mode == "project_out":
                new = project_out(hf, units[layer])
            else:
                if base_lm is not None:
                    b = state.base_proj[layer]
                else:
                    b = torch.full(hf.shape[:-1], fixed[layer], device=hf.device)
                new = replace_component(hf, units[layer], b)
            new = new.to(dt)
            return (new, *output[1:]) if isinstance(output, tuple) else new

        return hook

    blocks = lm.layout.blocks
    try:
        handles.append(lm.model.register_forward_pre_hook(pre_hook, with_kwargs=True))
        for layer in dirs:
            handles.append(blocks[layer].register_forward_hook(make_hook(layer)))
        yield lm
    finally:
        for h in handles:
            h.remove()


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
