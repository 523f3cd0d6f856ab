"""Prompts into batches: tokenize and validate, group by length or shared prefix, weight the
selected positions, and accumulate per-prompt means (DESIGN.md "Directions", "position").

No model runs here: the backends (:mod:`steerlens.runtime.backends`) execute the batches this module
plans, and :class:`Accumulator` turns their (B, d) per-prompt means into :class:`Activations`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from steerlens.core.sites import SITE_TEMPLATE, resolve_layers
from steerlens.inputs.prompts import (
    EncodedPrompt,
    PositionSpec,
    PromptLike,
    check_prompts,
    encode,
    position_indices,
    position_name,
)
from steerlens.loading.models import LoadedModel

#: a block output (B, T, d) -> what to keep of it (e.g. the (B, d) per-prompt position means)
Reducer = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class Activations:
    """Per-layer mean activations (float32) and, if kept, per-prompt rows in input order."""

    layers: list[int]
    means: dict[int, torch.Tensor]
    n: int
    position: str
    rows: dict[int, torch.Tensor] | None = None
    n_tokens: int = 0
    site: str = SITE_TEMPLATE
    meta: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, layer: int) -> torch.Tensor:
        return self.means[layer]

    def stack(self) -> torch.Tensor:
        """Means as one (n_layers_recorded, d) tensor, in ``self.layers`` order."""
        return torch.stack([self.means[layer] for layer in self.layers])

    def row_matrix(self, layer: int) -> torch.Tensor:
        if self.rows is None:
            raise ValueError("rows were not kept: call record_activations(..., keep_rows=True)")
        return self.rows[layer]


def length_batches(encs: Sequence[EncodedPrompt], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length (longest first), so little padding is
    computed and an out-of-memory shows on the first batch."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = sorted(range(len(encs)), key=lambda i: (-len(encs[i]), i))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


MIN_SHARED_PREFIX = 8


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def shared_prefix_len(
    seqs: Sequence[Sequence[int]], cap: int, min_prefix: int = MIN_SHARED_PREFIX
) -> int:
    """How many leading tokens all of ``seqs`` share, at most ``cap`` (0 for fewer than two
    sequences or below ``min_prefix``)."""
    if len(seqs) < 2:
        return 0
    p = min(cap, *(_common_prefix(seqs[0], s) for s in seqs))
    return p if p >= min_prefix else 0


def prefix_batches(
    encs: Sequence[EncodedPrompt],
    batch_size: int,
    min_prefix: int = MIN_SHARED_PREFIX,
    *,
    share: bool = True,
) -> list[tuple[list[int], int]]:
    """Batches ``(indices, p)`` where the prompts of a batch share their first ``p`` tokens
    (``p >= min_prefix``, or 0: no sharing), with at least one token of each prompt left after
    the prefix.

    Prompts are grouped by shared prefix (runs of the token-id-sorted prompts whose neighbours
    share ``min_prefix`` tokens, e.g. every prompt with the same system prompt), then
    length-batched within each group; prompts of groups too small to fill a quarter batch are
    batched together without sharing. Batches come longest first, so an out-of-memory shows on
    the first one. ``share=False`` gives plain :func:`length_batches` with ``p = 0``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not share:
        return [(idx, 0) for idx in length_batches(encs, batch_size)]
    if not encs:
        return []
    order = sorted(range(len(encs)), key=lambda i: (encs[i].input_ids, i))
    groups, cur = [], [order[0]]
    for a, b in itertools.pairwise(order):
        if _common_prefix(encs[a].input_ids, encs[b].input_ids) >= min_prefix:
            cur.append(b)
        else:
            groups.append(cur)
            cur = [b]
    groups.append(cur)
    small = max(2, batch_size // 4)
    pool = [i for g in groups if len(g) < small for i in g]
    out: list[tuple[list[int], int]] = []
    for g in [g for g in groups if len(g) >= small]:
        for batch in length_batches([encs[i] for i in g], batch_size):
            idx = [g[j] for j in batch]
            cap = min(len(encs[i]) for i in idx) - 1  # a token of each prompt after the prefix
            out.append((idx, shared_prefix_len([encs[i].input_ids for i in idx], cap, min_prefix)))
    if pool:
        sub = [encs[i] for i in pool]
        out += [([pool[j] for j in batch], 0) for batch in length_batches(sub, batch_size)]
    out.sort(key=lambda t: (-max(len(encs[i]) for i in t[0]), t[0][0]))
    return out


def position_weights(
    encs: Sequence[EncodedPrompt], idx: Sequence[int], width: int, position: PositionSpec
) -> torch.Tensor | None:
    """(B, width) averaging weights over each prompt's selected positions, or None for 'last'
    (the final column, thanks to left padding)."""
    if position == "last" and all(e.response_start == len(e) for e in (encs[i] for i in idx)):
        return None
    w = torch.zeros(len(idx), width)
    for row, i in enumerate(idx):
        e = encs[i]
        sel = position_indices(e, position, i)
        offset = width - len(e)
        w[row, [offset + j for j in sel]] = 1.0 / len(sel)
    return w


def prepare(
    lm: LoadedModel,
    prompts: Sequence[PromptLike],
    layers: int | Sequence[int] | str,
    position: PositionSpec,
) -> tuple[list[int], list[EncodedPrompt]]:
    """Resolve the layers and tokenize the prompts, validating every position mask before any
    compute."""
    items = check_prompts(prompts, "record_activations")
    layer_ids = resolve_layers(layers, lm.n_layers)
    encs = [encode(lm.tokenizer, p) for p in items]
    for i, e in enumerate(encs):
        if len(e) == 0:
            raise ValueError(f"prompt {i} tokenizes to no tokens")
        position_indices(e, position, i)
    check_context(lm, encs)
    return layer_ids, encs


def context_length(lm: LoadedModel) -> int | None:
    """The most positions the model takes (``max_position_embeddings`` or ``n_positions`` of
    its config), or None when the config does not say."""
    cfg = getattr(lm.model, "config", None)
    for name in ("max_position_embeddings", "n_positions", "n_ctx"):
        val = getattr(cfg, name, None)
        if isinstance(val, int) and val > 0:
            return val
    return None


def check_context(lm: LoadedModel, encs: Sequence[EncodedPrompt], what: str = "prompt") -> None:
    """Refuse a prompt longer than the model's context, naming it (before any compute)."""
    limit = context_length(lm)
    if limit is None:
        return
    for i, e in enumerate(encs):
        if len(e) > limit:
            raise ValueError(
                f"{what} {i} is {len(e)} tokens, longer than the model's context of {limit}: "
                "shorten it or split it"
            )


class Accumulator:
    """Running float64 sums of per-prompt means per layer (and the rows, on request), with a
    check that every value is finite."""

    def __init__(
        self, layers: Sequence[int], n: int, d: int, keep_rows: bool, rows_dtype: torch.dtype
    ) -> None:
        self.layers = list(layers)
        self.n = n
        self.sums = {layer: torch.zeros(d, dtype=torch.float64) for layer in self.layers}
        self.rows = (
            {layer: torch.empty(n, d, dtype=rows_dtype) for layer in self.layers}
            if keep_rows
            else None
        )
        self.n_tokens = 0

    def add(self, idx: Sequence[int], per_layer: Mapping[int, torch.Tensor]) -> None:
        """Add the (B, d) per-prompt means of the prompts ``idx`` (input order indices)."""
        for layer in self.layers:
            per = per_layer[layer].float()
            if not torch.isfinite(per).all():
                bad = [idx[r] for r in range(len(idx)) if not torch.isfinite(per[r]).all()]
                raise FloatingPointError(
                    f"non-finite activations at layer {layer} for prompts {bad[:10]}: "
                    "check the model weights and dtype (float16 overflows; try float32 "
                    "or bfloat16)"
                )
            self.sums[layer] += per.sum(0, dtype=torch.float64).cpu()
            if self.rows is not None:
                self.rows[layer][torch.tensor(idx)] = per.to("cpu", self.rows[layer].dtype)

    def result(self, position: PositionSpec, meta: dict[str, Any]) -> Activations:
        means = {layer: (s / self.n).float() for layer, s in self.sums.items()}
        return Activations(
            layers=self.layers,
            means=means,
            n=self.n,
            position=position_name(position),
            rows=self.rows,
            n_tokens=self.n_tokens,
            meta=meta,
        )


def in_input_order(batches: Iterable[tuple[Sequence[int], torch.Tensor]]) -> torch.Tensor:
    """The rows of ``(prompt indices, rows)`` batches (from :func:`prefix_batches`' order)
    stacked back in prompt order."""
    rows: dict[int, torch.Tensor] = {}
    for idx, batch in batches:
        for r, i in enumerate(idx):
            rows[i] = batch[r]
    return torch.stack([rows[i] for i in range(len(rows))])
