"""nnsight backend: record through nnsight traces, steer through nnsight interventions.

Works with whatever nnsight object a user holds: ``LanguageModel(hf_model, tokenizer=tok)``,
``TransformersModel(...)`` or a plain ``NNsight(hf_model)``. Recording runs one
``envoy.trace(...)`` per batch that reads ``<blocks>[ℓ].output`` for each requested layer,
reduces the selected positions inside the trace (so only (B, d) rows come back, which matters
remotely) and stops the forward after the deepest block (``tracer.stop()``).

Steering stores the edit with ``envoy.edit()`` on a copy of the envoy (the user's envoy is never
edited): for every occurrence of each block (``tracer.all()``: the prompt and each generated
token), the block output is replaced by :meth:`EditPlan.transform` of it. Inside
``steer(...)`` the yielded model routes plain calls and ``generate`` through the edited
envoy, so behavior metrics and generation run the intervention.

**Remote (NDIF).** ``from_nnsight(LanguageModel("org/big-model"), remote=True)`` makes
:func:`steerlens.record_activations` send each batch's trace with ``remote=True``; the model is
never loaded locally (nnsight builds it on the meta device) and only the reduced rows come back.
``remote="local"`` runs nnsight's local simulation of a remote request (serialize, deserialize
with local modules hidden, execute), a dry run that needs no server. Steering a remote model
applies the edit inside each trace body (:class:`InlineEdits`): single forwards and recordings,
not generation, and ``replace`` only with fixed projections. See docs/backends.md.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import nnsight
import torch
from torch import nn

from steerlens.loading.foreign import embedding_device
from steerlens.loading.models import LoadedModel
from steerlens.runtime.backends.forward import plan_pre_hook
from steerlens.runtime.backends.protocol import NoPrefixSharing, NoSplitForward
from steerlens.runtime.edits import EditPlan


def envoy_at(root: Any, path: str) -> Any:
    """The child envoy at dotted ``path`` (e.g. ``"model.layers"``) of an nnsight envoy."""
    obj = root
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def is_remotable(envoy: Any) -> bool:
    """Whether the nnsight object can run remotely (``trace(..., remote=...)``)."""
    from nnsight.modeling.mixins.remotable import Remotable

    return isinstance(envoy, Remotable)


@contextmanager
def _quiet() -> Iterator[None]:
    """nnsight warns when a stored ``tracer.all()`` edit waits for a step that never comes
    (every run ends that way) and about its own deprecations; steerlens expects both."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", FutureWarning)
        yield


class NNsightBackend(NoPrefixSharing, NoSplitForward):
    """Record and steer through an nnsight envoy (see the module doc)."""

    name = "nnsight"

    def __init__(
        self,
        lm: LoadedModel,
        envoy: Any,
        *,
        remote: bool | str = False,
        edits: InlineEdits | None = None,
    ) -> None:
        if remote and not is_remotable(envoy):
            raise ValueError(
                f"{type(envoy).__name__} cannot run remotely: wrap the model as "
                "nnsight.LanguageModel('org/model') (or TransformersModel) for NDIF"
            )
        self.lm = lm
        self.envoy = envoy
        self.remote = remote
        self.edits = edits

    def input_device(self) -> torch.device:
        if self.remote:
            return torch.device("cpu")
        return embedding_device(self.lm.model)

    def _trace_kwargs(self) -> dict[str, Any]:
        return {"remote": self.remote} if self.remote else {}

    def record_batch(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        layers: Sequence[int],
        weights: torch.Tensor | None,
    ) -> dict[int, torch.Tensor]:
        """One nnsight trace: the position mean of ``blocks[ℓ].output`` per layer, stopped
        after the deepest one."""
        inputs = {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "position_ids": position_ids,
            "use_cache": False,
        }
        captured, _ = self.run((), inputs, layers, weights, stop=True)
        return captured

    def run(
        self,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        layers: Sequence[int] = (),
        weights: torch.Tensor | None = None,
        *,
        stop: bool,
    ) -> tuple[dict[int, torch.Tensor], Any]:
        """One ``envoy.trace(*args, **kwargs)``: applies :attr:`edits` (if any), records the
        position means of ``layers`` (after the edits), then stops (``stop``) or returns the
        model's output. Returns ({layer: (B, d)}, output or None).

        The trace body uses only torch, plain numbers and the envoys, because it is shipped as
        source to NDIF, where steerlens is not installed; the edit formulas are those of
        DESIGN.md "Hook modes" (the parity tests compare them with :mod:`steerlens.runtime.intervene`).
        """
        blocks = envoy_at(self.envoy, self.lm.layout.path)
        ed = self.edits
        mode = ed.mode if ed else "add"
        alpha = ed.alpha if ed else 0.0
        vecs = ed.vecs if ed else {}
        units = ed.units if ed else {}
        fixed = ed.fixed if ed else {}
        rec = set(layers)
        last = max(rec) if stop else len(blocks) - 1
        order = sorted(x for x in rec | set(vecs) if x <= last)  # the order the forward runs
        trace_kwargs = {**kwargs, **self._trace_kwargs()}
        with _quiet():  # noqa: SIM117 - nnsight captures the body of its own `with` statement
            with self.envoy.trace(*args, **trace_kwargs) as tracer:
                captured = nnsight.save({})
                for layer in order:
                    out = blocks[layer].output
                    h = out[0] if isinstance(out, tuple) else out
                    if layer in vecs:
                        x = h.float()
                        if mode == "add":
                            x = x + alpha * vecs[layer].to(x.device)
                        else:
                            u = units[layer].to(x.device)
                            x = x - (x @ u).unsqueeze(-1) * u
                            if mode == "replace":
                                x = x + fixed[layer] * u
                        h = x.to(h.dtype)
                        blocks[layer].output = (h, *out[1:]) if isinstance(out, tuple) else h
                    if layer in rec:
                        if weights is None:
                            captured[layer] = h[:, -1, :].float()
                        else:
                            w = weights.to(device=h.device, dtype=torch.float32)
                            captured[layer] = torch.einsum("bt,btd->bd", w, h.float())
                if stop:
                    tracer.stop()
                result = nnsight.save([tracer.result])
        return {layer: captured[layer] for layer in sorted(rec)}, (None if stop else result[0])

    @contextmanager
    def steer(self, plan: EditPlan) -> Iterator[LoadedModel]:
        if self.remote:
            edits = InlineEdits.from_plan(plan)
            remote_lm = replace(self.lm, inline_edits=edits)
            backend = NNsightBackend(remote_lm, self.envoy, remote=self.remote, edits=edits)
            remote_lm.model = RemoteRouted(backend, raw_module(self.lm.model))
            if "fingerprint" in self.lm.__dict__:
                remote_lm.__dict__["fingerprint"] = self.lm.fingerprint
            yield remote_lm
            return
        path = self.lm.layout.path
        layers = plan.layers
        with _quiet():  # noqa: SIM117 - nnsight captures the body of its own `with` statement
            with self.envoy.edit() as (tracer, edited):
                eblocks = envoy_at(edited, path)
                for _step in tracer.all():
                    for layer in layers:
                        out = eblocks[layer].output
                        h = out[0] if isinstance(out, tuple) else out
                        new = plan.transform(layer, h)
                        if new is not None:
                            eblocks[layer].output = (
                                (new, *out[1:]) if isinstance(out, tuple) else new
                            )
        inner = raw_module(self.lm.model)
        routed = Routed(edited, inner)
        steered = replace(self.lm, model=routed, foreign=edited)
        if "fingerprint" in self.lm.__dict__:
            steered.__dict__["fingerprint"] = self.lm.fingerprint
        handle = inner.register_forward_pre_hook(plan_pre_hook(plan), with_kwargs=True)
        try:
            yield steered
        finally:
            handle.remove()
            edited.clear_edits()


