"""Record residual-stream activations: batched, left-padding safe, stopped after the deepest
requested block, never computing the lm_head.

For layer ℓ and position set P (DESIGN.md "Directions"), hˡ(x) is the mean over P of the site's
activation on input x; :func:`record_activations` returns mean_x hˡ(x) per layer (a float32
running sum, so memory does not grow with the prompt count) and, on request, the per-prompt rows
hˡ(x).
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
from tqdm.auto import tqdm

from steerlens.common import tqdm_disable
from steerlens.hf_compat import cache_kwargs
from steerlens.models import LoadedModel, as_model
from steerlens.prompts import (
    EncodedPrompt,
    PositionSpec,
    PromptLike,
    check_prompts,
    encode,
    pad_batch,
    position_indices,
    position_name,
)
from steerlens.sites import SITE_TEMPLATE, resolve_layers


class StopForward(Exception):
    """Raised by the hook on the deepest requested block to end the forward pass early."""


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


Reducer = Callable[[torch.Tensor], torch.Tensor]
T = TypeVar("T")


@contextmanager
def capture_blocks(
    lm: LoadedModel,
    layers: Sequence[int],
    *,
    stop_after_deepest: bool = True,
    reduce: Reducer | Mapping[int, Reducer] | None = None,
) -> Iterator[dict[int, torch.Tensor]]:
    """Within the block, forwards of ``lm`` store each requested block's output (the residual
    stream after it) in the yielded dict; with ``stop_after_deepest`` the forward raises
    :class:`StopForward` right after the deepest one (use :func:`truncated_forward`). With
    ``reduce`` the hook stores ``reduce(output)`` instead (e.g. the per-prompt position mean,
    shape (B, d)), so the full (B, T, d) outputs of many layers are never held at once; a
    mapping gives one reducer per layer. The hooks are removed on exit, also after an
    exception."""
    blocks = lm.layout.blocks
    store: dict[int, torch.Tensor] = {}
    deepest = max(layers)
    handles = []

    def make_hook(layer: int) -> Any:
        fn = reduce.get(layer) if isinstance(reduce, Mapping) else reduce

        def hook(_mod: torch.nn.Module, _args: Any, output: Any) -> None:
            h = output[0] if isinstance(output, tuple) else output
            store[layer] = h if fn is None else fn(h)
            if stop_after_deepest and layer == deepest:
                raise StopForward

        return hook

    try:
        for layer in layers:
            handles.append(blocks[layer].register_forward_hook(make_hook(layer)))
        yield store
    finally:
        for h in handles:
            h.remove()


def truncated_forward(
    lm: LoadedModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    position_ids: torch.Tensor,
    layers: Sequence[int],
    *,
    reduce: Reducer | Mapping[int, Reducer] | None = None,
    cache: Any = None,
) -> dict[int, torch.Tensor]:
    """One forward pass that stops after the deepest of ``layers``; returns their outputs
    (passed through ``reduce`` as each block finishes, if given). With ``cache`` (a KV
    cache of a shared prefix) the cache is extended in place."""
    with capture_blocks(lm, layers, reduce=reduce) as store, contextlib.suppress(StopForward):
        lm.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            **cache_kwargs(lm.model, cache),
        )
    missing = [layer for layer in layers if layer not in store]
    if missing:
        raise RuntimeError(f"blocks {missing} did not run during the forward pass")
    return dict(store)


def length_batches(encs: Sequence[EncodedPrompt], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length (longest first), so little padding is
    computed and an out-of-memory shows on the first batch."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = sorted(range(len(encs)), key=lambda i: (-len(encs[i]), i))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


# Architectures whose KV cache and mask handling the shared-prefix path is tested on.
SHARED_PREFIX_TYPES = ("llama", "mistral", "qwen2", "qwen3")
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


POSITION_WISE = "steerlens_position_wise"


def mark_position_wise(fn: T) -> T:
    """Mark a hook as acting on each position alone, the same in every forward pass (a
    ``steer`` edit at all positions with no base model): such hooks give the same result when
    a shared prefix runs in a separate pass."""
    setattr(fn, POSITION_WISE, True)
    return fn


# transformers installs these recorders for ``output_hidden_states``/``output_attentions`` on
# first use and leaves them in place; they only record, so they do not block prefix sharing
_PASSIVE_HOOK_MODULES = ("transformers.utils.output_capturing",)


def _is_safe_hook(fn: Any) -> bool:
    return bool(getattr(fn, POSITION_WISE, False)) or (
        getattr(fn, "__module__", None) in _PASSIVE_HOOK_MODULES
    )


def has_hooks(lm: LoadedModel) -> bool:
    """Whether any module of the model has a forward (pre-)hook not marked with
    :func:`mark_position_wise` (the user's own hooks, a ``steer`` block on "prompt" positions
    or comparing with a base model). transformers' own output recorders do not count."""
    return any(
        not _is_safe_hook(fn)
        for m in lm.model.modules()
        for fn in (*m._forward_hooks.values(), *m._forward_pre_hooks.values())
    )


