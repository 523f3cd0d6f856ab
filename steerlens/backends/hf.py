"""The default backend: plain torch hooks on an HF causal LM, including accelerate-dispatched
models (``from_pretrained(..., device_map=...)``) whose blocks sit on several devices.

A model on one device never comes here: :func:`steerlens.record_activations` and
:func:`steerlens.steer` run their own hook code on it, unchanged. This backend is what a
sharded model (``device_map`` over several GPUs, or CPU/disk offload) runs through: it reads
each block's output on the device that block runs on, reduces positions there, and moves the
steering vector to each block's device once.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch

from steerlens.activations import mark_position_wise, truncated_forward
from steerlens.backends.protocol import (
    EditPlan,
    block_output,
    reduce_positions,
    with_block_output,
)
from steerlens.models import LoadedModel

#: device_map targets that mean "not on an accelerator's memory at run time".
_OFFLOAD = ("disk", "meta")


def is_sharded(model: Any) -> bool:
    """Whether an HF model was dispatched by accelerate over more than one place (several
    devices, or CPU/disk offload), so its blocks' outputs live on different devices."""
    dmap = getattr(model, "hf_device_map", None)
    if not isinstance(dmap, dict) or not dmap:
        return False
    targets = {str(v) for v in dmap.values()}
    return len(targets) > 1 or bool(targets & set(_OFFLOAD))


def embedding_device(model: Any) -> torch.device:
    """The device input ids must go to: the input embedding's (CPU when it is offloaded)."""
    try:
        dev = model.get_input_embeddings().weight.device
    except (AttributeError, NotImplementedError):
        dev = next(model.parameters()).device
    return torch.device("cpu") if dev.type == "meta" else dev


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
        out = truncated_forward(self.lm, input_ids, attention_mask, position_ids, layers)
        return {layer: reduce_positions(out[layer], weights) for layer in layers}

    @contextmanager
    def steer(self, plan: EditPlan) -> Iterator[LoadedModel]:
        blocks = self.lm.layout.blocks

        # an edit at every position with no base model acts on each position alone: a shared
        # prompt prefix may then run in its own pass (steerlens.activations.can_share_prefix)
        position_wise = plan.positions == "all" and plan.base is None

        def make_hook(layer: int) -> Any:
            def hook(_mod: Any, _args: Any, output: Any) -> Any:
                new = plan.transform(layer, block_output(output))
                return None if new is None else with_block_output(output, new)

            return mark_position_wise(hook) if position_wise else hook

        def pre_hook(mod: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            plan.pre_hook(mod, args, kwargs)

        if position_wise:
            mark_position_wise(pre_hook)
        handles = []
        try:
            handles.append(self.lm.model.register_forward_pre_hook(pre_hook, with_kwargs=True))
            for layer in plan.layers:
                handles.append(blocks[layer].register_forward_hook(make_hook(layer)))
            yield self.lm
        finally:
            for h in handles:
                h.remove()


def named_weights(model: torch.nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """``model.named_parameters()``, with parameters that accelerate offloaded (left on the meta
    device by ``device_map`` with ``"disk"`` or ``"cpu"`` offload) read from its offload store,
    so a fingerprint hashes the real weights of a sharded model."""
    modules: dict[str, torch.nn.Module] | None = None
    for name, p in model.named_parameters():
        if p.device.type != "meta":
            yield name, p
            continue
        if modules is None:
            modules = dict(model.named_modules())
        yield name, _offloaded_weight(modules, name)


def _offloaded_weight(modules: dict[str, torch.nn.Module], name: str) -> torch.Tensor:
    parts = name.split(".")[:-1]
    for k in range(len(parts), -1, -1):
        prefix = ".".join(parts[:k])
        hook = getattr(modules.get(prefix), "_hf_hook", None)
        store = getattr(hook, "weights_map", None)
        if store is not None:
            return torch.as_tensor(store[name[len(prefix) + 1 :] if prefix else name])
    raise ValueError(
        f"parameter {name} is on the meta device and accelerate holds no offloaded copy: load "
        "the model with real weights. An nnsight model built without dispatch=True runs only "
        "remotely: use steerlens.backends.from_nnsight(model, remote=True), or "
        "LanguageModel(..., dispatch=True) to run it here"
    )
