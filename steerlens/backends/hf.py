"""The default backend: plain torch hooks on an HF causal LM, on one device or dispatched by
accelerate over several (``from_pretrained(..., device_map=...)``), whose blocks' outputs are
read and edited on the device each block runs on.

Recording stops after the deepest requested block and reduces positions inside the hooks
(:mod:`steerlens.backends.forward`); prompts sharing a prefix run it once where
:func:`~steerlens.backends.forward.can_share_prefix` allows.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch

from steerlens.backends.forward import (
    can_share_prefix,
    mark_position_wise,
    plan_pre_hook,
    reduce_positions,
    shared_prefix_forward,
    truncated_forward,
)
from steerlens.edits import EditPlan, block_output, with_block_output
from steerlens.foreign import embedding_device
from steerlens.models import LoadedModel
from steerlens.prompts import EncodedPrompt, PositionSpec


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

    @contextmanager
    def steer(self, plan: EditPlan) -> Iterator[LoadedModel]:
        blocks = self.lm.layout.blocks
        # an edit at every position with no base model acts on each position alone: a shared
        # prompt prefix may then run in its own pass (steerlens.backends.forward.can_share_prefix)
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