def can_share_prefix(lm: LoadedModel) -> bool:
    """The shared-prefix path is used on tested architectures, on the plain HF model, when no
    hook could tell the split passes apart (:func:`has_hooks`)."""
    return (
        lm.extra.get("backend") in (None, "hf")
        and getattr(lm.config, "model_type", None) in SHARED_PREFIX_TYPES
        and not has_hooks(lm)
    )


def shared_prefix_forward(
    lm: LoadedModel,
    encs: Sequence[EncodedPrompt],
    idx: Sequence[int],
    p: int,
    layers: Sequence[int],
    position: PositionSpec,
) -> dict[int, torch.Tensor]:
    """Per-prompt (B, d) float32 means over ``position`` at ``layers`` for prompts ``idx`` that
    share their first ``p`` tokens: the prefix runs once (batch 1) into a KV cache that is
    repeated over the batch, and only the rest of each prompt runs batched (left-padded after
    the prefix). Equal to the plain batched forward up to float rounding."""
    cache, prefix, ones = prefix_inputs(lm, encs, idx, p)
    head = truncated_forward(
        lm, prefix, ones, torch.arange(p, device=lm.device)[None], layers, cache=cache
    )
    cache.batch_repeat_interleave(len(idx))
    ids, full_mask, pos = tail_inputs(lm, encs, idx, p)
    b, width = ids.shape
    device = lm.device
    # weights over [prefix (p) | left-padded tail (width)]
    w = torch.zeros(b, p + width)
    for row, i in enumerate(idx):
        e = encs[i]
        sel = position_indices(e, position, i)
        offset = p + width - (len(e) - p)
        cols = [j if j < p else offset + j - p for j in sel]
        w[row, cols] = 1.0 / len(sel)
    w = w.to(device)
    w_head, w_tail = w[:, :p], w[:, p:]

    def reducer(layer: int) -> Reducer:
        h0 = head[layer][0].float()  # (p, d), the same for every prompt
        return lambda h: torch.einsum("bt,btd->bd", w_tail, h.float()) + w_head @ h0

    return truncated_forward(
        lm,
        ids,
        full_mask,
        pos,
        layers,
        reduce={layer: reducer(layer) for layer in layers},
        cache=cache,
    )


def prefix_inputs(
    lm: LoadedModel, encs: Sequence[EncodedPrompt], idx: Sequence[int], p: int
) -> tuple[Any, torch.Tensor, torch.Tensor]:
    """An empty KV cache, the shared prefix (1, p) and its attention mask."""
    from transformers import DynamicCache

    prefix = torch.tensor([encs[idx[0]].input_ids[:p]], dtype=torch.long, device=lm.device)
    return DynamicCache(config=lm.config), prefix, torch.ones_like(prefix)


