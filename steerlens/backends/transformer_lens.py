"""TransformerLens 4 backend: record and steer through ``TransformerBridge`` hook points.

Give steerlens the bridge a user already holds
(``TransformerBridge.boot_transformers(name, hf_model=m, tokenizer=tok)``). Recording runs the
bridge's forward with a TL hook on ``blocks.{ℓ}.hook_resid_post`` per requested layer (the
steerlens site name, DESIGN.md "site") and ``stop_at_layer`` past the deepest one; each hook
reduces the selected positions to (B, d) rows. Steering adds TL hooks on the same hook points
inside ``bridge.hooks(...)``; the bridge puts its hook points inside the HF module tree, so plain
calls of the HF model and ``generate`` run them too.

Numerics. The default bridge runs the HF weights unchanged: its ``hook_resid_post`` equals the HF
block output. ``bridge.enable_compatibility_mode()`` (HookedTransformer weight processing) folds
LayerNorm and centers the writing weights. For LayerNorm models (GPT-2, GPT-NeoX) the residual
stream then becomes the HF one minus its mean over d, h − mean_d(h)·1, so recorded activations
and vectors are the centered HF ones; for RMSNorm models (Llama, Qwen2, SmolLM2) RMSNorm is not
mean-invariant, TL does not center, and activations are unchanged. Log-probabilities are the same
in both modes (the unembedding is centered, which shifts logits by a per-position constant).
Booting a bridge switches the HF model to eager attention and wraps its blocks in place; steerlens
compares it with an HF model in eager attention.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch

from steerlens.core.sites import site_name
from steerlens.loading.foreign import embedding_device
from steerlens.loading.models import LoadedModel
from steerlens.runtime.backends.forward import plan_pre_hook, reduce_positions
from steerlens.runtime.backends.protocol import NoPrefixSharing, NoSplitForward
from steerlens.runtime.edits import EditPlan


def compatibility_mode(bridge: Any) -> bool:
    """Whether ``bridge.enable_compatibility_mode()`` was called (processed weights)."""
    return bool(getattr(bridge, "compatibility_mode", False))


class TransformerLensBackend(NoPrefixSharing, NoSplitForward):
    """Record and steer through a TransformerLens bridge's hook points (see the module doc)."""

    name = "transformer_lens"

    def __init__(self, lm: LoadedModel, bridge: Any) -> None:
        if not hasattr(bridge, "hooks"):
            raise TypeError(
                f"{type(bridge).__name__} has no TransformerLens hooks(): pass a "
                "TransformerBridge (TransformerBridge.boot_transformers(...))"
            )
        self.lm = lm
        self.bridge = bridge
        names = getattr(bridge, "hook_dict", None)
        if names is not None:
            missing = [site_name(i) for i in range(lm.n_layers) if site_name(i) not in names]
            if missing:
                raise ValueError(
                    f"the bridge has no hook points {missing[:3]}...: steerlens reads "
                    "blocks.{l}.hook_resid_post"
                )

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
        store: dict[int, torch.Tensor] = {}

        def make_hook(layer: int) -> Any:
            def hook(x: torch.Tensor, hook: Any) -> None:
                store[layer] = reduce_positions(x, weights)

            return hook

        fwd_hooks = [(site_name(layer), make_hook(layer)) for layer in layers]
        with self.bridge.hooks(fwd_hooks=fwd_hooks):
            self.bridge(
                input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids,
                use_cache=False,
                prepend_bos=False,
                stop_at_layer=max(layers) + 1,
            )
        missing = [layer for layer in layers if layer not in store]
        if missing:
            raise RuntimeError(f"TL hooks {[site_name(m) for m in missing]} did not fire")
        return store

    @contextmanager
    def steer(self, plan: EditPlan) -> Iterator[LoadedModel]:
        def make_hook(layer: int) -> Any:
            def hook(x: torch.Tensor, hook: Any) -> torch.Tensor | None:
                return plan.transform(layer, x)

            return hook

        fwd_hooks = [(site_name(layer), make_hook(layer)) for layer in plan.layers]
        handle = self.lm.model.register_forward_pre_hook(plan_pre_hook(plan), with_kwargs=True)
        try:
            with self.bridge.hooks(fwd_hooks=fwd_hooks):
                yield self.lm
        finally:
            handle.remove()
