"""Record residual-stream activations: batched, left-padding safe, stopped after the deepest
requested block, never computing the lm_head.

For layer ℓ and position set P (DESIGN.md "Directions"), hˡ(x) is the mean over P of the site's
activation on input x; :func:`record_activations` returns mean_x hˡ(x) per layer (a float64
running sum, so memory does not grow with the prompt count) and, on request, the per-prompt rows
hˡ(x). It is a front end: the batching is :mod:`steerlens.runtime.batching`, the execution the model's
backend (:mod:`steerlens.runtime.backends`), through the one loop
:func:`steerlens.runtime.backends.protocol.record_with`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from steerlens.inputs.prompts import PositionSpec, PromptLike
from steerlens.loading.models import as_model
from steerlens.runtime.backends import backend_for, record_with
from steerlens.runtime.backends.forward import (
    SHARED_PREFIX_TYPES,
    StopForward,
    can_share_prefix,
    capture_blocks,
    has_hooks,
    mark_position_wise,
    prefix_inputs,
    reduce_positions,
    shared_prefix_forward,
    shared_prefix_logits,
    tail_inputs,
    truncated_forward,
)
from steerlens.runtime.backends.module import ModuleBackend
from steerlens.runtime.batching import (
    MIN_SHARED_PREFIX,
    Accumulator,
    Activations,
    Reducer,
    in_input_order,
    length_batches,
    position_weights,
    prefix_batches,
    prepare,
    shared_prefix_len,
)

# the execution and batching pieces, re-exported for callers that build their own loops
__all__ = [
    "MIN_SHARED_PREFIX",
    "SHARED_PREFIX_TYPES",
    "Accumulator",
    "Activations",
    "Reducer",
    "StopForward",
    "can_share_prefix",
    "capture_blocks",
    "has_hooks",
    "in_input_order",
    "length_batches",
    "mark_position_wise",
    "position_weights",
    "prefix_batches",
    "prefix_inputs",
    "prepare",
    "record_activations",
    "reduce_positions",
    "shared_prefix_forward",
    "shared_prefix_len",
    "shared_prefix_logits",
    "tail_inputs",
    "truncated_forward",
]


def record_activations(
    model: Any,
    prompts: Sequence[PromptLike] | torch.Tensor,
    layers: int | Sequence[int] | str = "all",
    position: PositionSpec = "last",
    *,
    batch_size: int = 32,
    keep_rows: bool = False,
    rows_dtype: torch.dtype = torch.float32,
    progress: bool | None = None,
    desc: str = "record",
    share_prefix: bool | None = None,
) -> Activations:
    """Record mean activations of the residual stream after each requested block.

    ``means[ℓ] = (1/|X|) Σ_x hˡ(x)`` with hˡ(x) the mean over the selected positions of x
    (DESIGN.md "Directions"), accumulated in float64 and returned as float32. With
    ``keep_rows`` the per-prompt hˡ(x) are kept too, in input order, as ``rows_dtype``.

    ``share_prefix``: prompts that start with the same tokens (the same system prompt, say)
    run that prefix once per batch and reuse its KV cache (:func:`steerlens.runtime.backends.forward.shared_prefix_forward`);
    None (default) does so where the backend allows (:func:`steerlens.runtime.backends.forward.can_share_prefix`: HF models of tested architectures with no foreign hook), False never. The results
    equal the plain path's up to float rounding; ``meta["shared_prefix_tokens"]`` counts the
    token positions not recomputed.

    On a plain torch module (:func:`steerlens.wrap_module`) ``prompts`` is a tensor of inputs
    (batch first) and ``layers`` may name site paths (``"layers.1"``):
    :class:`steerlens.runtime.backends.module.ModuleBackend`, the same accumulator and formula.
    """
    lm = as_model(model)
    if lm.site_paths is not None:
        return ModuleBackend(lm).record_inputs(
            prompts,  # type: ignore[arg-type]  # checked there: a tensor of inputs
            layers,
            position,
            batch_size=batch_size,
            keep_rows=keep_rows,
            rows_dtype=rows_dtype,
            progress=progress,
            desc=desc,
        )
    if isinstance(prompts, torch.Tensor):
        raise TypeError(
            f"{lm.name!r} is a language model: pass prompts (strings or ChatPrompt), not a "
            "tensor; to record a plain torch module wrap it with steerlens.wrap_module"
        )
    return record_with(
        backend_for(lm),
        prompts,
        layers,
        position,
        batch_size=batch_size,
        keep_rows=keep_rows,
        rows_dtype=rows_dtype,
        progress=progress,
        desc=desc,
        share_prefix=share_prefix,
    )