def tail_inputs(
    lm: LoadedModel, encs: Sequence[EncodedPrompt], idx: Sequence[int], p: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Inputs of the tails of the prompts ``idx`` after their shared first ``p`` tokens:
    left-padded ids (B, W), the attention mask over [prefix | tails] (B, p + W) and the
    positions (B, W), counting on from the prefix."""
    tails = [EncodedPrompt(encs[i].input_ids[p:], 0, len(encs[i]) - p) for i in idx]
    ids, mask, pos = pad_batch(tails, lm.tokenizer.pad_token_id, lm.device)
    head = torch.ones(len(idx), p, dtype=mask.dtype, device=mask.device)
    return ids, torch.cat([head, mask], dim=1), pos + p


def shared_prefix_logits(
    lm: LoadedModel, encs: Sequence[EncodedPrompt], idx: Sequence[int], p: int, keep: int = 1
) -> torch.Tensor:
    """(B, keep, V) logits at the last ``keep`` columns of the left-padded tails of prompts
    ``idx``, which share their first ``p`` tokens: the prefix runs once into a KV cache
    repeated over the batch. Column ``keep - 1 - j`` is the prompt's ``j``-th token from the
    end if that token comes after the prefix, else padding. Hooks that
    :func:`can_share_prefix` accepts apply to both passes."""
    if any(len(encs[i]) <= p for i in idx):
        raise ValueError(f"every prompt needs a token after the {p}-token prefix")
    cache, prefix, ones = prefix_inputs(lm, encs, idx, p)
    kw = cache_kwargs(lm.model, cache)
    lm.model(
        input_ids=prefix,
        attention_mask=ones,
        position_ids=torch.arange(p, device=lm.device)[None],
        logits_to_keep=1,
        **kw,
    )
    cache.batch_repeat_interleave(len(idx))
    ids, mask, pos = tail_inputs(lm, encs, idx, p)
    out = lm.model(input_ids=ids, attention_mask=mask, position_ids=pos, logits_to_keep=keep, **kw)
    return out.logits[:, -keep:, :]


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


def _reducer(w: torch.Tensor | None, device: torch.device) -> Reducer:
    """(B, T, d) block output -> (B, d) float32 per-prompt means with weights ``w`` (from
    :func:`position_weights`; None: the last column). Always a fresh tensor, never a view that would
    keep the block output alive."""
    if w is None:
        return lambda h: h[:, -1, :].to(torch.float32, copy=True)
    w_dev = w.to(device=device, dtype=torch.float32)
    return lambda h: torch.einsum("bt,btd->bd", w_dev, h.float())


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
    return layer_ids, encs


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


def record_activations(
    model: Any,
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
    """Record mean activations of the residual stream after each requested block.

    ``means[ℓ] = (1/|X|) Σ_x hˡ(x)`` with hˡ(x) the mean over the selected positions of x
    (DESIGN.md "Directions"), accumulated in float64 and returned as float32. With
    ``keep_rows`` the per-prompt hˡ(x) are kept too, in input order, as ``rows_dtype``.

    ``share_prefix``: prompts that start with the same tokens (the same system prompt, say)
    run that prefix once per batch and reuse its KV cache (:func:`shared_prefix_forward`);
    None (default) does so where :func:`can_share_prefix` allows, False never. The results
    equal the plain path's up to float rounding; ``meta["shared_prefix_tokens"]`` counts the
    token positions not recomputed.
    """
    lm = as_model(model)
    if lm.extra.get("backend") not in (None, "hf"):
        from steerlens.backends import record_foreign

        return record_foreign(
            lm,
            prompts,
            layers,
            position,
            batch_size=batch_size,
            keep_rows=keep_rows,
            rows_dtype=rows_dtype,
            progress=progress,
            desc=desc,
        )
    layer_ids, encs = prepare(lm, prompts, layers, position)
    acc = Accumulator(layer_ids, len(encs), lm.hidden_size, keep_rows, rows_dtype)
    device = lm.device
    share = can_share_prefix(lm) if share_prefix is None else bool(share_prefix)
    batches = prefix_batches(encs, batch_size, share=share)
    shared = 0
    with torch.inference_mode():
        for idx, p in tqdm(batches, desc=desc, disable=tqdm_disable(progress), leave=False):
            acc.n_tokens += sum(len(encs[i]) for i in idx)
            if p:
                shared += p * (len(idx) - 1)
                acc.add(idx, shared_prefix_forward(lm, encs, idx, p, layer_ids, position))
                continue
            ids, mask, pos = pad_batch([encs[i] for i in idx], lm.tokenizer.pad_token_id, device)
            w = position_weights(encs, idx, ids.shape[1], position)
            # reduce each block's output to (B, d) inside its hook: the (B, T, d) outputs of
            # the requested layers are not all held until the forward ends
            acc.add(
                idx, truncated_forward(lm, ids, mask, pos, layer_ids, reduce=_reducer(w, device))
            )
    meta = {"model": lm.name, "fingerprint": lm.fingerprint, "shared_prefix_tokens": shared}
    return acc.result(position, meta)
