"""The error of an LM-only feature (chat prompts, a tokenizer, generation) used on a plain
torch module (:func:`steerlens.wrap_module`), and the tokenizer such a model carries."""

from __future__ import annotations

from typing import Any

__all__ = ["LMOnlyError", "NoTokenizer"]


class LMOnlyError(TypeError):
    """An LM-only feature (chat prompts, a tokenizer, generation) used on a plain torch module."""

    def __init__(self, feature: str) -> None:
        super().__init__(
            f"{feature} needs a causal language model, but this model is a plain torch module "
            "(steerlens.wrap_module): chat prompts, tokenizers and generation do not exist for "
            "it. Pass input tensors instead of prompts (record_activations(model, x, ...)), or "
            "wrap an HF causal LM with steerlens.wrap(model, tokenizer)"
        )


class NoTokenizer:
    """The tokenizer of a plain torch module: any use raises :class:`LMOnlyError`."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        raise LMOnlyError(f"the tokenizer ({name})")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise LMOnlyError("tokenizing text")
