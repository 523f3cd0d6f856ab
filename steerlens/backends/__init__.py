"""Backends: plain torch hooks on HF models (default), nnsight and TransformerLens objects.

A user may pass whichever object they hold; :func:`unwrap_foreign` detects it and returns the
underlying HF module, tokenizer and backend name.
"""

from __future__ import annotations

from typing import Any


def unwrap_foreign(obj: Any) -> tuple[Any, Any, str | None]:
    """(hf_module, tokenizer or None, backend name or None for a plain HF model)."""
    mod = type(obj).__module__
    if mod.startswith("nnsight"):
        inner = getattr(obj, "_model", None)
        return inner, getattr(obj, "tokenizer", None), "nnsight"
    if mod.startswith("transformer_lens"):
        inner = getattr(obj, "original_model", None)
        return inner, getattr(obj, "tokenizer", None), "transformer_lens"
    return obj, None, None


def record_foreign(*args: Any, **kwargs: Any) -> Any:
    raise NotImplementedError("foreign backends record through their HF module")
