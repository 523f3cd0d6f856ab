"""The default backend: plain torch hooks on an HF causal LM, on one device or dispatched by
accelerate over several (``from_pretrained(..., device_map=...)``), whose blocks' outputs are
read and edited on the device each block runs on.

Recording stops after the deepest requested block and reduces positions inside the hooks
(:mod:`steerlens.runtime.backends.forward`); prompts sharing a prefix run it once where
:func:`~steerlens.runtime.backends.forward.can_share_prefix` allows. :class:`HFSplitForward` cuts the
forward of a Llama-family model after one block (the carry test's batched conditions), the
blocks above run by :func:`~steerlens.runtime.backends.upper.run_blocks_from`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch

from steerlens.core.precision import compute_context
from steerlens.inputs.prompts import EncodedPrompt, PositionSpec, pad_batch
from steerlens.loading.foreign import embedding_device
from steerlens.loading.models import LoadedModel
from steerlens.runtime.backends.forward import (
    can_share_prefix,
    empty_cache,
    has_hooks,
    mark_position_wise,
    plan_pre_hook,
    prefix_inputs,
    reduce_positions,
    shared_prefix_forward,
    tail_inputs,
    truncated_forward,
)
from steerlens.runtime.backends.protocol import After, Residual
from steerlens.runtime.backends.upper import can_run_blocks_from, run_blocks_from
from steerlens.runtime.edits import EditPlan, block_output, with_block_output


class HFBackend:
    """Torch forward hooks on the decoder blocks of ``lm.model`` (see the module doc)."""

    name = "hf"

    def __init__(self, lm: LoadedModel) -> None:
        self.lm = lm

    def input_device(self) -> torch.device:
        return embedding_device(self.lm.model)

    def record_batch(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        layers: Sequence[int],
        weights: torch.Tensor | None,
    ) -> dict[int, torch.Tensor]:
        # reduce each block's output to (B, d) inside its hook: the (B, T, d) outputs of the
        # requested layers are never all held until the forward ends
        return truncated_forward(
            self.lm,
            input_ids,
            attention_mask,
            position_ids,
            layers,
            reduce=lambda h: reduce_positions(h, weights),
        )

    def can_share_prefix(self) -> bool:
        return can_share_prefix(self.lm)  # the plain "hf" backend only, not "accelerate"

    def record_shared(
        self,
        encs: Sequence[EncodedPrompt],
        idx: Sequence[int],
        p: int,
        layers: Sequence[int],
        position: PositionSpec,
    ) -> dict[int, torch.Tensor]:
        return shared_prefix_forward(self.lm, encs, idx, p, layers, position)

    def split_after(self, layer: int) -> HFSplitForward | None:
        """:class:`HFSplitForward` where it reproduces the model's forward: the plain "hf"
        backend (not "accelerate"), an architecture of
        :data:`~steerlens.runtime.backends.upper.UPPER_FORWARD_TYPES`, no hook on the model (a
        user's hook would be skipped by the hand-built upper forward)."""
        lm = self.lm
        if (
            lm.backend == "hf"
            and lm.inline_edits is None
            and can_run_blocks_from(lm.model, layer + 1)
            and not has_hooks(lm)
        ):
            return HFSplitForward(lm, layer)
        return None

    @contextmanager
    def steer(self, plan: EditPlan) -> Iterator[LoadedModel]:
        blocks = self.lm.layout.blocks
        # an edit at every position with no base model acts on each position alone: a shared
        # prompt prefix may then run in its own pass (steerlens.runtime.backends.forward.can_share_prefix)
        position_wise = plan.positions == "all" and plan.base is None

        def make_hook(layer: int) -> Any:
            def hook(_mod: Any, _args: Any, output: Any) -> Any:
                new = plan.transform(layer, block_output(output))
                return None if new is None else with_block_output(output, new)

            return mark_position_wise(hook) if position_wise else hook

        handles = []
        try:
            pre = plan_pre_hook(plan)
            handles.append(self.lm.model.register_forward_pre_hook(pre, with_kwargs=True))
            for layer in plan.layers:
                handles.append(blocks[layer].register_forward_hook(make_hook(layer)))
            yield self.lm
        finally:
            for h in handles:
                h.remove()


class HFSplitForward:
    """The forward of an HF Llama-family model cut after block ``layer``
    (:class:`~steerlens.runtime.backends.protocol.SplitForward`): the lower blocks through the model's
    own forward stopped early, the upper ones through
    :func:`~steerlens.runtime.backends.upper.run_blocks_from` and the lm_head on the last position."""

    def __init__(self, lm: LoadedModel, layer: int) -> None:
        self.lm, self.layer = lm, int(layer)

    def lower(self, encs: Sequence[EncodedPrompt], idx: Sequence[int], p: int) -> Residual:
        lm, layer = self.lm, self.layer
        if not p:
            ids, mask, pos = pad_batch([encs[i] for i in idx], lm.tokenizer.pad_token_id, lm.device)
            h = truncated_forward(lm, ids, mask, pos, [layer])[layer]
            return Residual(0, None, h, mask, pos)
        cache, prefix, ones = prefix_inputs(lm, encs, idx, p)
        head = truncated_forward(
            lm, prefix, ones, torch.arange(p, device=lm.device)[None], [layer], cache=cache
        )[layer]
        cache.batch_repeat_interleave(len(idx))
        ids, mask, pos = tail_inputs(lm, encs, idx, p)
        h = truncated_forward(lm, ids, mask, pos, [layer], cache=cache)[layer]
        return Residual(p, head, h, mask, pos)

    def upper_prefix(self, head: torch.Tensor, after: After | None, repeat: int) -> Any:
        g, p = head.shape[0], head.shape[1]
        first = self.layer + 1
        cache = empty_cache(self.lm.config)
        ones = torch.ones(g, p, dtype=torch.long, device=head.device)
        pos0 = torch.arange(p, device=head.device)[None].expand(g, -1)
        with compute_context(self.lm.model):
            run_blocks_from(self.lm.model, first, head, ones, pos0, cache=cache, after=after)
        _placeholders(cache, self.lm.config, first, p, head)
        cache.batch_repeat_interleave(repeat)
        return cache

    def upper_logits(
        self,
        h: torch.Tensor,
        mask: torch.Tensor,
        pos: torch.Tensor,
        prefix: Any = None,
        after: After | None = None,
    ) -> torch.Tensor:
        hf: Any = self.lm.model
        with compute_context(hf):
            normed = run_blocks_from(hf, self.layer + 1, h, mask, pos, prefix, after=after)
            return hf.get_output_embeddings()(normed[:, -1, :]).float()


def _placeholders(cache: Any, config: Any, first: int, p: int, like: torch.Tensor) -> None:
    """Fill the cache's blocks below ``first`` (which no block above reads) with p zero
    positions of one row, so the cache length the masks are built from (its first full-attention
    block's) is the prefix length for the tail pass."""
    heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    zeros = torch.zeros(1, heads, p, dim, dtype=like.dtype, device=like.device)
    for i in range(first):
        cache.update(zeros, zeros, i)