class Routed(nn.Module):
    """The HF model seen through an edited nnsight envoy: calling it or its ``generate`` runs
    the envoy (so the stored interventions apply); every other attribute (``config``,
    ``model.layers``, parameters) is the HF model's."""

    def __init__(self, envoy: Any, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self._envoy = envoy

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("inner"), name)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        with _quiet():
            return self._envoy.trace(*args, trace=False, **kwargs)

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        with _quiet():
            return self._envoy.interleave(self.inner.generate, *args, **kwargs)


@dataclass(frozen=True)
class InlineEdits:
    """An :class:`EditPlan` as plain tensors and numbers, applied inside the trace body itself
    (remote runs: the body travels to NDIF as source, the plan object cannot)."""

    mode: str
    alpha: float
    vecs: dict[int, torch.Tensor]
    units: dict[int, torch.Tensor]
    fixed: dict[int, float]

    @classmethod
    def from_plan(cls, plan: EditPlan) -> InlineEdits:
        if plan.base is not None:
            raise NotImplementedError(
                "replace with a base *model* needs the base's activations on every input, which "
                "a remote run cannot compute: pass base= the fixed projection(s) h_base·v̂ "
                "(e.g. from record_activations on the base) instead"
            )
        if plan.positions == "generated":
            raise NotImplementedError(
                "positions='generated' on a remote model needs generation, which steerlens does "
                "not run remotely yet: use positions='all' (single forwards)"
            )
        return cls(plan.mode, plan.alpha, dict(plan.directions), dict(plan.units), dict(plan.fixed))


class RemoteRouted(nn.Module):
    """Stands in for the HF module of a remote nnsight model: calling it runs one remote trace
    (with the backend's inline edits, if any) and returns the model output. Its only parameter
    is an empty CPU anchor in the model's dtype, so ``LoadedModel.device`` is the CPU (inputs
    are built here and shipped) and ``.dtype`` the model's; every other attribute (``config``,
    ``model.layers``) is the wrapped (meta-device) module's."""

    def __init__(self, backend: NNsightBackend, inner: nn.Module) -> None:
        super().__init__()
        object.__setattr__(self, "raw", inner)  # not a submodule: its weights are elsewhere
        self._backend = backend
        dtype = next(inner.parameters()).dtype
        self.anchor = nn.Parameter(torch.empty(0, dtype=dtype), requires_grad=False)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.__dict__["raw"], name)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self._backend.run(args, kwargs, stop=False)[1]

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(
            "generation on a remote model is not supported by steerlens yet: use single "
            "forwards (behavior log-probs), or nnsight's model.generate(..., remote=True)"
        )


def raw_module(model: nn.Module) -> nn.Module:
    """The HF module behind a :class:`Routed` / :class:`RemoteRouted` stand-in."""
    if isinstance(model, RemoteRouted):
        return model.__dict__["raw"]
    if isinstance(model, Routed):
        return model.inner
    return model
