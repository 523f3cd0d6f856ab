"""One batch of teacher sampling: the plain left-padded ``generate``, or, when the batch's
prompts share a prefix (the system turn), that prefix run once into a KV cache repeated over
the batch and ``generate`` continuing from it (:func:`generate_batch`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from steerlens.core.hf_compat import cache_keyword, cache_kwargs
from steerlens.core.precision import compute_context
from steerlens.inputs.prompts import EncodedPrompt, pad_batch
from steerlens.loading.models import LoadedModel
from steerlens.runtime.activations import (
    can_share_prefix,
    prefix_inputs,
    shared_prefix_len,
    tail_inputs,
)

__all__ = ["generate_batch"]


def generate_batch(
    lm: LoadedModel,
    encs: Sequence[EncodedPrompt],
    processors: Callable[[int], list[Any]],
    gen_kwargs: dict[str, Any],
    stop: Sequence[int],
    share_prefix: bool = True,
) -> tuple[torch.Tensor, int]:
    """(sequences, width of the inputs): ``generate`` on the prompts ``encs`` with the logits
    processors ``processors(width)``. The shared prefix path (``share_prefix`` and
    :func:`~steerlens.runtime.activations.can_share_prefix`: Llama-family HF models whose hooks act on
    each position alone, e.g. a steered teacher at every position) gives the same
    distributions as the plain path up to float rounding: the prefix's keys and values are
    computed once and the tails, left-padded after it, attend to them."""
    tok = lm.tokenizer
    idx = list(range(len(encs)))
    p = 0
    if share_prefix and can_share_prefix(lm):
        p = shared_prefix_len([e.input_ids for e in encs], min(len(e) for e in encs) - 1)
    kw = dict(gen_kwargs)
    if p:
        cache, prefix, ones = prefix_inputs(lm, encs, idx, p)
        with torch.inference_mode(), compute_context(lm.model):
            lm.model(
                input_ids=prefix,
                attention_mask=ones,
                position_ids=torch.arange(p, device=lm.device)[None],
                **cache_kwargs(lm.model, cache),
            )
        cache.batch_repeat_interleave(len(encs))
        tails, mask, _ = tail_inputs(lm, encs, idx, p)
        ids = torch.cat([prefix.expand(len(encs), -1), tails], dim=1)
        kw[cache_keyword(lm.model.generate)] = cache
    else:
        ids, mask, _ = pad_batch(encs, tok.pad_token_id, lm.device)
    with torch.inference_mode(), compute_context(lm.model):
        seqs = lm.model.generate(  # type: ignore[operator]
            input_ids=ids,
            attention_mask=mask,
            pad_token_id=tok.pad_token_id,
            eos_token_id=list(stop),
            logits_processor=_processor_list(processors(ids.shape[1])),
            **kw,
        )
    return seqs, int(ids.shape[1])


def _processor_list(procs: list[Any]) -> Any:
    from transformers import LogitsProcessorList

    return LogitsProcessorList(procs)
