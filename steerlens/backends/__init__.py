"""Backends: plain torch hooks on HF models (default), nnsight and TransformerLens objects.

One protocol (:class:`~steerlens.backends.protocol.Backend`: ``record_batch`` and ``steer``),
three implementations:

- ``hf``: torch hooks on the HF module. A model on one device runs the code in
  :mod:`steerlens.activations` / :mod:`steerlens.intervene` directly (no overhead); an
  accelerate-sharded model (``device_map`` over several devices, or offload) runs
  :class:`~steerlens.backends.hf.HFBackend` (backend name ``"accelerate"``).
- ``nnsight``: :class:`~steerlens.backends.nnsight.NNsightBackend`, nnsight traces and edits;
  also remote (NDIF) recording, see :func:`from_nnsight`.
- ``transformer_lens``: :class:`~steerlens.backends.transformer_lens.TransformerLensBackend`,
  hooks on ``blocks.{ℓ}.hook_resid_post`` of a TransformerLens 4 ``TransformerBridge``.

A user passes whichever object they hold to any steerlens function (or to
:func:`steerlens.wrap`); :func:`unwrap_foreign` detects it. The nnsight and TransformerLens
packages are optional (``pip install steerlens[backends]``) and imported only when such an object
is used.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from steerlens.activations import Activations
    from steerlens.backends.protocol import Backend
    from steerlens.intervene import Mode, Positions
    from steerlens.models import LoadedModel
    from steerlens.prompts import PositionSpec, PromptLike
    from steerlens.vectors import SteeringVector

#: backend names that are torch hooks on the HF module
HF_NAMES = (None, "hf", "accelerate")
FOREIGN = ("nnsight", "transformer_lens", "accelerate")

__all__ = [
    "FOREIGN",
    "backend_for",
    "backend_name",
    "from_nnsight",
    "from_transformer_lens",
    "record_foreign",
    "steer_foreign",
    "unwrap_foreign",
]


def _kind(obj: Any) -> str | None:
    mod = type(obj).__module__
    if mod.startswith("nnsight"):
        return "nnsight"
    if mod.startswith("transformer_lens"):
        return "transformer_lens"
    return None


def unwrap_foreign(obj: Any) -> tuple[Any, Any, str | None]:
    """(HF module, tokenizer or None, backend name or None for a plain one-device HF model).

    nnsight objects (``LanguageModel``, ``TransformersModel``, ``NNsight``) give their wrapped
    module (``_module``); a TransformerLens bridge gives ``original_model``; an HF model
    dispatched by accelerate over several devices gives backend ``"accelerate"``.
    """
    kind = _kind(obj)
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
    from steerlens.backends.hf import is_sharded

    if is_sharded(obj):
        return obj, None, "accelerate"
    return obj, None, None


def backend_name(lm: LoadedModel) -> str:
    """``"hf"``, ``"accelerate"``, ``"nnsight"`` or ``"transformer_lens"``."""
    return str(lm.extra.get("backend") or "hf")


def backend_for(lm: LoadedModel) -> Backend:
    """The :class:`~steerlens.backends.protocol.Backend` that runs ``lm``."""
    name = lm.extra.get("backend")
    if name in HF_NAMES:
        from steerlens.backends.hf import HFBackend

        return HFBackend(lm)
    if name == "nnsight":
        from steerlens.backends.nnsight import NNsightBackend

        return NNsightBackend(
            lm,
            lm.extra["foreign"],
            remote=lm.extra.get("remote", False),
            edits=lm.extra.get("nnsight_edits"),
        )
    if name == "transformer_lens":
        from steerlens.backends.transformer_lens import TransformerLensBackend

        return TransformerLensBackend(lm, lm.extra["foreign"])
    raise ValueError(
        f"unknown backend {name!r}: use 'hf', 'accelerate', 'nnsight' or 'transformer_lens'"
    )


def record_foreign(
    lm: LoadedModel,
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
    """:func:`steerlens.record_activations` for a model whose backend is not plain HF hooks
    (called by it; same arguments and result, plus ``meta["backend"]``)."""
    from steerlens.backends.protocol import record_with

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
    )


@contextmanager
def steer_foreign(
    lm: LoadedModel,
    vector: SteeringVector | Mapping[int, torch.Tensor] | torch.Tensor,
    alpha: float = 1.0,
    layers: int | Sequence[int] | str | None = None,
    mode: Mode = "add",
    *,
    positions: Positions = "all",
    base: Any = None,
) -> Iterator[LoadedModel]:
    """:func:`steerlens.steer` through the backend that runs ``lm`` (HF hooks, nnsight, TL)."""
    from steerlens.backends.protocol import make_plan

    plan = make_plan(lm, vector, alpha, layers, mode, positions=positions, base=base)
    with backend_for(lm).steer(plan) as m:
        yield m
    plan.check()  # not reached when the block raised: that error is the one to see


def from_nnsight(
    model: Any,
    tokenizer: Any = None,
    *,
    remote: bool | str = False,
    name: str | None = None,
) -> LoadedModel:
    """A :class:`~steerlens.models.LoadedModel` that runs through an nnsight object.

    ``remote=True`` sends every trace to NDIF (``trace(..., remote=True)``): build the model
    as ``LanguageModel("org/model")`` without ``dispatch=True`` so its weights never load here,
    set your key with ``nnsight.CONFIG.set_default_api_key(...)``. ``remote="local"`` runs
    nnsight's serverless simulation of the remote path. A URL string sends to that host.
    """
    from steerlens.backends.nnsight import is_remotable
    from steerlens.models import wrap

    if _kind(model) != "nnsight":
        raise TypeError(f"from_nnsight needs an nnsight model, got {type(model).__name__}")
    if remote and not is_remotable(model):
        raise ValueError(
            f"{type(model).__name__} cannot run remotely: use nnsight.LanguageModel('org/model')"
        )
    if not remote and not getattr(model, "dispatched", True):
        model.dispatch()  # load the real weights for local runs
    lm = wrap(model, tokenizer, name=name)
    lm.extra["remote"] = remote
    if not remote:
        return lm
    from steerlens.backends.nnsight import NNsightBackend, RemoteRouted

    if any(p.device.type == "meta" for p in lm.model.parameters()):
        # weights are not here: identify the model by its remote key instead of its weights
        import hashlib

        key = f"{getattr(model, 'repo_id', None)}@{getattr(model, 'revision', None)}"
        lm.__dict__["fingerprint"] = hashlib.sha256(key.encode()).hexdigest()[:16]
        lm.source = f"ndif:{getattr(model, 'repo_id', '')}"
    else:
        lm.__dict__["fingerprint"] = lm.fingerprint  # from the real weights, before the swap
    # plain calls of lm.model (behavior metrics) run remotely too; inputs are built on the CPU
    lm.model = RemoteRouted(NNsightBackend(lm, model, remote=remote), lm.model)
    return lm


def from_transformer_lens(
    bridge: Any, tokenizer: Any = None, *, name: str | None = None
) -> LoadedModel:
    """A :class:`~steerlens.models.LoadedModel` that runs through a TransformerLens bridge
    (same as :func:`steerlens.wrap`; pass the HF tokenizer for token ids identical to HF)."""
    from steerlens.models import wrap

    if _kind(bridge) != "transformer_lens":
        raise TypeError(
            f"from_transformer_lens needs a TransformerBridge, got {type(bridge).__name__}"
        )
    return wrap(bridge, tokenizer, name=name)
