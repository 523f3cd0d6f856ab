"""Record residual-stream activations: batched, left-padding safe, stopped after the deepest
requested block, never computing the lm_head.

For layer ℓ and position set P (DESIGN.md "Directions"), hˡ(x) is the mean over P of the site's
activation on input x; :func:`record_activations` returns mean_x hˡ(x) per layer (a float32
running sum, so memory does not grow with the prompt count) and, on request, the per-prompt rows
hˡ(x).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from steerlens.models import LoadedModel, as_model
from steerlens.prompts import (
    EncodedPrompt,
    PositionSpec,
    PromptLike,
    check_prompts,
    encode,
    pad_batch,
    position_indices,
    position_name,
)
from steerlens.sites import SITE_TEMPLATE, resolve_layers


def _tqdm_disable(progress: bool | None) -> bool | None:
    """tqdm's ``disable``: None shows bars only on a terminal."""
    return None if progress is None else not progress


class _StopForward(Exception):
    """Raised by the hook on the deepest requested block to end the forward pass early."""


@dataclass
class Activations:
    """Per-layer mean activations (float32) and, if kept, per-prompt rows in input order."""

    layers: list[int]
    means: dict[int, torch.Tensor]
    n: int
    position: str
    rows: dict[int, torch.Tensor] | None = None
    n_tokens: int = 0
    site: str = SITE_TEMPLATE
    meta: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, layer: int) -> torch.Tensor:
        return self.means[layer]

    def stack(self) -> torch.Tensor:
        """Means as one (n_layers_recorded, d) tensor, in ``self.layers`` order."""
        return torch.stack([self.means[layer] for layer in self.layers])

    def row_matrix(self, layer: int) -> torch.Tensor:
        if self.rows is None:
            raise ValueError("rows were not kept: call record_activations(..., keep_rows=True)")
        return self.rows[layer]


Reducer = Callable[[torch.Tensor], torch.Tensor]


@contextmanager
def capture_blocks(
    lm: LoadedModel,
    layers: Sequence[int],
    *,
    stop_after_deepest: bool = True,
    reduce: Reducer | None = None,
) -> Iterator[dict[int, torch.Tensor]]:
    """Within the block, forwards of ``lm`` store each requested block's output (the residual
    stream after it) in the yielded dict; with ``stop_after_deepest`` the forward raises
    :class:`_StopForward` right after the deepest one (use :func:`truncated_forward`). With
    ``reduce`` the hook stores ``reduce(output)`` instead (e.g. the per-prompt position mean,
    shape (B, d)), so the full (B, T, d) outputs of many layers are never held at once. The
    hooks are removed on exit, also after an exception."""
    blocks = lm.layout.blocks
    store: dict[int, torch.Tensor] = {}
    deepest = max(layers)
    handles = []

    def make_hook(layer: int) -> Any:
        def hook(_mod: torch.nn.Module, _args: Any, output: Any) -> None:
            h = output[0] if isinstance(output, tuple) else output
            store[layer] = h if reduce is None else reduce(h)
            if stop_after_deepest and layer == deepest:
                raise _StopForward

        return hook

    try:
        for layer in layers:
            handles.append(blocks[layer].register_forward_hook(make_hook(layer)))
        yield store
    finally:
        for h in handles:
            h.remove()


def truncated_forward(
    lm: LoadedModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    position_ids: torch.Tensor,
    layers: Sequence[int],
    *,
    reduce: Reducer | None = None,
) -> dict[int, torch.Tensor]:
    """One forward pass that stops after the deepest of ``layers``; returns their outputs
    (passed through ``reduce`` as each block finishes, if given)."""
    with capture_blocks(lm, layers, reduce=reduce) as store, contextlib.suppress(_StopForward):
        lm.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=False,
        )
    missing = [layer for layer in layers if layer not in store]
    if missing:
        raise RuntimeError(f"blocks {missing} did not run during the forward pass")
    return dict(store)


