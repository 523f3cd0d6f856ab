"""Run only the decoder blocks above the first changed one (``skip_unchanged_blocks``).

When a model differs from its base only from block ``first`` up (a LoRA student, a PEFT
adapter, a fine-tune of the upper blocks), the residual stream entering block ``first`` is the
base's, so it can be computed once and every later pass runs blocks ``first..`` only. Two
callers, one module:

- :func:`run_blocks_from`: blocks ``first..`` of a Llama-style HF model on a residual stream,
  with the masks and rotary embeddings built as the model's own forward builds them (optionally
  continuing a KV-cache prefix), then the final norm. Distillation uses it for every training
  step (batches differ each step, so nothing can be captured ahead).
- :func:`record_block_calls` / :func:`replay_blocks`: capture, on one base forward, the hidden
  state entering block ``first`` and every block's other call arguments exactly as the model
  built them, then re-run blocks ``first..last`` of another model with the same weights below
  ``first`` on them. Model-agnostic (any block list); tracking uses it for every checkpoint.

Leaf-ward imports only (torch, transformers, :mod:`steerlens.core.hf_compat`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from steerlens.core.hf_compat import cache_keyword, cache_kwargs
from steerlens.runtime.backends.forward import LLAMA_FAMILY

__all__ = [
    "UPPER_FORWARD_TYPES",
    "BlockCall",
    "BlockInputs",
    "can_run_blocks_from",
    "record_block_calls",
    "replay_blocks",
    "run_blocks_from",
]

#: architectures whose decoder forward :func:`run_blocks_from` reproduces
UPPER_FORWARD_TYPES = LLAMA_FAMILY

#: one block's call besides the hidden state: (positional rest, keywords, hidden passed by name)
BlockCall = tuple[tuple[Any, ...], dict[str, Any], bool]


# ------------------------------------------------------------------ hand-built upper forward


def can_run_blocks_from(hf: nn.Module, first: int) -> bool:
    """True if :func:`run_blocks_from` reproduces ``hf``'s forward from block ``first`` > 0."""
    cfg = getattr(hf, "config", None)
    inner = getattr(hf, "model", None)
    return (
        first > 0
        and getattr(cfg, "model_type", None) in UPPER_FORWARD_TYPES
        and inner is not None
        and all(hasattr(inner, a) for a in ("layers", "norm", "rotary_emb"))
        and hf.get_output_embeddings() is not None  # type: ignore[operator]
    )


def _attention_masks(
    inner: Any, h: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor, cache: Any
) -> dict[str, Any]:
    """The causal (+ sliding-window) masks the model's own forward would build."""
    from transformers.masking_utils import create_causal_mask

    mask_kwargs = {
        "config": inner.config,
        "inputs_embeds": h,
        "attention_mask": mask,
        cache_keyword(create_causal_mask): cache,
        "position_ids": pos,
    }
    masks = {"full_attention": create_causal_mask(**mask_kwargs)}
    if getattr(inner, "has_sliding_layers", False):
        from transformers.masking_utils import create_sliding_window_causal_mask

        masks["sliding_attention"] = create_sliding_window_causal_mask(**mask_kwargs)
    return masks


def run_blocks_from(
    hf: nn.Module,
    first: int,
    h: torch.Tensor,
    mask: torch.Tensor,
    pos: torch.Tensor,
    cache: Any = None,
    after: Callable[[int, torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Run blocks ``first..`` of a Llama-style model (:func:`can_run_blocks_from`) on the
    residual stream ``h`` (B, T, d) and apply the final norm, building the causal+padding masks
    and rotary embeddings as the model's own forward does. With ``cache`` (a KV cache holding a
    prefix for every block), ``h`` continues that prefix and ``mask`` covers prefix + ``h``.
    ``after(i, h)``, when given, replaces block i's output (an edit of the residual stream
    after block i, as a forward hook on the block would make it)."""
    inner: Any = hf.model
    config = inner.config
    masks = _attention_masks(inner, h, mask, pos, cache)
    layer_types = getattr(config, "layer_types", None)
    pe = inner.rotary_emb(h, position_ids=pos)
    for i in range(first, config.num_hidden_layers):
        kind = layer_types[i] if layer_types else "full_attention"
        out = inner.layers[i](
            h,
            attention_mask=masks.get(kind, masks["full_attention"]),
            position_embeddings=pe,
            position_ids=pos,
            **cache_kwargs(inner.layers[i], cache),
        )
        h = out[0] if isinstance(out, tuple) else out
        if after is not None:
            h = after(i, h)
    normed: torch.Tensor = inner.norm(h)
    return normed


# ------------------------------------------------------------------ captured replay


@dataclass
class BlockInputs:
    """What decoder block ``start`` and the blocks above it received on the base pass, per
    length batch: the hidden state entering ``start`` and each block's other call arguments
    (attention mask, rotary embeddings, …, exactly as the model built them)."""

    start: int
    batches: list[list[int]]
    hidden: list[torch.Tensor] = field(default_factory=list)
    calls: list[dict[int, BlockCall]] = field(default_factory=list)


@contextlib.contextmanager
def record_block_calls(
    blocks: Sequence[nn.Module], inputs: BlockInputs, stop: int
) -> Iterator[Any]:
    """Pre-hooks on blocks ``inputs.start..stop``; call the returned ``commit()`` after each
    batch's forward to append that batch's captured hidden state and calls to ``inputs``."""
    current: dict[int, BlockCall] = {}
    entry: list[torch.Tensor] = []

    def make_pre(i: int) -> Any:
        def pre(_m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            as_kw = not args
            hidden = kwargs["hidden_states"] if as_kw else args[0]
            kw = {k: v for k, v in kwargs.items() if k != "hidden_states"}
            current[i] = (args[1:], kw, as_kw)
            if i == inputs.start:
                entry.append(hidden.detach())

        return pre

    def commit() -> None:
        if len(entry) != 1 or len(current) != stop + 1 - inputs.start:
            raise RuntimeError("block inputs were not captured once per block")
        inputs.hidden.append(entry[0])
        inputs.calls.append(dict(current))
        current.clear()
        entry.clear()

    handles = [
        blocks[i].register_forward_pre_hook(make_pre(i), with_kwargs=True)
        for i in range(inputs.start, stop + 1)
    ]
    try:
        yield commit
    finally:
        for handle in handles:
            handle.remove()


def replay_blocks(
    blocks: Sequence[nn.Module],
    start: int,
    stop: int,
    hidden: torch.Tensor,
    calls: dict[int, BlockCall],
) -> Iterator[tuple[int, torch.Tensor]]:
    """Run blocks ``start..stop`` on ``hidden`` with the captured ``calls``, yielding
    ``(block index, its output hidden state)`` after each."""
    h = hidden
    for i in range(start, stop + 1):
        rest, kw, as_kw = calls[i]
        block = blocks[i]
        out = block(*rest, hidden_states=h, **kw) if as_kw else block(h, *rest, **kw)
        h = out[0] if isinstance(out, tuple) else out
        yield i, h
