"""Many edits of one layer in batched forwards: the carry test's random-direction nulls at a
bounded cost (issue 12).

A null condition of the carry test edits the residual stream after one block ℓ and nothing
else: sufficiency adds a_k = α·‖v_ℓ‖·r̂_k (h ← h + a_k at every position), necessity projects a
random unit direction out (h ← h − (h·r̂_k) r̂_k). Blocks 0..ℓ therefore see the same inputs in
every condition, so :class:`LayerConditions` runs them **once** per layer and prompt set and
keeps h_ℓ; each condition then runs blocks ℓ+1.. only, on its own edited copy, with many
conditions side by side in one forward (row = condition × prompt, a different direction per
row group). A prompt prefix shared by a batch (the chat template's system turn) runs once below
ℓ and once per condition above ℓ, as the unbatched path (:func:`steerlens.measures.behavior.
answer_logprobs`) does. Only the last position goes through the lm_head. A condition may also
edit the residual stream after blocks above ℓ (necessity's joint ablation over the grid
layers, ℓ the lowest of them): those edits are applied between the upper blocks, per row group.

The model runs through its backend's :meth:`~steerlens.runtime.backends.protocol.Backend.split_after`
(:class:`~steerlens.runtime.backends.protocol.SplitForward`: ``lower`` once, ``upper_prefix`` /
``upper_logits`` per condition group); this module only lays out the rows and the edits.
Equal to running each condition under :func:`steerlens.runtime.intervene.steer` up to float rounding
(``tests/test_carry_batched.py``). Used where the backend offers the split (the plain HF
backend, an architecture of :data:`steerlens.runtime.backends.upper.UPPER_FORWARD_TYPES`, no hook on the
model) and the behavior is scored from next-token log-probabilities; elsewhere the carry test
loops over conditions under ``steer``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from steerlens.inputs.prompts import PromptLike
from steerlens.loading.models import LoadedModel
from steerlens.measures.behavior import answer_encodings
from steerlens.runtime.backends import backend_for
from steerlens.runtime.backends.protocol import After, Residual, SplitForward
from steerlens.runtime.batching import prefix_batches

Edit = Literal["add", "project_out"]

#: token rows (condition × prompt × position) one upper forward holds at most: on a 2-core CPU
#: 2048–4096 ran a condition 1.2–4× faster than the unbatched loop (layers 3 and 15 of SmolLM2),
#: 16384 ran it up to 2× *slower* at low layers (the activations outgrow the caches)
MAX_TOKENS = 4096

__all__ = ["MAX_TOKENS", "Edit", "LayerConditions", "can_batch_layer"]


def can_batch_layer(lm: LoadedModel, layer: int) -> bool:
    """Whether :class:`LayerConditions` reproduces ``lm``'s forward for edits after ``layer``
    (its backend offers :meth:`~steerlens.runtime.backends.protocol.Backend.split_after` there now)."""
    return backend_for(lm).split_after(layer) is not None


@dataclass
class _Cached:
    """One prompt batch (prompts ``idx``) after block ℓ: its :class:`Residual`."""

    idx: list[int]
    res: Residual


def _edited(h: torch.Tensor, rows: torch.Tensor, edit: Edit, alpha: float) -> torch.Tensor:
    """``h`` (R, T, d) with row r edited by direction ``rows[r]``: + α·rows[r] (add) or minus
    its component along rows[r]/‖rows[r]‖ (project_out)."""
    r = rows.to(device=h.device, dtype=h.dtype)[:, None, :]
    if edit == "add":
        return h + alpha * r
    u = r / r.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return h - (h * u).sum(-1, keepdim=True) * u


class LayerConditions:
    """The residual stream after block ``layer`` on ``prompts``, computed once; then
    :meth:`logprobs` runs any number of edits of it through the blocks above.

    ``prompts`` are behavior prompts (cut at the first answer position, as
    :func:`steerlens.measures.behavior.answer_logprobs` cuts them); the result of each condition is the
    (n, V) float32 log-softmax of the next token there, in input order."""

    def __init__(
        self,
        lm: LoadedModel,
        prompts: Sequence[PromptLike],
        layer: int,
        *,
        batch_size: int = 32,
        max_tokens: int = MAX_TOKENS,
    ) -> None:
        backend = backend_for(lm)
        split = backend.split_after(layer)
        if split is None:
            raise ValueError(
                f"batched conditions after block {layer} need the plain HF backend of a "
                "Llama-family model with no hooks: loop over conditions under steer() instead"
            )
        self.split: SplitForward = split
        self.lm, self.layer, self.max_tokens = lm, int(layer), int(max_tokens)
        encs = answer_encodings(lm, prompts)
        self.n = len(encs)
        self.batches: list[_Cached] = []
        share = backend.can_share_prefix()
        with torch.inference_mode():
            # blocks 0..ℓ on each batch (a shared prefix once, then the tails attending to it)
            for idx, p in prefix_batches(encs, batch_size, share=share):
                self.batches.append(_Cached(idx, split.lower(encs, idx, p)))

    def logprobs(
        self,
        edit: Edit,
        directions: torch.Tensor,
        alpha: float = 1.0,
        above: Mapping[int, torch.Tensor] | None = None,
    ) -> Iterator[tuple[int, torch.Tensor]]:
        """Yield ``(k, (n, V) log-probabilities)`` for each row k of ``directions`` (K, d): the
        model with h_ℓ edited by row k (``edit``: + α·row, or the row's direction projected
        out), in order of k. ``above`` {layer > ℓ: (K, d)} edits the residual stream after
        those blocks too, row k of each in condition k (the joint edits of necessity)."""
        dirs = self._rows(directions, "directions")
        ups = {int(la): self._rows(d, f"above[{la}]") for la, d in (above or {}).items()}
        bad = [la for la, d in ups.items() if la <= self.layer or d.shape[0] != dirs.shape[0]]
        if bad:
            raise ValueError(
                f"above must map layers > {self.layer} to ({dirs.shape[0]}, d) directions; "
                f"layers {bad} do not"
            )
        if edit not in ("add", "project_out"):
            raise ValueError(f"edit must be 'add' or 'project_out', got {edit!r}")
        widest = max(b.res.mask.shape[0] * b.res.mask.shape[1] for b in self.batches)
        group = max(1, self.max_tokens // max(1, widest))
        for start in range(0, dirs.shape[0], group):
            sl = slice(start, start + group)
            block, block_up = dirs[sl], {la: d[sl] for la, d in ups.items()}
            rows: list[torch.Tensor | None] = [None] * self.n
            out = [list(rows) for _ in range(block.shape[0])]
            with torch.inference_mode():
                for b in self.batches:
                    lp = self._upper(b, block, block_up, edit, alpha)  # (g, B, V)
                    for g in range(block.shape[0]):
                        for r, i in enumerate(b.idx):
                            out[g][i] = lp[g, r]
            for g in range(block.shape[0]):
                yield start + g, torch.stack([t for t in out[g] if t is not None])

    def _rows(self, directions: torch.Tensor, name: str) -> torch.Tensor:
        dirs = torch.as_tensor(directions).float()
        if dirs.ndim != 2 or dirs.shape[1] != self.lm.hidden_size:
            raise ValueError(f"{name} must be (K, {self.lm.hidden_size}), got {tuple(dirs.shape)}")
        return dirs

    def _upper(
        self,
        b: _Cached,
        block: torch.Tensor,
        block_up: Mapping[int, torch.Tensor],
        edit: Edit,
        alpha: float,
    ) -> torch.Tensor:
        """(g, B, V) log-probabilities of batch ``b`` under the g edits of ``block`` (and of
        ``block_up`` after the blocks above)."""
        res, g, n_rows = b.res, block.shape[0], len(b.idx)
        prefix = None
        if res.head is not None:
            head = _edited(res.head.expand(g, -1, -1), block, edit, alpha)
            prefix = self.split.upper_prefix(head, _after(block_up, 1, edit, alpha), n_rows)
        h = _edited(res.h.repeat(g, 1, 1), block.repeat_interleave(n_rows, 0), edit, alpha)
        after = _after(block_up, n_rows, edit, alpha)
        mask, pos = res.mask.repeat(g, 1), res.pos.repeat(g, 1)
        logits = self.split.upper_logits(h, mask, pos, prefix, after)
        if not torch.isfinite(logits).all():
            raise FloatingPointError(
                "non-finite logits at the answer position: check the model's dtype and the "
                "steering strength"
            )
        return torch.log_softmax(logits, dim=-1).reshape(g, n_rows, -1).cpu()


def _after(
    block_up: Mapping[int, torch.Tensor], n_rows: int, edit: Edit, alpha: float
) -> After | None:
    """The edit after each block of ``block_up`` (its g rows repeated ``n_rows`` times, as the
    batch's rows are laid out condition-major), or None when there is none."""
    if not block_up:
        return None
    per_row = {la: d.repeat_interleave(n_rows, 0) for la, d in block_up.items()}

    def after(i: int, h: torch.Tensor) -> torch.Tensor:
        return _edited(h, per_row[i], edit, alpha) if i in per_row else h

    return after
