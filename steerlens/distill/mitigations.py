"""Mitigations of trait transfer a user applies to their own distillation (issue 18).

- **Vetting** (:func:`vet`, :func:`vet_by_scores`): drop the top ``frac`` of the training
  samples by projection difference ΔP (:func:`steerlens.screen.screen_dataset`, Chen et al.
  2025) before distilling; ``mode="random"`` drops the same number at random (seeded), the
  control arm. The kept data records what was dropped in ``settings["vetting"]``, so the
  student's ``distill.json`` and lineage hash carry it.
- **Trait-direction regulariser** (:class:`Mitigation` ``reg_lambda``): the training objective
  gains ``λ · mean_{ℓ, t} ((h_student^ℓ(t) − h_base^ℓ(t)) · v̂^ℓ)²`` over the chosen layers ℓ
  and the batch's predicting positions t, with h the residual stream after block ℓ (the
  student's during the training forward, the base's cached once before training). It
  constrains the projection at the *training* positions only (every predicting position of the
  training samples: the prompt's last token and the response tokens); alignment measured
  elsewhere (EAS = cos of the mean shift at the probe prompts' last token) is not constrained
  and, being a cosine, can rise when the other components of the shift shrink more. Under Adam
  the update is invariant to the loss scale, so once λ·∇penalty dominates ∇(distillation loss)
  and the projection sits at its noise floor, larger λ gives the same student (saturation);
  the penalty is in raw residual units², so the λ at which it saturates depends on the model.
  Note the mean of squares (each position held), not the square of the mean.
- **Preventative steering** (:class:`Mitigation` ``steer_alpha``): ``h^ℓ ← h^ℓ + α v^ℓ`` at
  the chosen layers during the training forwards only (persona_vectors steers with α > 0 so the
  weights need not move along v; α < 0 subtracts). The hooks live inside each training step's
  forward, so saved checkpoints, evaluation and the user's model never see them.

``distill(..., mitigation=Mitigation(...))`` records :meth:`Mitigation.lineage` in the
checkpoint lineage.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from steerlens.core.common import sha256_bytes
from steerlens.core.results import Record
from steerlens.core.sites import find_layers
from steerlens.core.vectors import SteeringVector
from steerlens.distill.chats import Example
from steerlens.distill.data import TeacherData
from steerlens.distill.targets import batch_tensors
from steerlens.inputs.prompts import EncodedPrompt, pad_batch
from steerlens.loading.models import LoadedModel
from steerlens.runtime.activations import truncated_forward
from steerlens.screen import screen_dataset

__all__ = ["Mitigation", "TrainingMitigation", "VetResult", "vet", "vet_by_scores"]

VetMode = Literal["top", "random"]


def vector_sha256(vec: SteeringVector, layers: Sequence[int]) -> str:
    """sha256 of the float32 directions at ``layers`` (in order)."""
    return sha256_bytes(b"".join(vec[ly].numpy().tobytes() for ly in layers))


@dataclass(frozen=True)
class Mitigation:
    """Training-time mitigations along the teacher direction ``vector`` at ``layers`` (blocks
    whose output residual stream is regularised / steered; each must be a layer of the vector).

    ``reg_lambda``: weight λ ≥ 0 of the trait-direction regulariser. ``steer_alpha``: α of the
    preventative steering h ← h + α v (training forwards only; 0 = off)."""

    vector: SteeringVector
    layers: tuple[int, ...]
    reg_lambda: float = 0.0
    steer_alpha: float = 0.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", tuple(sorted({int(x) for x in self.layers})))
        if not self.layers:
            raise ValueError("Mitigation needs at least one layer")
        missing = [ly for ly in self.layers if ly not in self.vector]
        if missing:
            raise ValueError(
                f"Mitigation layers {missing} are not in the vector (it has {self.vector.layers})"
            )
        if self.reg_lambda < 0:
            raise ValueError(f"reg_lambda must be >= 0, got {self.reg_lambda}")

    @property
    def regularises(self) -> bool:
        return self.reg_lambda > 0

    def lineage(self) -> dict[str, Any]:
        return {
            "vector_sha256": vector_sha256(self.vector, self.layers),
            "layers": list(self.layers),
            "reg_lambda": float(self.reg_lambda),
            "steer_alpha": float(self.steer_alpha),
        }


def _hidden(out: Any) -> torch.Tensor:
    return out[0] if isinstance(out, tuple) else out


class TrainingMitigation:
    """A :class:`Mitigation` bound to a training set: the base's cached projections on v̂ at
    the predicting positions (for the regulariser) and the hooks of a training forward."""

    def __init__(
        self, lm: LoadedModel, exs: Sequence[Example], m: Mitigation, first: int, batch: int
    ):
        self.m = m
        below = [ly for ly in m.layers if ly < first]
        if m.regularises and below:
            raise ValueError(
                f"regulariser layers {below} are below the lowest LoRA layer {first}: the "
                "student's residual stream there equals the base's; pick layers >= it"
            )
        #: steering below the lowest LoRA layer needs the full forward (the fast path skips it)
        self.needs_full_forward = bool(below)
        dev, dt = lm.device, next(lm.model.parameters()).dtype
        self.units = {ly: (m.vector[ly] / m.vector[ly].norm()).to(dev, dt) for ly in m.layers}
        self.adds = {ly: (m.steer_alpha * m.vector[ly]).to(dev, dt) for ly in m.layers}
        self.base_proj: list[dict[int, torch.Tensor]] = []
        if m.regularises:
            self.base_proj = self._base_projections(lm, exs, batch)

    def _base_projections(
        self, lm: LoadedModel, exs: Sequence[Example], batch: int
    ) -> list[dict[int, torch.Tensor]]:
        out: list[dict[int, torch.Tensor]] = []
        with torch.inference_mode():
            for s in range(0, len(exs), batch):
                chunk = exs[s : s + batch]
                encs = [EncodedPrompt(e.ids, 0, len(e.ids)) for e in chunk]
                ids, mask, pos = pad_batch(encs, lm.tokenizer.pad_token_id, lm.device)
                hs = truncated_forward(lm, ids, mask, pos, list(self.m.layers))
                w = ids.shape[1]
                for r, e in enumerate(chunk):
                    cols = slice(w - len(e.ids) + e.start - 1, w - 1)
                    out.append({ly: (hs[ly][r, cols] @ self.units[ly]).clone() for ly in hs})
        return out

    @contextlib.contextmanager
    def hooks(self, hf: nn.Module) -> Iterator[dict[int, list[torch.Tensor]]]:
        """Hooks on the chosen blocks of ``hf`` for one training forward: steering (α ≠ 0) and
        capture of the (unsteered) block outputs; yields the captured outputs per layer."""
        blocks = find_layers(hf).blocks
        captured: dict[int, list[torch.Tensor]] = {ly: [] for ly in self.m.layers}

        def make(ly: int) -> Any:
            def hook(_mod: nn.Module, _args: Any, out: Any) -> Any:
                h = _hidden(out)
                if self.m.regularises:
                    captured[ly].append(h)
                if self.m.steer_alpha == 0:
                    return None
                h2 = h + self.adds[ly]
                return (h2, *out[1:]) if isinstance(out, tuple) else h2

            return hook

        handles = [blocks[ly].register_forward_hook(make(ly)) for ly in self.m.layers]
        try:
            yield captured
        finally:
            for h in handles:
                h.remove()

    def _shifts(
        self, captured: dict[int, list[torch.Tensor]], exs: Sequence[Example], idx: Sequence[int]
    ) -> dict[int, list[torch.Tensor]]:
        """Per layer, per example, (h_s − h_b)·v̂ at the example's predicting positions (the
        captured student outputs against the base's projections of training example ``idx[r]``)."""
        out: dict[int, list[torch.Tensor]] = {}
        for ly in self.m.layers:
            if len(captured[ly]) != 1:
                raise RuntimeError(f"block {ly} ran {len(captured[ly])} times in one forward")
            h = captured[ly][0]
            w = h.shape[1]
            out[ly] = [
                h[r, w - len(e.ids) + e.start - 1 : w - 1] @ self.units[ly] - self.base_proj[i][ly]
                for r, (e, i) in enumerate(zip(exs, idx, strict=True))
            ]
        return out

    def penalty(
        self, captured: dict[int, list[torch.Tensor]], exs: Sequence[Example], idx: Sequence[int]
    ) -> torch.Tensor:
        """λ · mean over layers and predicting positions of ((h_s − h_b)·v̂)²."""
        if not self.m.regularises:
            return torch.zeros(())
        rows = self._shifts(captured, exs, idx)
        return (
            self.m.reg_lambda
            * torch.cat([t.pow(2) for ly in self.m.layers for t in rows[ly]]).mean()
        )

    def shifts(self, hf: nn.Module, exs: Sequence[Example], pad_id: int) -> dict[int, torch.Tensor]:
        """Per layer, the student's (h_s − h_b)·v̂ at every position the penalty uses, over
        ``exs`` (the training examples this was built on), in one forward of ``hf``."""
        ids, mask, pos, *_ = batch_tensors(exs, pad_id, next(hf.parameters()).device)
        with torch.no_grad(), self.hooks(hf) as cap:
            hf(input_ids=ids, attention_mask=mask, position_ids=pos)
        rows = self._shifts(cap, exs, range(len(exs)))
        return {ly: torch.cat(rows[ly]) for ly in self.m.layers}


