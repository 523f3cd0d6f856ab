"""Per-prompt rows of the base and of each checkpoint, running only the blocks above the first
changed one when the checkpoint leaves the lower blocks as the base's.

The base pass records, with :func:`steerlens.runtime.backends.upper.record_block_calls`, what block
``start`` and the blocks above it received; a checkpoint's rows are then computed by
:func:`steerlens.runtime.backends.upper.replay_blocks` on those inputs (layers below ``start`` are the
base's by construction). :func:`replay_self_check` replays the base itself first and falls back
to full truncated forwards if that does not reproduce the base rows.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

from steerlens.core.common import tqdm_disable
from steerlens.core.precision import compute_context
from steerlens.inputs.prompts import EncodedPrompt, PositionSpec, pad_batch
from steerlens.loading.models import LoadedModel
from steerlens.runtime.activations import (
    StopForward,
    capture_blocks,
    position_weights,
    record_activations,
    reduce_positions,
)
from steerlens.runtime.backends.upper import BlockInputs, record_block_calls, replay_blocks

__all__ = [
    "BlockInputs",
    "base_pass",
    "checkpoint_rows",
    "reduce_batch",
    "replay_rows",
    "replay_self_check",
]


def reduce_batch(
    encs: Sequence[EncodedPrompt], idx: Sequence[int], h: torch.Tensor, position: PositionSpec
) -> torch.Tensor:
    """(B, d) float32 per-prompt means over the selected positions of a (B, T, d) batch: the
    one reduction of ``record_activations`` (:func:`steerlens.runtime.backends.reduce_positions`)."""
    return reduce_positions(h, position_weights(encs, idx, h.shape[1], position))


def _base_batches(
    lm: LoadedModel,
    encs: Sequence[EncodedPrompt],
    batches: list[list[int]],
    layers: Sequence[int],
    position: PositionSpec,
    rows: dict[int, torch.Tensor],
    commit: Any,
    progress: bool | None,
) -> None:
    """Truncated base forwards per length batch: rows into ``rows``, then ``commit()`` (the
    captured block inputs of that batch, when capturing)."""
    with torch.inference_mode():
        for idx in tqdm(batches, desc="base", disable=tqdm_disable(progress), leave=False):
            ids, mask, pos = pad_batch([encs[i] for i in idx], lm.tokenizer.pad_token_id, lm.device)
            with (
                capture_blocks(lm, layers) as store,
                contextlib.suppress(StopForward),
                compute_context(lm.model),
            ):
                lm.model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False)
            index = torch.tensor(idx)
            for layer in layers:
                rows[layer][index] = reduce_batch(encs, idx, store[layer], position).cpu()
            if commit is not None:
                commit()


def base_pass(
    lm: LoadedModel,
    encs: Sequence[EncodedPrompt],
    batches: list[list[int]],
    layers: Sequence[int],
    position: PositionSpec,
    capture_from: int | None = None,
    *,
    progress: bool | None = None,
) -> tuple[dict[int, torch.Tensor], BlockInputs | None]:
    """Per-prompt rows (float32, input order) of the base at ``layers`` and, with
    ``capture_from``, the inputs of blocks ``capture_from..max(layers)`` for replay."""
    deepest = max(layers)
    n, d = len(encs), lm.hidden_size
    rows = {layer: torch.empty(n, d) for layer in layers}
    if capture_from is None:
        _base_batches(lm, encs, batches, layers, position, rows, None, progress)
        return rows, None
    if not 0 < capture_from <= deepest:
        raise ValueError(f"capture_from must be in 1..{deepest}, got {capture_from}")
    inputs = BlockInputs(capture_from, batches)
    with record_block_calls(lm.layout.blocks, inputs, deepest) as commit:
        _base_batches(lm, encs, batches, layers, position, rows, commit, progress)
    return rows, inputs


def replay_rows(
    lm: LoadedModel,
    inputs: BlockInputs,
    encs: Sequence[EncodedPrompt],
    layers: Sequence[int],
    position: PositionSpec,
    base_rows: Mapping[int, torch.Tensor],
    *,
    max_batches: int | None = None,
) -> dict[int, torch.Tensor]:
    """Per-prompt rows of ``lm`` computed by running only blocks ``inputs.start..max(layers)``
    on the captured base inputs; layers below ``inputs.start`` are copied from ``base_rows``
    (they are identical by construction)."""
    blocks = lm.layout.blocks
    deepest = max(layers)
    wanted = set(layers)
    rows = {layer: base_rows[layer].clone() for layer in layers}
    pairs = list(zip(inputs.batches, inputs.hidden, inputs.calls, strict=True))
    if max_batches is not None:
        pairs = pairs[:max_batches]
    with torch.inference_mode(), compute_context(lm.model):
        for idx, hidden, calls in pairs:
            index = torch.tensor(idx)
            for i, h in replay_blocks(blocks, inputs.start, deepest, hidden, calls):
                if i in wanted:
                    rows[i][index] = reduce_batch(encs, idx, h, position).cpu()
    return rows


def checkpoint_rows(
    lm: LoadedModel,
    prompts: Sequence[str | Any],
    encs: Sequence[EncodedPrompt],
    layers: Sequence[int],
    position: PositionSpec,
    batch_size: int,
    inputs: BlockInputs | None,
    base_rows: Mapping[int, torch.Tensor],
) -> dict[int, torch.Tensor]:
    """One checkpoint's per-prompt rows (float32): the replay when ``inputs`` is given, else
    ``record_activations`` (a truncated forward per length batch)."""
    if inputs is not None:
        return replay_rows(lm, inputs, encs, layers, position, base_rows)
    # the same computation as the base pass (no shared prefix), so a block the checkpoint
    # leaves unchanged gives exactly zero shift instead of rounding noise
    acts = record_activations(
        lm,
        prompts,
        layers,
        position,
        batch_size=batch_size,
        keep_rows=True,
        progress=False,
        share_prefix=False,
    )
    assert acts.rows is not None
    return {layer: acts.rows[layer] for layer in layers}


def replay_self_check(
    lm: LoadedModel,
    inputs: BlockInputs,
    encs: Sequence[EncodedPrompt],
    layers: Sequence[int],
    position: PositionSpec,
    reference: Mapping[int, torch.Tensor],
) -> bool:
    """Replay the first batch on the base itself and compare with the rows the base pass
    computed: a guard against architectures whose blocks read state the capture missed."""
    idx = inputs.batches[0]
    got = replay_rows(lm, inputs, encs, layers, position, reference, max_batches=1)
    for layer in layers:
        ref = reference[layer][idx]
        scale = float(ref.abs().max()) + 1e-6
        if not torch.allclose(got[layer][idx], ref, atol=1e-4 * scale, rtol=1e-4):
            return False
    return True
