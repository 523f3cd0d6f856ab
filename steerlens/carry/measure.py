"""Measuring a condition of the carry test: the behavior B and the off-target shift.

Off-target shift of a condition = mean over the trait's off-target prompts of
KL(P_base ‖ P_condition) of the next token at the first answer position (nats,
:func:`steerlens.measures.stats.kl_rows`), P_base the unsteered base without a system prompt.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from steerlens.carry.batched import LayerConditions, can_batch_layer
from steerlens.core.vectors import SteeringVector
from steerlens.loading.models import LoadedModel
from steerlens.measures.behavior import iter_answer_logprobs
from steerlens.measures.stats import kl_rows
from steerlens.runtime.batching import in_input_order

OFFTARGET_MEASURE = (
    "mean over off-target prompts of KL(P_base || P_condition) of the next token at the first "
    "answer position, nats"
)

__all__ = ["OFFTARGET_MEASURE", "Measure", "offtarget_shift", "vector_directions"]


@dataclass
class Measure:
    """Runs a behavior (and the off-target prompts) on a model in its current hook state."""

    behavior: Any
    offtarget: list[Any]
    batch_size: int
    _cache: Any = field(default=None, init=False, repr=False, compare=False)
    _cache_key: Any = field(default=None, init=False, repr=False, compare=False)

    def __call__(
        self, lm: LoadedModel, with_offtarget: bool = True
    ) -> tuple[float, torch.Tensor | None]:
        """(B, (n_off, V) off-target log-probabilities or None)."""
        off = self.offtarget if with_offtarget else []
        beh = self.behavior
        if hasattr(beh, "score_logprobs") and hasattr(beh, "prompts"):
            prompts = list(beh.prompts)
            lp = self._logprobs(lm, prompts + off)
            return beh.score_logprobs(lp[: len(prompts)]), (lp[len(prompts) :] if off else None)
        b = float(beh(lm))  # a behavior of the user's: model -> float
        return b, (self._logprobs(lm, off) if off else None)

    def _logprobs(self, lm: LoadedModel, prompts: list[Any]) -> torch.Tensor:
        return in_input_order(iter_answer_logprobs(lm, prompts, batch_size=self.batch_size))

    def prompts(self, with_offtarget: bool = True) -> list[Any] | None:
        """The prompts one condition scores (behavior prompts, then off-target ones), or None
        when the behavior is not scored from next-token log-probabilities."""
        beh = self.behavior
        if not (hasattr(beh, "score_logprobs") and hasattr(beh, "prompts")):
            return None
        return list(beh.prompts) + (list(self.offtarget) if with_offtarget else [])

    def from_logprobs(
        self, lp: torch.Tensor, with_offtarget: bool = True
    ) -> tuple[float, torch.Tensor | None]:
        """(B, off-target rows) of one condition from its (n, V) log-probabilities over
        :meth:`prompts`."""
        n = len(self.behavior.prompts)
        off = lp[n:] if (with_offtarget and self.offtarget) else None
        return float(self.behavior.score_logprobs(lp[:n])), off

    def many(
        self,
        lm: LoadedModel,
        layer: int,
        edit: str,
        directions: torch.Tensor,
        alpha: float,
        with_offtarget: bool = True,
        above: Mapping[int, torch.Tensor] | None = None,
    ) -> list[tuple[float, torch.Tensor | None]] | None:
        """Every row of ``directions`` as one condition (``edit`` after block ``layer``: add
        α·row, or project the row out; row k of each ``above[ℓ']`` edited after block ℓ' >
        ``layer`` as well), run batched by :class:`~steerlens.carry.batched.LayerConditions`
        with blocks 0..layer once; None where that path does not apply (the caller loops
        under ``steer``)."""
        prompts = self.prompts(with_offtarget)
        if prompts is None or not can_batch_layer(lm, layer) or not len(directions):
            return None
        key = (id(lm), layer, with_offtarget)
        if self._cache_key != key:
            self._cache = LayerConditions(lm, prompts, layer, batch_size=self.batch_size)
            self._cache_key = key
        assert self._cache is not None
        return [
            self.from_logprobs(lp, with_offtarget)
            for _, lp in self._cache.logprobs(edit, directions, alpha, above)
        ]


def offtarget_shift(ref: torch.Tensor | None, off: torch.Tensor | None) -> float | None:
    """KL(P_base ‖ P_condition) averaged over the off-target prompts (None without them)."""
    return None if (off is None or ref is None) else kl_rows(ref, off)


def vector_directions(vector: Any) -> dict[int, torch.Tensor]:
    """{layer: direction} of a SteeringVector or a {layer: tensor} mapping."""
    if isinstance(vector, SteeringVector):
        return dict(vector.directions)
    if isinstance(vector, Mapping):
        return {int(k): torch.as_tensor(v).float() for k, v in vector.items()}
    raise TypeError("the vector must be a SteeringVector or a {layer: tensor} mapping")
