"""Recognise the model objects a user may hold (a plain HF module, an accelerate-dispatched
one, an nnsight envoy, a TransformerLens bridge) and read their weights, for loading and
fingerprinting. Imports nothing from steerlens: :mod:`steerlens.loading.models` and the backends use it.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any, Literal

import torch
from torch import nn

#: the runtimes a LoadedModel can run through (:mod:`steerlens.runtime.backends`)
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
        "remotely: use steerlens.runtime.backends.from_nnsight(model, remote=True), or "
        "LanguageModel(..., dispatch=True) to run it here"
    )


# ------------------------------------------------------------------ bridge tokenisation

#: the raw string whose token ids are compared
TOKENIZATION_PROBE = "Hello world"
TL_TOKENIZER_FIX = (
    "pass the model's HF tokenizer, sl.wrap(bridge, AutoTokenizer.from_pretrained(name)), to get "
    "the HF path's token ids (docs/backends.md, 'Parity and numerics', Tokenizer)"
)
_WARNED: set[str] = set()


def _reference_tokenizer(names: list[str]) -> Any:
    """The HF tokenizer of the same model, from local files only (None if none is here)."""
    from transformers import AutoTokenizer

    for name in names:
        try:
            return AutoTokenizer.from_pretrained(name, local_files_only=True)
        except Exception:  # noqa: BLE001 - not cached here: no reference
            continue
    return None


def bridge_tokenization(user_tok: Any, bridge_tok: Any, hf_model: Any) -> dict[str, Any]:
    """How a TransformerLens-bridged model tokenises raw strings, for provenance, and one
    warning per model when the bridge's tokenizer (``boot_transformers`` re-creates it with
    ``add_bos_token=True``) gives other ids than the model's HF tokenizer.

    ``matches_hf``: True/False against the HF tokenizer loaded from local files; None when none
    is cached here (then a BOS the bridge prepends is reported as a likely difference)."""
    used = user_tok if user_tok is not None else bridge_tok
    ids = [int(i) for i in used(TOKENIZATION_PROBE, add_special_tokens=True)["input_ids"]]
    bos = getattr(used, "bos_token_id", None)
    info: dict[str, Any] = {
        "tokenizer": "user" if user_tok is not None else "bridge",
        "raw_strings_prepend_bos": bos is not None and bool(ids) and ids[0] == bos,
        "matches_hf": True if user_tok is not None else None,
    }
    if user_tok is not None:
        return info
    cfg = getattr(hf_model, "config", None)
    names = [
        str(n) for n in (getattr(used, "name_or_path", ""), getattr(cfg, "_name_or_path", "")) if n
    ]
    ref = _reference_tokenizer(names)
    if ref is not None:
        ref_ids = [int(i) for i in ref(TOKENIZATION_PROBE, add_special_tokens=True)["input_ids"]]
        info["matches_hf"] = ref_ids == ids
    differs = info["matches_hf"] is False or (
        info["matches_hf"] is None and info["raw_strings_prepend_bos"]
    )
    key = names[0] if names else str(id(hf_model))
    if differs and key not in _WARNED:
        _WARNED.add(key)
        how = "differently from" if info["matches_hf"] is False else "possibly differently from"
        warnings.warn(
            f"the TransformerBridge's tokenizer prepends a BOS to raw-string prompts and tokenises "
            f"them {how} the model's HF tokenizer (chat prompts are unaffected), so activations "
            f"and vectors differ from the HF path: {TL_TOKENIZER_FIX}",
            UserWarning,
            stacklevel=3,
        )
    return info
