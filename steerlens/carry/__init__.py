"""Is the behavior carried by the vector? (DESIGN.md "Is the behavior carried by the vector?")

With B a behavior metric (default: the trait's token log-probability score), B_base the base
model on the eval prompts with no system prompt and B_teacher the teacher (the base with the
trait system prompt, or a separate ``teacher=`` model such as a fine-tune):

- **Sufficiency** S(ℓ, α) = (B(base + α·v at ℓ) − B_base) / (B_teacher − B_base), over a grid of
  layers × α, read per layer as a dose-response curve over α.
  **α unit**: multiples of the vector as given, i.e. the hook adds α·vˡ (norm α‖vˡ‖); α = 1 adds
  the vector as extracted. The result also records ‖vˡ‖ and the typical residual norm (mean
  ‖hˡ‖ at the answer position of the eval prompts), so α‖vˡ‖/‖hˡ‖ can be read off.
- **Necessity** N = (B_teacher − B(teacher with v̂ projected out)) / (B_teacher − B_base), per
  grid layer and with all grid layers at once ("joint"). For a student's own vector
  (:func:`student_carry_test`), the student's component along v̂ˢ is *replaced* by the base's
  (h ← h − (h·v̂)v̂ + (h_base·v̂)v̂) instead of removed.
- **Off-target shift** of a condition = mean over the trait's off-target prompts of
  KL(P_base ‖ P_condition) of the next token at the first answer position (nats), P_base the
  unsteered base without a system prompt. The teacher's own shift KL_teacher is recorded.
- **Clean peak** = the best S over the grid cells whose off-target shift is at most the
  tolerance τ, where α = 0 (S = 0, no shift) always counts as a cell, so S* ≥ 0. Default
  τ = max(0.1, 1.25·KL_teacher) nats: a vector may move unrelated answers about as much as the
  trait itself does, not more. A vector that only forces the target token moves the
  off-target answers too and is excluded. Without off-target prompts the clean peak is the raw
  peak (recorded).
- **Nulls**: every test is repeated with ``n_random`` random directions
  (:func:`steerlens.measures.stats.random_directions`, seeded per layer) scaled to ‖vˡ‖ (sufficiency) or
  as unit directions (necessity): a null band (mean, sd, 5/50/95% quantiles, max) per (ℓ, α),
  and for each random draw its own clean peak over the same grid (and its own best necessity),
  giving z = (S* − mean)/sd and the empirical p = (1 + #{null ≥ S*})/(1 + n_random).

**Verdict** (thresholds in :data:`STRONG`, :data:`WEAK`, :data:`Z_MIN`, :data:`P_MAX`;
categories :class:`CarryLevel`): a statistic *beats the null* when it exceeds every random draw,
z ≥ Z_MIN (= 2) and its empirical p ≤ P_MAX (= 0.05). The default ``n_random=19`` is the
smallest null that can reach p = 0.05; with fewer draws nothing beats the null (the verdict says
so). With ``n_random=0`` there is no null and the levels rest on the thresholds alone (said so).
Sufficiency is "strong" when the clean peak S* ≥ 0.5 and beats the null, "weak" when
S* ≥ 0.1 and beats the null, else "none"; necessity likewise with the best N. Verdict:
**strongly carried** = strong sufficiency and strong necessity (or strong sufficiency with
necessity not tested, said so); **weakly carried** = any other case with at least one
weak-or-strong level; **not carried** = neither; **undefined** when |B_teacher − B_base| <
``min_gap`` (the fractions would divide by ~0; the grid is not run).

Modules: :mod:`~steerlens.carry.api` (``carry_test``), :mod:`~steerlens.carry.sufficiency`,
:mod:`~steerlens.carry.necessity`, :mod:`~steerlens.carry.peak`, :mod:`~steerlens.carry.nulls`,
:mod:`~steerlens.carry.measure`, :mod:`~steerlens.carry.levels`, :mod:`~steerlens.carry.verdict`
and :mod:`~steerlens.carry.result` (``CarryResult``).
"""

from steerlens.carry.api import DEFAULT_ALPHAS, carry_test, spread_layers, student_carry_test
from steerlens.carry.levels import MIN_DRAWS, P_MAX, STRONG, WEAK, Z_MIN, CarryLevel, EffectLevel
from steerlens.carry.measure import OFFTARGET_MEASURE
from steerlens.carry.necessity import Necessity, NecessityAt, NecessityBest
from steerlens.carry.nulls import NullBand, NullComparison, band, compare_to_null
from steerlens.carry.peak import TOL_FACTOR, TOL_FLOOR, CleanPeak, Peak, clean_peak_of
from steerlens.carry.result import CarryResult, CarrySettings, CarryUndefinedError
from steerlens.carry.sufficiency import ALPHA_UNIT
from steerlens.carry.teacher import teacher_score

__all__ = [
    "ALPHA_UNIT",
    "DEFAULT_ALPHAS",
    "MIN_DRAWS",
    "OFFTARGET_MEASURE",
    "P_MAX",
    "STRONG",
    "TOL_FACTOR",
    "TOL_FLOOR",
    "WEAK",
    "Z_MIN",
    "CarryLevel",
    "CarryResult",
    "CarrySettings",
    "CarryUndefinedError",
    "CleanPeak",
    "EffectLevel",
    "Necessity",
    "NecessityAt",
    "NecessityBest",
    "NullBand",
    "NullComparison",
    "Peak",
    "band",
    "carry_test",
    "clean_peak_of",
    "compare_to_null",
    "spread_layers",
    "student_carry_test",
    "teacher_score",
]