def length_batches(encs: Sequence[EncodedPrompt], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length (longest first), so little padding is
    computed and an out-of-memory shows on the first batch."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = sorted(range(len(encs)), key=lambda i: (-len(encs[i]), i))
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def _weights(
    encs: Sequence[EncodedPrompt], idx: Sequence[int], width: int, position: PositionSpec
) -> torch.Tensor | None:
    """(B, width) averaging weights over each prompt's selected positions, or None for 'last'
    (the final column, thanks to left padding)."""
    if position == "last" and all(e.response_start == len(e) for e in (encs[i] for i in idx)):
        return None
    w = torch.zeros(len(idx), width)
    for row, i in enumerate(idx):
        e = encs[i]
        sel = position_indices(e, position, i)
        offset = width - len(e)
        w[row, [offset + j for j in sel]] = 1.0 / len(sel)
    return w


def _reducer(w: torch.Tensor | None, device: torch.device) -> Reducer:
    """(B, T, d) block output -> (B, d) float32 per-prompt means with weights ``w`` (from
    :func:`_weights`; None: the last column). Always a fresh tensor, never a view that would
    keep the block output alive."""
    if w is None:
        return lambda h: h[:, -1, :].to(torch.float32, copy=True)
    w_dev = w.to(device=device, dtype=torch.float32)
    return lambda h: torch.einsum("bt,btd->bd", w_dev, h.float())


def prepare(
    lm: LoadedModel, prompts: Sequence[PromptLike], layers: int | Sequence[int] | str,
    position: PositionSpec,
) -> tuple[list[int], list[EncodedPrompt]]:
    """Resolve the layers and tokenize the prompts, validating every position mask before any
    compute."""
    items = check_prompts(prompts, "record_activations")
    layer_ids = resolve_layers(layers, lm.n_layers)
    encs = [encode(lm.tokenizer, p) for p in items]
    for i, e in enumerate(encs):
        if len(e) == 0:
            raise ValueError(f"prompt {i} tokenizes to no tokens")
        position_indices(e, position, i)
    return layer_ids, encs


class Accumulator:
    """Running float64 sums of per-prompt means per layer (and the rows, on request), with a
    check that every value is finite."""

    def __init__(self, layers: Sequence[int], n: int, d: int, keep_rows: bool,
                 rows_dtype: torch.dtype) -> None:  # fmt: skip
        self.layers = list(layers)
        self.n = n
        self.sums = {layer: torch.zeros(d, dtype=torch.float64) for layer in self.layers}
        self.rows = (
            {layer: torch.empty(n, d, dtype=rows_dtype) for layer in self.layers}
            if keep_rows
            else None
        )
        self.n_tokens = 0

    def add(self, idx: Sequence[int], per_layer: Mapping[int, torch.Tensor]) -> None:
        """Add the (B, d) per-prompt means of the prompts ``idx`` (input order indices)."""
        for layer in self.layers:
            per = per_layer[layer].float()
            if not torch.isfinite(per).all():
                bad = [idx[r] for r in range(len(idx)) if not torch.isfinite(per[r]).all()]
                raise FloatingPointError(
                    f"non-finite activations at layer {layer} for prompts {bad[:10]}: "
                    "check the model weights and dtype (float16 overflows; try float32 "
                    "or bfloat16)"
                )
            self.sums[layer] += per.sum(0, dtype=torch.float64).cpu()
            if self.rows is not None:
                self.rows[layer][torch.tensor(idx)] = per.to("cpu", self.rows[layer].dtype)

    def result(self, position: PositionSpec, meta: dict[str, Any]) -> Activations:
        means = {layer: (s / self.n).float() for layer, s in self.sums.items()}
        return Activations(layers=self.layers, means=means, n=self.n,
                           position=position_name(position), rows=self.rows,
                           n_tokens=self.n_tokens, meta=meta)  # fmt: skip


def record_activations(
    model: Any,
    prompts: Sequence[PromptLike],
    layers: int | Sequence[int] | str = "all",
    position: PositionSpec = "last",
    *,
    batch_size: int = 32,
    keep_rows: bool = False,
    rows_dtype: torch.dtype = torch.float32,
    progress: bool | None = None,
    desc: str = "record",
) -> Activations:
    """Record mean activations of the residual stream after each requested block.

    ``means[ℓ] = (1/|X|) Σ_x hˡ(x)`` with hˡ(x) the mean over the selected positions of x
    (DESIGN.md "Directions"), accumulated in float64 and returned as float32. With
    ``keep_rows`` the per-prompt hˡ(x) are kept too, in input order, as ``rows_dtype``.
    """
    lm = as_model(model)
    if lm.extra.get("backend") not in (None, "hf"):
        from steerlens.backends import record_foreign

        return record_foreign(lm, prompts, layers, position, batch_size=batch_size,
                              keep_rows=keep_rows, rows_dtype=rows_dtype, progress=progress,
                              desc=desc)  # fmt: skip
    layer_ids, encs = prepare(lm, prompts, layers, position)
    acc = Accumulator(layer_ids, len(encs), lm.hidden_size, keep_rows, rows_dtype)
    device = lm.device
    batches = length_batches(encs, batch_size)
    with torch.inference_mode():
        for idx in tqdm(batches, desc=desc, disable=_tqdm_disable(progress), leave=False):
            ids, mask, pos = pad_batch([encs[i] for i in idx], lm.tokenizer.pad_token_id, device)
            acc.n_tokens += int(mask.sum())
            w = _weights(encs, idx, ids.shape[1], position)
            # reduce each block's output to (B, d) inside its hook: the (B, T, d) outputs of
            # the requested layers are not all held until the forward ends
            acc.add(idx, truncated_forward(lm, ids, mask, pos, layer_ids, reduce=_reducer(w, device)))
    return acc.result(position, {"model": lm.name, "fingerprint": lm.fingerprint})
