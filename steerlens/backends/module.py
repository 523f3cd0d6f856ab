"""The backend of a plain torch module (:func:`steerlens.wrap_module`): torch forward hooks on
the submodules named as sites, the site activation of an input being the submodule's output.

Inputs are tensors (a batch dimension first), not prompts. A site output of shape (B, d) is
the activation hˡ(x) itself; one of shape (B, T, d) is reduced over T by the position
(``"last"``: h[:, -1]; ``"all"``: the mean). Recording stops after the deepest requested site
and accumulates with the same :class:`~steerlens.runtime.batching.Accumulator` (float64 sums, finite
check, rows on request) as every LM backend, so ``means[ℓ] = (1/|X|) Σ_x hˡ(x)`` is the same
formula (DESIGN.md "Directions"). ``steer`` applies the same :class:`~steerlens.runtime.edits.EditPlan`
(formulas of DESIGN.md "Hook modes", the same no-op guard); ``positions`` other than "all" and
a base model for ``replace`` are LM-only.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from tqdm.auto import tqdm

from steerlens.core.common import sha256_bytes, tqdm_disable
from steerlens.core.lm_only import LMOnlyError
from steerlens.core.sites import MODULE_SITE_TEMPLATE, module_site_name, resolve_module_sites
from steerlens.inputs.prompts import EncodedPrompt, PositionSpec
from steerlens.loading.models import LoadedModel
from steerlens.runtime.backends.forward import StopForward
from steerlens.runtime.backends.protocol import NoSplitForward
from steerlens.runtime.batching import Accumulator, Activations
from steerlens.runtime.edits import EditPlan, block_output, with_block_output

__all__ = ["ModuleBackend", "inputs_hash", "site_rows"]


def inputs_hash(x: torch.Tensor) -> str:
    """sha256 (first 16 hex) of an input tensor's shape, dtype and bytes: the provenance of a
    recording or vector on a torch module (the role a prompt-set hash plays for an LM)."""
    t = x.detach().to("cpu").contiguous()
    head = f"{tuple(t.shape)}:{t.dtype}:".encode()
    return sha256_bytes(head + t.reshape(-1).view(torch.uint8).numpy().tobytes())[:16]


def site_rows(h: torch.Tensor, position: PositionSpec) -> torch.Tensor:
    """(B, d) float32 activations of one site output: (B, d) as is, (B, T, d) reduced over T
    (``"last"``: the last position, ``"all"``: the mean), (B, C, ...) not supported."""
    if h.dim() == 2:
        return h.to(torch.float32, copy=True)
    if h.dim() == 3 and position in ("last", "all"):
        return (h[:, -1] if position == "last" else h.mean(1)).to(torch.float32, copy=True)
    raise ValueError(
        f"site output of shape {tuple(h.shape)} with position {position!r}: a torch-module site "
        "gives (batch, d), or (batch, T, d) with position 'last' or 'all'"
    )


class ModuleBackend(NoSplitForward):
    """Torch forward hooks on the site submodules of a plain torch module."""

    name = "module"

    def __init__(self, lm: LoadedModel) -> None:
        if lm.site_paths is None:
            raise TypeError(f"{lm.name!r} is not a plain torch module: use its own backend")
        self.lm = lm
        self.paths = lm.site_paths

    def input_device(self) -> torch.device:
        return self.lm.device

    def sites(self, layers: Sequence[int]) -> dict[int, str]:
        """{layer: site name} of the requested layers (provenance)."""
        return {k: module_site_name(self.paths[k]) for k in layers}

    def forward_sites(
        self, x: torch.Tensor, layers: Sequence[int], position: PositionSpec = "last"
    ) -> dict[int, torch.Tensor]:
        """{layer: (B, d) float32} site activations of one batch, the forward stopped after
        the deepest requested site."""
        blocks = self.lm.layout.blocks
        store: dict[int, torch.Tensor] = {}
        handles = []

        def make_hook(layer: int) -> Any:
            def hook(_mod: Any, _args: Any, output: Any) -> None:
                store[layer] = site_rows(block_output(output), position)
                if len(store) == len(layers):
                    raise StopForward

            return hook

        try:
            for layer in layers:
                handles.append(blocks[layer].register_forward_hook(make_hook(layer)))
            with contextlib.suppress(StopForward):
                self.lm.model(x)
        finally:
            for h in handles:
                h.remove()
        missing = [self.paths[k] for k in layers if k not in store]
        if missing:
            raise RuntimeError(f"sites {missing} did not run during the forward pass")
        return store

    def record_inputs(
        self,
        inputs: torch.Tensor,
        layers: int | Sequence[int | str] | str = "all",
        position: PositionSpec = "last",
        *,
        batch_size: int = 256,
        keep_rows: bool = False,
        rows_dtype: torch.dtype = torch.float32,
        progress: bool | None = None,
        desc: str = "record",
    ) -> Activations:
        """:func:`steerlens.record_activations` on a torch module: ``inputs`` is a tensor whose
        first dimension indexes the inputs x."""
        if not isinstance(inputs, torch.Tensor):
            raise LMOnlyError(f"recording prompts ({type(inputs).__name__})")
        if inputs.dim() < 1 or inputs.shape[0] == 0:
            raise ValueError("no inputs: pass a tensor with at least one row (batch first)")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        layer_ids = resolve_module_sites(layers, self.paths)
        n = int(inputs.shape[0])
        acc = Accumulator(layer_ids, n, self.lm.hidden_size, keep_rows, rows_dtype)
        dev = self.input_device()
        starts = range(0, n, batch_size)
        with torch.inference_mode():
            for i in tqdm(starts, desc=desc, disable=tqdm_disable(progress), leave=False):
                idx = list(range(i, min(n, i + batch_size)))
                out = self.forward_sites(inputs[i : i + batch_size].to(dev), layer_ids, position)
                acc.add(idx, out)
        meta = {
            "model": self.lm.name,
            "fingerprint": self.lm.fingerprint,
            "backend": self.name,
            "sites": self.sites(layer_ids),
            "inputs_hash": inputs_hash(inputs),
        }
        act = acc.result(position, meta)
        act.site = MODULE_SITE_TEMPLATE
        return act

    # the prompt-based half of the Backend protocol is LM-only
    def record_batch(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        layers: Sequence[int],
        weights: torch.Tensor | None,
    ) -> dict[int, torch.Tensor]:
        raise LMOnlyError("recording token batches")

    def can_share_prefix(self) -> bool:
        return False

    def record_shared(
        self,
        encs: Sequence[EncodedPrompt],
        idx: Sequence[int],
        p: int,
        layers: Sequence[int],
        position: PositionSpec,
    ) -> dict[int, torch.Tensor]:
        raise LMOnlyError("prompt-prefix sharing")

    @contextmanager
    def steer(self, plan: EditPlan) -> Iterator[LoadedModel]:
        if plan.positions != "all":
            raise LMOnlyError(f"positions={plan.positions!r} (prompt vs generated tokens)")
        if plan.base is not None:
            raise LMOnlyError("replace mode with a base model (it runs the base on tokens)")
        blocks = self.lm.layout.blocks

        def pre(_mod: Any, _args: Any) -> None:
            plan.state.forwards += 1  # every forward of a module is a full pass

        def make_hook(layer: int) -> Any:
            def hook(_mod: Any, _args: Any, output: Any) -> Any:
                new = plan.transform(layer, block_output(output))
                return None if new is None else with_block_output(output, new)

            return hook

        handles = [self.lm.model.register_forward_pre_hook(pre)]
        try:
            for layer in plan.layers:
                handles.append(blocks[layer].register_forward_hook(make_hook(layer)))
            yield self.lm
        finally:
            for h in handles:
                h.remove()
