"""Steering vectors of a plain torch module (:func:`steerlens.wrap_module`): the same
extraction methods (:mod:`steerlens.directions.extract`, DESIGN.md "Extraction methods") on input tensors,
and the shift vector of a trained module against its initialisation (DESIGN.md "Student
shift": vˡ = mean_x hˡ(θ, x) − mean_x hˡ(θ₀, x), paired by input).

Provenance: the model and its fingerprint, the site (``module:{path}`` per layer in
``meta["sites"]``; ``meta["site"]`` the template), the input hashes in place of prompt hashes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from steerlens.core.sites import MODULE_SITE_TEMPLATE
from steerlens.core.vectors import SteeringVector
from steerlens.directions.extract import Aggregator, vector_from_rows
from steerlens.loading.models import LoadedModel, as_model, check_same_shape
from steerlens.runtime.activations import record_activations
from steerlens.runtime.backends.module import inputs_hash

__all__ = ["module_rows", "module_vector", "shift_vector"]


def _as_module(model: Any, what: str) -> LoadedModel:
    lm = as_model(model)
    if lm.site_paths is None:
        raise TypeError(
            f"{what} is {lm.name!r}, a language model: use steerlens.extract_vector with "
            "prompts; module vectors need a model from steerlens.wrap_module"
        )
    return lm


def module_rows(
    model: Any,
    inputs: torch.Tensor,
    layers: int | Sequence[int] | str = "all",
    *,
    batch_size: int = 256,
    progress: bool | None = None,
) -> dict[int, torch.Tensor]:
    """{layer: (n, d) float32} per-input site activations hˡ(x) of a torch module."""
    acts = record_activations(
        _as_module(model, "model"),
        inputs,
        layers,
        batch_size=batch_size,
        keep_rows=True,
        progress=progress,
    )
    assert acts.rows is not None
    return acts.rows


def _meta(lm: LoadedModel, layers: Sequence[int], **extra: Any) -> dict[str, Any]:
    assert lm.site_paths is not None
    return {
        "model": lm.name,
        "model_source": lm.source,
        "model_fingerprint": lm.fingerprint,
        "site": MODULE_SITE_TEMPLATE,
        "sites": {k: f"module:{lm.site_paths[k]}" for k in layers},
        "position": "last",
        **extra,
    }


def module_vector(
    model: Any,
    pos: torch.Tensor,
    neg: torch.Tensor,
    layers: int | Sequence[int] | str = "all",
    method: str | Aggregator = "mean",
    *,
    seed: int = 0,
    n_boot: int = 20,
    diagnostics: bool = True,
    batch_size: int = 256,
) -> SteeringVector:
    """Per-site direction of the ``pos`` inputs against the ``neg`` inputs (``extract_vector``
    on a torch module: same methods and diagnostics)."""
    lm = _as_module(model, "model")
    p = module_rows(lm, pos, layers, batch_size=batch_size)
    n = module_rows(lm, neg, layers, batch_size=batch_size)
    meta = _meta(
        lm,
        list(p),
        pos_prompts_hash=inputs_hash(pos),
        neg_prompts_hash=inputs_hash(neg),
        n_pos=len(pos),
        n_neg=len(neg),
        kind="contrast",
    )
    return vector_from_rows(
        p, n, method, seed=seed, n_boot=n_boot, diagnostics=diagnostics, meta=meta
    )


def shift_vector(
    model: Any,
    base: Any,
    inputs: torch.Tensor,
    layers: int | Sequence[int] | str = "all",
    *,
    batch_size: int = 256,
) -> SteeringVector:
    """vˡ = mean_x hˡ(model, x) − mean_x hˡ(base, x) on ``inputs`` (paired by input): how
    training moved the activations at each site (the teacher shift of the MLP experiment)."""
    lm = _as_module(model, "model")
    b = _as_module(base, "base")
    check_same_shape(lm, b, ("model", "base"))
    rows = module_rows(lm, inputs, layers, batch_size=batch_size)
    base_rows = module_rows(b, inputs, layers, batch_size=batch_size)
    meta = _meta(
        lm,
        list(rows),
        base=b.name,
        base_fingerprint=b.fingerprint,
        pos_prompts_hash=inputs_hash(inputs),
        neg_prompts_hash=inputs_hash(inputs),
        n_pos=len(inputs),
        n_neg=len(inputs),
        kind="shift",
    )
    return vector_from_rows(rows, base_rows, "mean", diagnostics=False, meta=meta)
