"""The backend protocol: record the residual stream, and steer / project out / replace it.

A backend runs one model object (an HF module with torch hooks, an nnsight envoy, a
TransformerLens bridge) and offers two operations:

- ``record_batch(ids, mask, pos, layers, weights)``: one forward pass, stopped after the deepest
  requested block, returning for each layer ℓ the per-prompt mean hˡ(x) = Σ_t w[x, t] hˡ(x)_t
  over the selected positions (``weights`` None: the last position). The reduction happens
  inside the backend, so a remote backend ships back (B, d) rows, not (B, T, d) tensors.
- ``steer(plan)``: a context manager inside which every forward of the model (plain calls,
  ``generate``, recording) applies the :class:`EditPlan` at the plan's layers, and which
  yields the :class:`~steerlens.models.LoadedModel` to run.

The edit formulas are DESIGN.md "Hook modes", the same functions as
:mod:`steerlens.intervene` (add h ← h + αv; project out h ← h − (h·v̂)v̂; replace
h ← h − (h·v̂)v̂ + (h_base·v̂)v̂). :func:`record_with` is the batching / position-averaging
loop of :func:`steerlens.activations.record_activations` on top of any backend.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch
from tqdm.auto import tqdm

from steerlens.activations import (
    Accumulator,
    Activations,
    length_batches,
    position_weights,
    prepare,
    truncated_forward,
)
from steerlens.common import tqdm_disable
from steerlens.hf_compat import past_length
from steerlens.intervene import (
    MODES,
    Mode,
    Positions,
    add_vector,
    project_out,
    replace_component,
    resolve_directions,
)
from steerlens.models import LoadedModel, as_model, check_same_shape
from steerlens.prompts import (
    PositionSpec,
    PromptLike,
    pad_batch,
)
from steerlens.vectors import SteeringVector


@runtime_checkable
class Backend(Protocol):
    """What steerlens needs from a model runtime (see the module doc)."""

    name: str
    lm: LoadedModel

    def input_device(self) -> torch.device:
        """Where input ids go (the embedding's device; CPU for a remote model)."""
        ...

    def record_batch(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        layers: Sequence[int],
        weights: torch.Tensor | None,
    ) -> dict[int, torch.Tensor]:
        """{layer: (B, d) float32} per-prompt position means, one forward stopped early."""
        ...

    def steer(self, plan: EditPlan) -> AbstractContextManager[LoadedModel]:
        """Apply ``plan`` to every forward of the model inside the block."""
        ...


def reduce_positions(h: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """(B, d) float32: ``h[:, -1]`` for ``weights`` None (left padding puts every prompt's last
    token there), else Σ_t w[b, t] h[b, t] (the same einsum as the HF recording loop)."""
    if weights is None:
        return h[:, -1, :].float()
    return torch.einsum("bt,btd->bd", weights.to(device=h.device, dtype=torch.float32), h.float())


# ------------------------------------------------------------------------------ recording


def record_with(
    backend: Backend,
    prompts: Sequence[PromptLike],
    layers: int | Sequence[int] | str = "all",
    position: PositionSpec = "last",
    *,
    batch_size: int = 32,
    keep_rows: bool = False,
    rows_dtype: torch.dtype = torch.float32,
    progress: bool | None = None,
    desc: str = "record",
) -> Activations:
    """:func:`steerlens.activations.record_activations` through ``backend``.

    ``means[ℓ] = (1/|X|) Σ_x hˡ(x)``, hˡ(x) the mean over the selected positions of x
    (DESIGN.md "Directions"), summed in float64 and returned as float32; rows on request.
    Prompts are batched by length with left padding, exactly as the HF path batches them, so
    every backend sees the same token ids, masks and position ids.
    """
    lm = backend.lm
    layer_ids, encs = prepare(lm, prompts, layers, position)
    acc = Accumulator(layer_ids, len(encs), lm.hidden_size, keep_rows, rows_dtype)
    device = backend.input_device()
    disable = tqdm_disable(progress)
    with torch.inference_mode():
        for idx in tqdm(length_batches(encs, batch_size), desc=desc, disable=disable, leave=False):
            ids, mask, pos = pad_batch([encs[i] for i in idx], lm.tokenizer.pad_token_id, device)
            acc.n_tokens += int(mask.sum())
            w = position_weights(encs, idx, ids.shape[1], position)
            acc.add(idx, backend.record_batch(ids, mask, pos, layer_ids, w))
    meta = {"model": lm.name, "fingerprint": lm.fingerprint, "backend": backend.name}
    return acc.result(position, meta)


# -------------------------------------------------------------------------------- editing


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
    register :meth:`pre_hook` on the HF module so ``positions`` and a base model's
    projections follow the KV cache, as in :mod:`steerlens.intervene`.
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

    def pre_hook(self, _mod: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        """Forward pre-hook (``with_kwargs=True``) on the HF module: tracks decoding steps and
        computes the base model's projections h_base·v̂ on the same tokens (replace mode).

        A decoding step is told from a prefill by what the forward is given
        (:func:`steerlens.hf_compat.past_length`: a filled KV cache under any keyword, or an
        attention mask reaching before the input ids), not by a keyword's name."""
        past = past_length(args, kwargs)
        self.state.decoding = past > 0
        self.state.forwards += 1
        self.state.decoding_steps += int(past > 0)
        if self.base is None:
            return
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is None:
            raise ValueError("replace mode with a base model needs input_ids (not inputs_embeds)")
        st = self.state
        st.full_ids = ids if past == 0 or st.full_ids is None else torch.cat([st.full_ids, ids], 1)
        full = st.full_ids
        mask = kwargs.get("attention_mask")
        if mask is None or mask.shape[-1] != full.shape[-1]:
            mask = torch.ones_like(full)
        pos = (mask.long().cumsum(-1) - 1).clamp(min=0)
        base_dev = self.base.device
        with torch.inference_mode():
            outs = truncated_forward(
                self.base, full.to(base_dev), mask.to(base_dev), pos.to(base_dev), self.layers
            )
        t = ids.shape[1]
        st.base_proj = {
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
    base: Any = None,
) -> EditPlan:
    """Validate the arguments of :func:`steerlens.steer` and build the :class:`EditPlan`
    (same checks and messages as the HF path)."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}: use one of {MODES}")
    if positions not in ("all", "prompt", "generated"):
        raise ValueError(f"unknown positions {positions!r}: use 'all', 'prompt' or 'generated'")
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
        n = vf.norm()
        if mode != "add" and n == 0:
            raise ValueError(f"zero vector at layer {layer}: cannot project it out")
        vecs[layer] = vf
        units[layer] = vf / n if n > 0 else vf
    fixed: dict[int, float] = {}
    base_lm: LoadedModel | None = None
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
    return EditPlan(mode, float(alpha), positions, vecs, units, fixed, base_lm)


def block_output(output: Any) -> torch.Tensor:
    """The hidden states of a decoder block's output (a tensor, or the first of a tuple)."""
    return output[0] if isinstance(output, tuple) else output


def with_block_output(output: Any, h: torch.Tensor) -> Any:
    """``output`` with its hidden states replaced by ``h`` (tuple structure kept)."""
    return (h, *output[1:]) if isinstance(output, tuple) else h
