"""The edits steerlens makes to the residual stream, as formulas and as a plan
(DESIGN.md "Hook modes"):

- ``add``:         h ← h + α v
- ``project_out``: h ← h − (h·v̂) v̂
- ``replace``:     h ← h − (h·v̂) v̂ + (h_base·v̂) v̂, with h_base the base model's activation on
  the same tokens (a base model), or a fixed base projection (a number or a per-layer dict).

An :class:`EditPlan` is what :func:`steerlens.steer` validated: which layers, which mode,
which positions (``all``; ``prompt``: forwards with no earlier tokens; ``generated``: decoding
steps continuing a filled KV cache). Every backend applies it through :meth:`EditPlan.transform`
and reports each forward to :meth:`EditPlan.observe_forward`, so the plan counts what it
edited and :meth:`EditPlan.check` turns an edit that changed nothing into an error.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

from steerlens.core.hf_compat import past_length
from steerlens.core.sites import resolve_layers, resolve_module_sites
from steerlens.core.vectors import SteeringVector, check_nonzero
from steerlens.loading.models import LoadedModel, check_same_shape

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


@dataclass
class _State:
    decoding: bool = False
    full_ids: torch.Tensor | None = None
    base_proj: dict[int, torch.Tensor] = field(default_factory=dict)
    #: forwards of the model seen inside the block (prefill and decoding steps)
    forwards: int = 0
    #: decoding steps among them (a forward continuing a filled KV cache)
    decoding_steps: int = 0
    #: block outputs the plan was asked about, and positions (token rows) it edited
    block_calls: int = 0
    edited_positions: int = 0


class NoOpEditError(RuntimeError):
    """A ``steer`` / ``ablate`` block ran the model but edited no position: the result would be
    the unedited model's, silently. Raised when the block exits (see :meth:`EditPlan.check`)."""


@dataclass
class EditPlan:
    """What to do to the residual stream after each block in :attr:`directions`.

    Built by :func:`make_plan` from the arguments of :func:`steerlens.steer`; the backends
    call :meth:`transform` on the block output (their hook, intervention or TL hook) and
    report each forward to :meth:`observe_forward` so ``positions`` and a base model's
    projections follow the KV cache.
    """

    mode: Mode
    alpha: float
    positions: Positions
    directions: dict[int, torch.Tensor]
    units: dict[int, torch.Tensor]
    fixed: dict[int, float] = field(default_factory=dict)
    base: LoadedModel | None = None
    state: _State = field(default_factory=_State)
    _cache: dict[tuple[int, str, str], torch.Tensor] = field(default_factory=dict, repr=False)

    @property
    def layers(self) -> list[int]:
        return sorted(self.directions)

    def _on(self, kind: str, layer: int, device: torch.device) -> torch.Tensor:
        """The float32 vector (``kind`` "v") or unit vector ("u") of ``layer`` on ``device``,
        moved once per device (a sharded model has blocks on several)."""
        key = (layer, kind, str(device))
        t = self._cache.get(key)
        if t is None:
            src = self.directions[layer] if kind == "v" else self.units[layer]
            t = self._cache[key] = src.to(device=device, dtype=torch.float32)
        return t

    def active(self) -> bool:
        """Whether the current forward is one the plan applies to (``positions``)."""
        if self.positions == "prompt":
            return not self.state.decoding
        if self.positions == "generated":
            return self.state.decoding
        return True

    def transform(self, layer: int, h: torch.Tensor) -> torch.Tensor | None:
        """The edited block output (same dtype and device as ``h``), or None to leave it.
        Counts the positions it edits (:meth:`check`)."""
        if layer not in self.directions:
            return None
        self.state.block_calls += 1
        if not self.active():
            return None
        self.state.edited_positions += h.shape[:-1].numel()
        hf = h.float()
        if self.mode == "add":
            new = add_vector(hf, self._on("v", layer, h.device), self.alpha)
        elif self.mode == "project_out":
            new = project_out(hf, self._on("u", layer, h.device))
        else:
            if self.base is not None:
                b = self.state.base_proj[layer].to(h.device)
            else:
                b = torch.full(hf.shape[:-1], self.fixed[layer], device=h.device)
            new = replace_component(hf, self._on("u", layer, h.device), b)
        return new.to(h.dtype)

    def observe_forward(
        self, args: tuple[Any, ...], kwargs: Mapping[str, Any]
    ) -> tuple[torch.Tensor, torch.Tensor, int] | None:
        """Called by the backend before every forward of the model (its pre-hook): counts the
        forward and tells a decoding step from a prefill by what the forward is given
        (:func:`steerlens.core.hf_compat.past_length`: a filled KV cache under any keyword, an
        attention mask reaching before the input ids, or the position ids), never by a
        keyword's name.

        In replace mode with a base model, returns ``(ids, mask, t)``: every token so far
        (B, T), its attention mask, and the count ``t`` of new tokens; the backend runs the base
        model on them and calls :meth:`set_base_output`. Else None."""
        past = past_length(args, kwargs)
        st = self.state
        st.decoding = past > 0
        st.forwards += 1
        st.decoding_steps += int(past > 0)
        if self.base is None:
            return None
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is None:
            raise ValueError("replace mode with a base model needs input_ids (not inputs_embeds)")
        st.full_ids = ids if past == 0 or st.full_ids is None else torch.cat([st.full_ids, ids], 1)
        full = st.full_ids
        mask = kwargs.get("attention_mask")
        if mask is None or mask.shape[-1] != full.shape[-1]:
            mask = torch.ones_like(full)
        return full, mask, int(ids.shape[1])

    def set_base_output(self, outs: Mapping[int, torch.Tensor], t: int) -> None:
        """Store the base model's projections h_base·v̂ on the last ``t`` tokens, from its block
        outputs ``outs`` {layer: (B, T, d)} (replace mode)."""
        self.state.base_proj = {
            k: o[:, -t:, :].float() @ self._on("u", k, o.device) for k, o in outs.items()
        }

    def check(self) -> None:
        """Raise :class:`NoOpEditError` if the model ran inside the block but no position was
        edited (a forward the plan never reached, or positions that never occurred)."""
        st = self.state
        if st.forwards == 0 and st.block_calls == 0:
            return  # the model never ran: nothing was expected to change
        if st.edited_positions > 0:
            return
        where = f"mode={self.mode!r}, positions={self.positions!r}, layers={self.layers}"
        if st.block_calls == 0:
            cause = (
                f"the model ran {st.forwards} forward(s) but blocks {self.layers} never did: "
                "a forward stopped before them (e.g. recording a shallower layer), so the edit "
                "cannot change anything; steer a layer at or below the deepest one you read"
            )
        elif self.positions == "generated":
            cause = (
                f"{st.forwards} forward(s) ran and none continued a filled KV cache "
                f"({st.decoding_steps} decoding steps seen): 'generated' edits only tokens "
                "produced by generate(..., max_new_tokens>=2, use_cache=True); for a single "
                "forward (log-probabilities, recording) use positions='prompt' or 'all'. If "
                "generate did run, this transformers release passes the cache in a way "
                "steerlens does not see: please report it with the transformers version"
            )
        elif self.positions == "prompt":
            cause = (
                f"all {st.forwards} forward(s) continued a filled KV cache, so none was a "
                "prompt pass: use positions='all' or 'generated' for cached continuations"
            )
        else:
            cause = f"{st.block_calls} block call(s) ran and none was edited"
        raise NoOpEditError(f"the edit changed nothing ({where}): {cause}")


