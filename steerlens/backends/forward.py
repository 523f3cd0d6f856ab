"""Forward passes of an HF causal LM as steerlens runs them: stopped after the deepest
requested block (never the lm_head), outputs captured or reduced inside the block hooks, and a
prompt prefix shared by a batch run once into a KV cache that the rest of each prompt attends
to. The HF backend, the behavior metrics and the trainer all run through these functions.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import einops
import torch

from steerlens.core.hf_compat import cache_kwargs
from steerlens.core.precision import compute_context
from steerlens.inputs.prompts import EncodedPrompt, PositionSpec, pad_batch, position_indices
from steerlens.loading.models import LoadedModel
from steerlens.runtime.batching import Reducer
from steerlens.runtime.edits import EditPlan

T = TypeVar("T")


class StopForward(Exception):
    """Raised by the hook on the deepest requested block to end the forward pass early."""


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
    with (
        capture_blocks(lm, layers, reduce=reduce) as store,
        contextlib.suppress(StopForward),
        compute_context(lm.model),
    ):
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


# Architectures whose KV cache and mask handling the shared-prefix path is tested on.
#: decoder families whose KV cache, masks and block layout the shared-prefix path and the
#: upper-block forward (backends.upper) are tested on
LLAMA_FAMILY = ("llama", "mistral", "qwen2", "qwen3")
SHARED_PREFIX_TYPES = LLAMA_FAMILY

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
        lm.backend == "hf"
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
        return lambda h: reduce_positions(h, w_tail) + w_head @ h0

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
    prefix = torch.tensor([encs[idx[0]].input_ids[:p]], dtype=torch.long, device=lm.device)
    return empty_cache(lm.config), prefix, torch.ones_like(prefix)


def empty_cache(config: Any) -> Any:
    """An empty HF KV cache (``DynamicCache``) for a model of ``config``."""
    from transformers import DynamicCache  # transformers loads on first forward, not on import

    return DynamicCache(config=config)


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
    with compute_context(lm.model):
        lm.model(
            input_ids=prefix,
            attention_mask=ones,
            position_ids=torch.arange(p, device=lm.device)[None],
            logits_to_keep=1,
            **kw,
        )
        cache.batch_repeat_interleave(len(idx))
        ids, mask, pos = tail_inputs(lm, encs, idx, p)
        out = lm.model(
            input_ids=ids, attention_mask=mask, position_ids=pos, logits_to_keep=keep, **kw
        )
    return out.logits[:, -keep:, :]


def reduce_positions(h: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    """(B, d) float32 per-prompt means: ``h[:, -1]`` for ``weights`` None (left padding puts
    every prompt's last token there), else Σ_t w[b, t] h[b, t, :]. Always a fresh tensor, never
    a view that would keep the block output alive."""
    if weights is None:
        return h[:, -1, :].to(torch.float32, copy=True)
    w = weights.to(device=h.device, dtype=torch.float32)
    return einops.einsum(w, h.float(), "batch token, batch token d_model -> batch d_model")


def plan_pre_hook(plan: EditPlan) -> Callable[[Any, tuple[Any, ...], dict[str, Any]], None]:
    """The forward pre-hook (``with_kwargs=True``) every local backend registers on the HF
    module under a ``steer`` block: reports the forward to the plan
    (:meth:`~steerlens.runtime.edits.EditPlan.observe_forward`) and, in replace mode with a base model,
    runs the base on the same tokens (stopped after the plan's deepest layer) for h_base·v̂."""

    def hook(_mod: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        need = plan.observe_forward(args, kwargs)
        if need is None or plan.base is None:
            return
        full, mask, t = need
        pos = (mask.long().cumsum(-1) - 1).clamp(min=0)
        dev = plan.base.device
        with torch.inference_mode():
            outs = truncated_forward(
                plan.base, full.to(dev), mask.to(dev), pos.to(dev), plan.layers
            )
        plan.set_base_output(outs, t)

    if plan.positions == "all" and plan.base is None:
        mark_position_wise(hook)  # the same in every pass: a shared prefix may run apart
    return hook
