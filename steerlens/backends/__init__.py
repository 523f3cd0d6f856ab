"""Backends: plain torch hooks on HF models (default), nnsight and TransformerLens objects.

One protocol (:class:`~steerlens.runtime.backends.protocol.Backend`: ``record_batch``, ``steer``, and
the fast paths ``record_shared`` and ``split_after`` where a runtime offers them), four
implementations:

- ``hf``: :class:`~steerlens.runtime.backends.hf.HFBackend`, torch hooks on the HF module, on one
  device or accelerate-sharded (``device_map`` over several devices, or offload: backend name
  ``"accelerate"``); prefix sharing and the truncated forward live in
  :mod:`steerlens.runtime.backends.forward`, the forward cut after one block
  (:class:`~steerlens.runtime.backends.hf.HFSplitForward`, the carry test's batched conditions) runs
  the upper blocks by :mod:`steerlens.runtime.backends.upper`.
- ``nnsight``: :class:`~steerlens.runtime.backends.nnsight.NNsightBackend`, nnsight traces and edits;
  also remote (NDIF) recording, see :func:`from_nnsight`.
- ``transformer_lens``: :class:`~steerlens.runtime.backends.transformer_lens.TransformerLensBackend`,
  hooks on ``blocks.{ℓ}.hook_resid_post`` of a TransformerLens 4 ``TransformerBridge``.
- ``module``: :class:`~steerlens.runtime.backends.module.ModuleBackend`, hooks on named submodules of a
  plain torch module (:func:`steerlens.wrap_module`), input tensors instead of prompts.

A user passes whichever object they hold to any steerlens function (or to
:func:`steerlens.wrap`); :func:`steerlens.loading.foreign.unwrap_foreign` detects it. The nnsight and TransformerLens
packages are optional (``pip install steerlens[backends]``) and imported only when such an object
is used.
"""

from __future__ import annotations

from typing import Any

from steerlens.core.common import sha256_bytes
from steerlens.loading.foreign import foreign_kind
from steerlens.loading.models import LoadedModel, wrap
from steerlens.runtime.backends.forward import (
    can_share_prefix,
    capture_blocks,
    plan_pre_hook,
    reduce_positions,
    truncated_forward,
)
from steerlens.runtime.backends.hf import HFBackend
from steerlens.runtime.backends.module import ModuleBackend
from steerlens.runtime.backends.protocol import Backend, record_with
from steerlens.runtime.backends.transformer_lens import TransformerLensBackend

__all__ = [
    "Backend",
    "HFBackend",
    "backend_for",
    "backend_name",
    "can_share_prefix",
    "capture_blocks",
    "from_nnsight",
    "from_transformer_lens",
    "plan_pre_hook",
    "record_with",
    "reduce_positions",
    "truncated_forward",
]


def backend_name(lm: LoadedModel) -> str:
    """``"hf"``, ``"accelerate"``, ``"nnsight"``, ``"transformer_lens"`` or ``"module"``."""
    return lm.backend


def backend_for(lm: LoadedModel) -> Backend:
    """The :class:`~steerlens.runtime.backends.protocol.Backend` that runs ``lm``; the nnsight and
    TransformerLens packages are imported only here, when such a model is used."""
    if lm.backend in ("hf", "accelerate"):
        return HFBackend(lm)
    if lm.backend == "nnsight":
        from steerlens.runtime.backends.nnsight import NNsightBackend

        return NNsightBackend(lm, lm.foreign, remote=lm.remote, edits=lm.inline_edits)
    if lm.backend == "module":
        return ModuleBackend(lm)
    if lm.backend == "transformer_lens":
        return TransformerLensBackend(lm, lm.foreign)
    raise ValueError(
        f"unknown backend {lm.backend!r}: use 'hf', 'accelerate', 'nnsight', "
        "'transformer_lens' or 'module'"
    )


def from_nnsight(
    model: Any,
    tokenizer: Any = None,
    *,
    remote: bool | str = False,
    name: str | None = None,
) -> LoadedModel:
    """A :class:`~steerlens.loading.models.LoadedModel` that runs through an nnsight object.

    ``remote=True`` sends every trace to NDIF (``trace(..., remote=True)``): build the model
    as ``LanguageModel("org/model")`` without ``dispatch=True`` so its weights never load here,
    set your key with ``nnsight.CONFIG.set_default_api_key(...)``. ``remote="local"`` runs
    nnsight's serverless simulation of the remote path. A URL string sends to that host.
    """
    from steerlens.runtime.backends.nnsight import is_remotable

    if foreign_kind(model) != "nnsight":
        raise TypeError(f"from_nnsight needs an nnsight model, got {type(model).__name__}")
    if remote and not is_remotable(model):
        raise ValueError(
            f"{type(model).__name__} cannot run remotely: use nnsight.LanguageModel('org/model')"
        )
    if not remote and not getattr(model, "dispatched", True):
        model.dispatch()  # load the real weights for local runs
    lm = wrap(model, tokenizer, name=name)
    lm.remote = remote
    if not remote:
        return lm
    from steerlens.runtime.backends.nnsight import NNsightBackend, RemoteRouted

    if any(p.device.type == "meta" for p in lm.model.parameters()):
        # weights are not here: identify the model by its remote key instead of its weights
        key = f"{getattr(model, 'repo_id', None)}@{getattr(model, 'revision', None)}"
        lm.__dict__["fingerprint"] = sha256_bytes(key)[:16]
        lm.source = f"ndif:{getattr(model, 'repo_id', '')}"
    else:
        lm.__dict__["fingerprint"] = lm.fingerprint  # from the real weights, before the swap
    # plain calls of lm.model (behavior metrics) run remotely too; inputs are built on the CPU
    lm.model = RemoteRouted(NNsightBackend(lm, model, remote=remote), lm.model)
    return lm


def from_transformer_lens(
    bridge: Any, tokenizer: Any = None, *, name: str | None = None
) -> LoadedModel:
    """A :class:`~steerlens.loading.models.LoadedModel` that runs through a TransformerLens bridge
    (same as :func:`steerlens.wrap`; pass the HF tokenizer for token ids identical to HF)."""
    if foreign_kind(bridge) != "transformer_lens":
        raise TypeError(
            f"from_transformer_lens needs a TransformerBridge, got {type(bridge).__name__}"
        )
    return wrap(bridge, tokenizer, name=name)
