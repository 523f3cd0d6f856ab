"""Recognise the model objects a user may hold (a plain HF module, an accelerate-dispatched
one, an nnsight envoy, a TransformerLens bridge) and read their weights, for loading and
fingerprinting. Imports nothing from steerlens: :mod:`steerlens.models` and the backends use it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

import torch
from torch import nn

#: the runtimes a LoadedModel can run through (:mod:`steerlens.backends`)
BackendName = Literal["hf", "accelerate", "nnsight", "transformer_lens", "module"]

__all__ = [
    "BackendName",
    "embedding_device",
    "foreign_kind",
    "is_sharded",
    "named_weights",
    "unwrap_foreign",
]

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


def foreign_kind(obj: Any) -> str | None:
    mod = type(obj).__module__
    if mod.startswith("nnsight"):
        return "nnsight"
    if mod.startswith("transformer_lens"):
        return "transformer_lens"
    return None


def unwrap_foreign(obj: Any) -> tuple[Any, Any, BackendName | None]:
    """(HF module, tokenizer or None, backend name or None for a plain one-device HF model).

    nnsight objects (``LanguageModel``, ``TransformersModel``, ``NNsight``) give their wrapped
    module (``_module``); a TransformerLens bridge gives ``original_model``; an HF model
    dispatched by accelerate over several devices gives backend ``"accelerate"``.
    """
    kind = foreign_kind(obj)
    if kind == "nnsight":
        inner = getattr(obj, "_module", None)
        if inner is None:
            raise TypeError(
                f"{type(obj).__name__} wraps no module: pass an nnsight LanguageModel / "
                "TransformersModel / NNsight around an HF causal LM"
            )
        return inner, getattr(obj, "tokenizer", None), "nnsight"
    if kind == "transformer_lens":
        try:
            inner = obj.original_model
        except AttributeError as exc:
            raise TypeError(
                f"{type(obj).__name__} has no local HF model (a vLLM / Inspect RemoteBridge?): "
                "steerlens needs TransformerBridge.boot_transformers(...)"
            ) from exc
        return inner, getattr(obj, "tokenizer", None), "transformer_lens"
    if is_sharded(obj):
        return obj, None, "accelerate"
    return obj, None, None


def named_weights(model: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """``model.named_parameters()``, with parameters that accelerate offloaded (left on the meta
    device by ``device_map`` with ``"disk"`` or ``"cpu"`` offload) read from its offload store,
    so a fingerprint hashes the real weights of a sharded model."""
    modules: dict[str, nn.Module] | None = None
    for name, p in model.named_parameters():
        if p.device.type != "meta":
            yield name, p
            continue
        if modules is None:
            modules = dict(model.named_modules())
        yield name, _offloaded_weight(modules, name)


def _offloaded_weight(modules: dict[str, nn.Module], name: str) -> torch.Tensor:
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
