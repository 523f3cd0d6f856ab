"""The backend protocol, and the one recording loop every backend runs through.

A backend runs one model object (an HF module with torch hooks, an nnsight envoy, a
TransformerLens bridge) and offers:

- ``record_batch(ids, mask, pos, layers, weights)``: one forward pass, stopped after the deepest
  requested block, returning for each layer ℓ the per-prompt mean hˡ(x) = Σ_t w[x, t] hˡ(x)_t
  over the selected positions (``weights`` None: the last position). The reduction happens
  inside the backend, so a remote backend ships back (B, d) rows, not (B, T, d) tensors.
- ``can_share_prefix()`` and ``record_shared(encs, idx, p, layers, position)``: the same means
  for prompts sharing their first ``p`` tokens, the prefix run once (HF only; the others
  answer False).
- ``steer(plan)``: a context manager inside which every forward of the model (plain calls,
  ``generate``, recording) applies the :class:`~steerlens.runtime.edits.EditPlan` at the plan's
  layers, and which yields the :class:`~steerlens.loading.models.LoadedModel` to run.
- ``split_after(layer)``: the model's forward cut after block ℓ (:class:`SplitForward`: the
  blocks up to ℓ once, then the blocks above on many edited copies of the residual stream, the
  carry test's batched conditions), or None where the backend cannot reproduce the model's own
  forward that way (HF only, Llama family, no hooks; the others answer None and callers run
  whole forwards under ``steer``).

The edit formulas are DESIGN.md "Hook modes" (:mod:`steerlens.runtime.edits`). :func:`record_with` is
the loop of :func:`steerlens.record_activations` for every backend.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from tqdm.auto import tqdm

from steerlens.core.common import tqdm_disable
from steerlens.inputs.prompts import EncodedPrompt, PositionSpec, PromptLike, pad_batch
from steerlens.loading.models import LoadedModel
from steerlens.runtime.backends.forward import reduce_positions
from steerlens.runtime.batching import (
    Accumulator,
    Activations,
    position_weights,
    prefix_batches,
    prepare,
)
from steerlens.runtime.edits import EditPlan

__all__ = [
    "After",
    "Backend",
    "NoPrefixSharing",
    "NoSplitForward",
    "Residual",
    "SplitForward",
    "record_with",
    "reduce_positions",
]

#: an edit of the residual stream after block i of an upper pass: ``after(i, h) -> h``
After = Callable[[int, torch.Tensor], torch.Tensor]


@dataclass
class Residual:
    """The residual stream after block ℓ of one prompt batch (:meth:`SplitForward.lower`): the
    shared prefix's ``head`` (1, p, d) or None (``p`` = 0), the (tail) residual ``h`` (B, W, d),
    the attention ``mask`` over [prefix | tail] (B, p + W) and the positions ``pos`` of ``h``."""

    p: int
    head: torch.Tensor | None
    h: torch.Tensor
    mask: torch.Tensor
    pos: torch.Tensor


@runtime_checkable
class SplitForward(Protocol):
    """A model's forward cut after block ``layer`` (:meth:`Backend.split_after`): the blocks up
    to ``layer`` run once per prompt batch, the blocks above as often as there are edits of the
    residual stream between them. Equal to the whole forward up to float rounding."""

    layer: int

    def lower(self, encs: Sequence[EncodedPrompt], idx: Sequence[int], p: int) -> Residual:
        """Blocks 0..ℓ on prompts ``idx`` of ``encs``, their first ``p`` tokens (shared) run
        once (``p`` = 0: no shared prefix)."""
        ...

    def upper_prefix(self, head: torch.Tensor, after: After | None, repeat: int) -> Any:
        """Blocks ℓ+1.. on g edited copies ``head`` (g, p, d) of a shared prefix; returns what
        :meth:`upper_logits` continues from (a KV cache), each of its g rows repeated
        ``repeat`` times (the tails' rows are laid out condition-major)."""
        ...

    def upper_logits(
        self,
        h: torch.Tensor,
        mask: torch.Tensor,
        pos: torch.Tensor,
        prefix: Any = None,
        after: After | None = None,
    ) -> torch.Tensor:
        """(R, V) float32 next-token logits at the last position: blocks ℓ+1.. (each output
        passed through ``after``), the final norm and the lm_head on the residual ``h``
        (R, W, d), continuing ``prefix`` (from :meth:`upper_prefix`) when given."""
        ...


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

    def can_share_prefix(self) -> bool:
        """Whether :meth:`record_shared` may be used on this model now."""
        ...

    def record_shared(
        self,
        encs: Sequence[EncodedPrompt],
        idx: Sequence[int],
        p: int,
        layers: Sequence[int],
        position: PositionSpec,
    ) -> dict[int, torch.Tensor]:
        """As :meth:`record_batch` for prompts ``idx`` sharing their first ``p`` tokens."""
        ...

    def steer(self, plan: EditPlan) -> AbstractContextManager[LoadedModel]:
        """Apply ``plan`` to every forward of the model inside the block."""
        ...

    def split_after(self, layer: int) -> SplitForward | None:
        """The forward cut after block ``layer``, or None where this backend cannot reproduce
        the model's own forward that way now (then run whole forwards, e.g. under ``steer``)."""
        ...


class NoPrefixSharing:
    """The prefix-sharing half of :class:`Backend` for runtimes that do not share prompt
    prefixes (nnsight, TransformerLens): the one loop then runs plain batches (same numbers)."""

    name: str

    def can_share_prefix(self) -> bool:
        return False

    def record_shared(
        self,
        encs: Sequence[EncodedPrompt],
        idx: Sequence[int],
        p: int,
        layers: Sequence[int],
        position: PositionSpec,
    ) -> dict[int, torch.Tensor]:
        raise NotImplementedError(f"{self.name} does not share prompt prefixes: use record_batch")


class NoSplitForward:
    """The split-forward half of :class:`Backend` for runtimes that run whole forwards only
    (nnsight, TransformerLens, plain torch modules): callers loop over conditions under
    ``steer`` instead (same numbers)."""

    def split_after(self, layer: int) -> SplitForward | None:
        return None


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
    share_prefix: bool | None = None,
) -> Activations:
    """:func:`steerlens.record_activations` through ``backend``: the one recording loop.

    ``means[ℓ] = (1/|X|) Σ_x hˡ(x)``, hˡ(x) the mean over the selected positions of x
    (DESIGN.md "Directions"), summed in float64 and returned as float32; rows on request.
    Prompts are batched by length (or by shared prefix, where the backend allows it and
    ``share_prefix`` is not False) with left padding, so every backend sees the same token ids,
    masks and position ids. ``meta`` records the model, its fingerprint, the backend and the
    token positions a shared prefix saved.
    """
    lm = backend.lm
    layer_ids, encs = prepare(lm, prompts, layers, position)
    acc = Accumulator(layer_ids, len(encs), lm.hidden_size, keep_rows, rows_dtype)
    device = backend.input_device()
    share = backend.can_share_prefix() if share_prefix is None else bool(share_prefix)
    shared = 0
    with torch.inference_mode():
        batches = prefix_batches(encs, batch_size, share=share)
        for idx, p in tqdm(batches, desc=desc, disable=tqdm_disable(progress), leave=False):
            acc.n_tokens += sum(len(encs[i]) for i in idx)
            if p:
                shared += p * (len(idx) - 1)
                acc.add(idx, backend.record_shared(encs, idx, p, layer_ids, position))
                continue
            ids, mask, pos = pad_batch([encs[i] for i in idx], lm.tokenizer.pad_token_id, device)
            w = position_weights(encs, idx, ids.shape[1], position)
            acc.add(idx, backend.record_batch(ids, mask, pos, layer_ids, w))
    meta = {
        "model": lm.name,
        "fingerprint": lm.fingerprint,
        "backend": backend.name,
        "shared_prefix_tokens": shared,
        "tokenization": lm.tokenization,
    }
    return acc.result(position, meta)