def make_plan(
    lm: LoadedModel,
    vector: SteeringVector | Mapping[int, torch.Tensor] | torch.Tensor,
    alpha: float = 1.0,
    layers: int | Sequence[int] | str | None = None,
    mode: Mode = "add",
    *,
    positions: Positions = "all",
    base: LoadedModel | float | Mapping[int, float] | None = None,
) -> EditPlan:
    """Validate the arguments of :func:`steerlens.steer` and build the :class:`EditPlan`
    (same checks and messages as the HF path)."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}: use one of {MODES}")
    if positions not in ("all", "prompt", "generated"):
        raise ValueError(f"unknown positions {positions!r}: use 'all', 'prompt' or 'generated'")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha):
        raise ValueError(f"alpha={alpha!r}: the steering strength must be a finite number")
    if lm.site_paths is not None and layers is not None:
        layers = resolve_module_sites(layers, lm.site_paths)  # "layers.1" on a torch module
    dirs = resolve_directions(vector, layers, lm.n_layers)
    d = lm.hidden_size
    vecs: dict[int, torch.Tensor] = {}
    units: dict[int, torch.Tensor] = {}
    for layer, v in dirs.items():
        if v.shape[-1] != d:
            raise ValueError(
                f"hidden size mismatch: the vector at layer {layer} has d={v.shape[-1]} but the "
                f"model has d={d}; extract the vector from this model's base"
            )
        vf = v.detach().to("cpu", torch.float32)
        if not torch.isfinite(vf).all():
            raise ValueError(
                f"the vector at layer {layer} holds NaN or inf: re-extract it (or drop that layer)"
            )
        n = vf.norm()
        vecs[layer] = vf
        units[layer] = vf / n if n > 0 else vf
    check_nonzero(vecs)  # in every mode: a zero direction edits nothing (names the layer)
    fixed: dict[int, float] = {}
    base_lm: LoadedModel | None = None
    if mode == "replace":
        if base is None:
            raise ValueError("mode='replace' needs base=: the base model, or its projection(s)")
        if isinstance(base, (int, float)):
            fixed = {k: float(base) for k in dirs}
        elif isinstance(base, Mapping):
            fixed = {k: float(base[k]) for k in dirs}
        elif isinstance(base, LoadedModel):
            base_lm = base
            check_same_shape(lm, base_lm, ("model", "base"))
        else:
            raise TypeError(
                f"base= must be a model, a number or a per-layer dict, got {type(base).__name__}"
            )
    return EditPlan(mode, float(alpha), positions, vecs, units, fixed, base_lm)


def block_output(output: Any) -> torch.Tensor:
    """The hidden states of a decoder block's output (a tensor, or the first of a tuple)."""
    return output[0] if isinstance(output, tuple) else output


def with_block_output(output: Any, h: torch.Tensor) -> Any:
    """``output`` with its hidden states replaced by ``h`` (tuple structure kept)."""
    return (h, *output[1:]) if isinstance(output, tuple) else h