# ------------------------------------------------------------------------------ vetting


@dataclass(frozen=True)
class VetResult(Record):
    """Vetted data: ``data`` keeps the samples not in ``dropped`` (indices into the input, in
    order); ``scores`` are the ΔP used for ranking (None for a random drop by scores);
    ``n_kept`` the samples kept. ``data`` lives in memory only (the JSON holds the rest;
    the data has its own file)."""

    data: TeacherData = field(
        default_factory=lambda: TeacherData([]), compare=False, metadata={"json": False}
    )
    dropped: list[int] = field(default_factory=list)
    mode: str = "top"
    frac: float = 0.0
    seed: int = 0
    scores: list[float] | None = None
    n_kept: int = -1

    def __post_init__(self) -> None:
        if self.n_kept < 0:  # not given: the kept samples of ``data``
            object.__setattr__(self, "n_kept", len(self.data.samples))

    def summary(self) -> str:
        return (
            f"vetting ({self.mode}, frac {self.frac}, seed {self.seed}): dropped "
            f"{len(self.dropped)}, kept {self.n_kept}"
        )


def vet_by_scores(
    data: TeacherData,
    scores: Sequence[float],
    frac: float,
    *,
    mode: VetMode = "top",
    seed: int = 0,
) -> VetResult:
    """Drop ``round(frac · n)`` samples: the highest ``scores`` (``mode="top"``; NaN ranks
    lowest, ties by index) or a seeded random set of the same size (``mode="random"``)."""
    n = len(data.samples)
    if len(scores) != n:
        raise ValueError(f"{len(scores)} scores for {n} samples: score every sample")
    if not 0 <= frac < 1:
        raise ValueError(f"frac must be in [0, 1), got {frac}")
    k = round(frac * n)
    if k == 0:
        raise ValueError(f"frac={frac} of {n} samples drops nothing: raise frac")
    if mode == "top":
        s = np.nan_to_num(np.asarray(scores, dtype=float), nan=-np.inf)
        order = sorted(range(n), key=lambda i: (-s[i], i))
        dropped = sorted(order[:k])
    elif mode == "random":
        dropped = sorted(np.random.default_rng(seed).choice(n, size=k, replace=False).tolist())
    else:
        raise ValueError(f"mode must be 'top' or 'random', got {mode!r}")
    gone = set(dropped)
    kept = [smp for i, smp in enumerate(data.samples) if i not in gone]
    settings = {
        **data.settings,
        "vetting": {"mode": mode, "frac": frac, "seed": seed, "dropped": dropped, "n_in": n},
    }
    out = TeacherData(kept, settings, list(data.rejected), data.teacher)
    return VetResult(out, dropped, mode, frac, seed, [float(x) for x in scores])


def vet(
    model: Any,
    data: TeacherData,
    vector: SteeringVector,
    frac: float,
    *,
    mode: VetMode = "top",
    layer: int | None = None,
    seed: int = 0,
    max_new_tokens: int = 32,
    progress: bool | None = None,
) -> VetResult:
    """Score every sample by projection difference ΔP on ``vector`` at ``layer``
    (:func:`steerlens.screen.screen_dataset`, the student's view: no system prompt) and drop
    the top ``frac`` (or, ``mode="random"``, as many at random: the control)."""
    samples = [{"user": s["user"], "response": s["response"]} for s in data.samples]
    res = screen_dataset(
        model,
        vector,
        samples,
        layers=[layer] if layer is not None else None,
        layer=layer,
        max_new_tokens=max_new_tokens,
        seed=seed,
        progress=progress,
    )
    return vet_by_scores(data, res.scores().tolist(), frac, mode=mode, seed=seed)
