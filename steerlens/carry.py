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
  (:func:`steerlens.stats.random_directions`, seeded per layer) scaled to ‖vˡ‖ (sufficiency) or
  as unit directions (necessity): a null band (mean, sd, 5/50/95% quantiles, max) per (ℓ, α),
  and for each random draw its own clean peak over the same grid (and its own best necessity),
  giving z = (S* − mean)/sd and the empirical p = (1 + #{null ≥ S*})/(1 + n_random).

**Verdict** (thresholds in :data:`STRONG`, :data:`WEAK`, :data:`Z_MIN`): a statistic *beats the
null* when it exceeds every random draw and z ≥ Z_MIN (= 2). The default ``n_random=4`` is sized
for a CPU (smallest empirical p = 0.2); use ``n_random >= 19`` for p ≤ 0.05. With
``n_random=0`` there is no null and the levels rest on the thresholds alone (said so).
Sufficiency is "strong" when the clean peak S* ≥ 0.5 and beats the null, "weak" when
S* ≥ 0.1 and beats the null, else "none"; necessity likewise with the best N. Verdict:
**strongly carried** = strong sufficiency and strong necessity (or strong sufficiency with
necessity not tested, said so); **weakly carried** = any other case with at least one
weak-or-strong level; **not carried** = neither; **undefined** when |B_teacher − B_base| <
``min_gap`` (the fractions would divide by ~0; the grid is not run).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from steerlens.activations import record_activations
from steerlens.behavior import answer_logprobs, as_behavior, trait_behavior
from steerlens.common import tqdm_disable
from steerlens.intervene import steer
from steerlens.models import LoadedModel, as_model, check_same_shape
from steerlens.stats import random_directions, z_and_p
from steerlens.traits import TraitSpec, as_trait
from steerlens.vectors import SteeringVector

DEFAULT_ALPHAS: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0, 8.0)
STRONG = 0.5
WEAK = 0.1
Z_MIN = 2.0
TOL_FLOOR = 0.1
TOL_FACTOR = 1.25
ALPHA_UNIT = "vector"
OFFTARGET_MEASURE = (
    "mean over off-target prompts of KL(P_base || P_condition) of the next token at the first "
    "answer position, nats"
)


class CarryUndefinedError(ValueError):
    """B_teacher − B_base is ~0, so sufficiency and necessity fractions are undefined."""


# ------------------------------------------------------------------------ helpers


def _kl_rows(ref: torch.Tensor, other: torch.Tensor) -> float:
    """mean_i KL(ref_i ‖ other_i) for rows of log-probabilities."""
    r, o = ref.double(), other.double()
    return float((r.exp() * (r - o)).sum(-1).mean())


def _layer_seed(seed: int, layer: int) -> int:
    return int(np.random.SeedSequence([int(seed), int(layer)]).generate_state(1)[0])


def default_layers(available: Sequence[int], k: int = 5) -> list[int]:
    """``k`` layers evenly spread over ``available`` (quantiles (i+½)/k), e.g. 3, 9, 15, 21, 27
    of 30: a handful of layers, sized for a CPU."""
    avail = sorted(available)
    if len(avail) <= k:
        return avail
    return sorted({avail[int((i + 0.5) * len(avail) / k)] for i in range(k)})


def band(values: Sequence[float]) -> dict[str, float]:
    """Summary of a null sample: mean, sd, 5/50/95% quantiles, min, max, n."""
    a = np.asarray(values, dtype=float)
    if a.size == 0:
        return {"n": 0}
    return {
        "mean": float(a.mean()),
        "sd": float(a.std(ddof=1)) if a.size > 1 else 0.0,
        "q05": float(np.quantile(a, 0.05)),
        "q50": float(np.quantile(a, 0.5)),
        "q95": float(np.quantile(a, 0.95)),
        "min": float(a.min()),
        "max": float(a.max()),
        "n": int(a.size),
    }


def compare_to_null(observed: float, null: Sequence[float], z_min: float = Z_MIN) -> dict[str, Any]:
    """z, empirical p (greater) and whether ``observed`` beats the null (exceeds every draw and
    z ≥ z_min, or the null has no spread and observed exceeds it)."""
    arr = np.asarray(null, dtype=float)
    if arr.size == 0:
        return {"z": None, "p": None, "beats_null": None, "null": band([])}
    z, p = z_and_p(observed, arr, "greater")
    sd = float(arr.std(ddof=1)) if arr.size > 1 else 0.0
    above_all = bool(observed > float(arr.max()) + 1e-12)
    beats = above_all and (z >= z_min if sd > 0 else True)
    return {
        "z": None if math.isnan(z) else float(z),
        "p": float(p),
        "beats_null": beats,
        "null": band(arr.tolist()),
    }


def _level(value: float | None, cmp: Mapping[str, Any]) -> str:
    """strong / weak / none; without a null (n_random=0) on the thresholds alone."""
    if value is None or cmp.get("beats_null") is False:
        return "none"
    if value >= STRONG:
        return "strong"
    if value >= WEAK:
        return "weak"
    return "none"


def clean_peak_of(
    s_grid: Mapping[int, Sequence[float]],
    kl_grid: Mapping[int, Sequence[float]] | None,
    alphas: Sequence[float],
    tol: float | None,
) -> dict[str, Any]:
    """Best S over cells with off-target KL ≤ tol, α = 0 (S = 0) included; no KL: raw peak."""
    best: dict[str, Any] = {"S": 0.0, "layer": None, "alpha": None, "offtarget_kl": 0.0}
    for layer, row in s_grid.items():
        for j, s in enumerate(row):
            kl = None if kl_grid is None else kl_grid[layer][j]
            if kl is not None and tol is not None and not kl <= tol:
                continue
            if s > best["S"]:
                best = {
                    "S": float(s),
                    "layer": int(layer),
                    "alpha": float(alphas[j]),
                    "offtarget_kl": kl,
                }
    return best


# ------------------------------------------------------------------------ result


@dataclass
class CarryResult:
    """Every number of a carry test. Dict keys of per-layer fields are layer indices.

    ``sufficiency[ℓ][j]`` is S(ℓ, alphas[j]); ``behavior`` the raw B there; ``offtarget_kl`` the
    off-target shift; ``null_sufficiency[ℓ][j]`` / ``null_offtarget_kl`` the random-direction
    bands; ``clean_peak`` / ``raw_peak`` with their null comparison; ``necessity`` per layer and
    ``"joint"``; ``verdict`` a sentence with the numbers, ``level`` its category.
    """

    kind: str
    trait: str | None
    metric: dict[str, Any]
    b_base: float
    b_teacher: float
    gap: float
    defined: bool
    level: str
    verdict: str
    layers: list[int] = field(default_factory=list)
    alphas: list[float] = field(default_factory=list)
    b_neutral: float | None = None
    undefined_reason: str | None = None
    vector_norms: dict[int, float] = field(default_factory=dict)
    residual_norms: dict[int, float] = field(default_factory=dict)
    behavior: dict[int, list[float]] = field(default_factory=dict)
    sufficiency: dict[int, list[float]] = field(default_factory=dict)
    offtarget_kl: dict[int, list[float]] = field(default_factory=dict)
    null_sufficiency: dict[int, list[dict[str, float]]] = field(default_factory=dict)
    null_offtarget_kl: dict[int, list[dict[str, float]]] = field(default_factory=dict)
    offtarget_kl_teacher: float | None = None
    offtarget_tol: float | None = None
    clean_peak: dict[str, Any] = field(default_factory=dict)
    raw_peak: dict[str, Any] = field(default_factory=dict)
    necessity: dict[str, Any] = field(default_factory=dict)
    sufficiency_level: str = "none"
    necessity_level: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)

    def require_defined(self) -> CarryResult:
        """Return self, or raise :class:`CarryUndefinedError` with the reason."""
        if not self.defined:
            raise CarryUndefinedError(self.undefined_reason or "carry test undefined")
        return self

    def dose_response(self, layer: int) -> list[dict[str, Any]]:
        """Per α at ``layer``: S, raw B, off-target KL, and the random-direction band of S."""
        if layer not in self.sufficiency:
            raise KeyError(f"layer {layer} is not in the grid {self.layers}")
        out = []
        for j, a in enumerate(self.alphas):
            nb = self.null_sufficiency.get(layer, [{}] * len(self.alphas))[j]
            out.append(
                {
                    "alpha": a,
                    "S": self.sufficiency[layer][j],
                    "B": self.behavior[layer][j],
                    "offtarget_kl": self.offtarget_kl[layer][j] if self.offtarget_kl else None,
                    "null_mean": nb.get("mean"),
                    "null_q05": nb.get("q05"),
                    "null_q95": nb.get("q95"),
                }
            )
        return out

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict (layer keys as strings, non-finite floats as None)."""
        return json.loads(json.dumps(_clean(asdict(self))))

    def summary(self) -> str:
        lines = [
            f"carry test ({self.kind}{', trait ' + self.trait if self.trait else ''}; "
            f"metric {self.metric.get('metric')}): {self.verdict}"
        ]
        if not self.defined:
            return "\n".join(lines)
        ref = f"B_base={self.b_base:.3f}, B_teacher={self.b_teacher:.3f}"
        if self.b_neutral is not None:
            ref += f", B_neutral={self.b_neutral:.3f}"
        lines.append(ref)
        if self.offtarget_tol is not None:
            lines.append(
                f"off-target tolerance {self.offtarget_tol:.3f} nats "
                f"(teacher's own shift {self.offtarget_kl_teacher:.3f})"
            )
        head = "layer |‖v‖ " + " ".join(f"α={a:<6g}" for a in self.alphas)
        lines.append("sufficiency S (random mean) [off-target KL]:")
        lines.append(head)
        for layer in self.layers:
            cells = []
            for j in range(len(self.alphas)):
                nm = self.null_sufficiency.get(layer, [{}] * len(self.alphas))[j].get("mean")
                kl = self.offtarget_kl[layer][j] if self.offtarget_kl else None
                cell = f"{self.sufficiency[layer][j]:+.2f}"
                if nm is not None:
                    cell += f"({nm:+.2f})"
                if kl is not None:
                    cell += f"[{kl:.2f}]"
                cells.append(cell)
            lines.append(
                f"{layer:>5} |{self.vector_norms.get(layer, float('nan')):.3g} " + " ".join(cells)
            )
        if self.necessity:
            parts = []
            for key, val in self.necessity.get("per_layer", {}).items():
                if val.get("N") is not None:
                    parts.append(
                        f"ℓ{key}: {val['N']:+.2f} (random {val['null']['mean']:+.2f})"
                        if val.get("null", {}).get("n")
                        else f"ℓ{key}: {val['N']:+.2f}"
                    )
            joint = self.necessity.get("joint")
            if joint and joint.get("N") is not None:
                parts.append(f"joint: {joint['N']:+.2f}")
            lines.append(f"necessity N ({self.necessity.get('mode')}): " + ", ".join(parts))
        return "\n".join(lines)


def _clean(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, (np.floating, np.integer)):
        return _clean(x.item())
    if isinstance(x, torch.Tensor):
        return _clean(x.tolist())
    return x


# ------------------------------------------------------------------------ evaluation


@dataclass
class _Measure:
    """Runs a behavior (and the off-target prompts) on a model in its current hook state."""

    behavior: Any
    offtarget: list[Any]
    batch_size: int

    def __call__(
        self, model: Any, with_offtarget: bool = True
    ) -> tuple[float, torch.Tensor | None]:
        off = self.offtarget if with_offtarget else []
        beh = self.behavior
        if hasattr(beh, "score_logprobs") and hasattr(beh, "prompts"):
            prompts = list(beh.prompts)
            lp = answer_logprobs(model, prompts + off, batch_size=self.batch_size)
            return beh.score_logprobs(lp[: len(prompts)]), (lp[len(prompts) :] if off else None)
        b = float(beh(model))
        return b, (answer_logprobs(model, off, batch_size=self.batch_size) if off else None)


def _vector_dirs(vector: Any) -> dict[int, torch.Tensor]:
    if isinstance(vector, SteeringVector):
        return dict(vector.directions)
    if isinstance(vector, Mapping):
        return {int(k): torch.as_tensor(v).float() for k, v in vector.items()}
    raise TypeError("the vector must be a SteeringVector or a {layer: tensor} mapping")


def carry_test(
    model: Any,
    vector: SteeringVector | Mapping[int, torch.Tensor],
    trait: TraitSpec | str | None = None,
    *,
    teacher: Any = None,
    metric: Any = None,
    teacher_metric: Callable[[Any], float] | None = None,
    layers: Sequence[int] | None = None,
    alphas: Sequence[float] = DEFAULT_ALPHAS,
    n_random: int = 4,
    seed: int = 0,
    offtarget_tol: float | None = None,
    necessity: bool = True,
    necessity_mode: str = "project_out",
    base: Any = None,
    min_gap: float = 0.05,
    batch_size: int = 32,
    kind: str | None = None,
    progress: bool | None = None,
) -> CarryResult:
    """Sufficiency, necessity, clean peak and random-direction nulls of ``vector`` for a trait
    (formulas, tolerance and verdict rules in the module docstring).

    ``model`` is the base. The teacher is the base with ``trait.system_prompt`` unless
    ``teacher=`` gives a teacher model (a fine-tune, a planted model), whose behavior is read
    without a system prompt. ``metric`` defaults to the trait's metric on its eval prompts; any
    ``model -> float`` callable works, with ``teacher_metric`` (the same measure under the
    teacher condition) or ``teacher=`` needed when it cannot switch system prompts. ``alphas``
    multiply the vector (α = 1: the vector as given). ``necessity_mode="replace"`` (with
    ``base=``) replaces the component by the base's instead of projecting it out.
    If |B_teacher − B_base| < ``min_gap`` (metric units) the result has ``defined=False``,
    ``level="undefined"`` and the reason; no grid is run.
    """
    lm = as_model(model)
    spec = None if trait is None else as_trait(trait)
    teacher_lm = None if teacher is None else as_model(teacher)
    if teacher_lm is not None:
        check_same_shape(lm, teacher_lm, ("model", "teacher"))
    if necessity_mode not in ("project_out", "replace"):
        raise ValueError("necessity_mode must be 'project_out' or 'replace'")
    base_lm = None
    if necessity_mode == "replace":
        base_lm = as_model(base) if base is not None else lm
        if teacher_lm is None:
            raise ValueError(
                "necessity_mode='replace' compares a trained model with the base: "
                "pass teacher= (the student) — see student_carry_test"
            )
    if n_random < 0:
        raise ValueError(f"n_random must be >= 0, got {n_random}")
    alpha_list = [float(a) for a in alphas]
    if not alpha_list or any(not math.isfinite(a) or a == 0 for a in alpha_list):
        raise ValueError(
            f"alphas must be a non-empty list of finite non-zero numbers, got {alphas}"
        )

    dirs = _vector_dirs(vector)
    grid_layers = sorted(
        int(x) for x in (layers if layers is not None else default_layers(list(dirs)))
    )
    missing = [layer for layer in grid_layers if layer not in dirs]
    if missing:
        raise KeyError(f"the vector has no direction at layers {missing}; it has {sorted(dirs)}")
    for layer in grid_layers:
        if not 0 <= layer < lm.n_layers:
            raise IndexError(f"layer {layer} is outside the model's 0..{lm.n_layers - 1}")
        if dirs[layer].shape[-1] != lm.hidden_size:
            raise ValueError(
                f"the vector at layer {layer} has d={dirs[layer].shape[-1]} but the "
                f"model has d={lm.hidden_size}"
            )

    # ---- behaviors for the base/steered and the teacher conditions
    if metric is None:
        if spec is None:
            raise ValueError(
                "give trait= (a TraitSpec or built-in name) or metric= (model -> float)"
            )
        beh: Any = trait_behavior(lm, spec, batch_size=batch_size)
    elif isinstance(metric, str):
        if spec is None:
            raise ValueError(f"metric={metric!r} names a trait metric: also give trait=")
        beh = trait_behavior(lm, spec, metric, batch_size=batch_size)
    else:
        beh = as_behavior(metric)
    if teacher_metric is not None:
        teacher_beh: Any = as_behavior(teacher_metric, "teacher_metric")
    elif teacher_lm is not None:
        teacher_beh = beh
    elif spec is not None and hasattr(beh, "with_system"):
        teacher_beh = beh.with_system(spec.system_prompt)
    else:
        raise ValueError(
            "cannot build the teacher condition: this metric cannot switch to the trait system "
            "prompt. Pass teacher_metric= (the metric measured under the teacher condition) or "
            "teacher= (a teacher model)"
        )
    sys_teacher = teacher_lm is None
    offtarget = spec.offtarget_chats() if spec is not None else []
    teacher_off = spec.offtarget_chats(spec.system_prompt) if (spec and sys_teacher) else offtarget
    measure = _Measure(beh, offtarget, batch_size)
    measure_t = _Measure(teacher_beh, teacher_off, batch_size)
    t_model = teacher_lm if teacher_lm is not None else lm
    kind = kind or ("student" if necessity_mode == "replace" else "teacher")

    vmeta = vector.meta if isinstance(vector, SteeringVector) else {}
    describe = beh.describe() if hasattr(beh, "describe") else {"metric": "custom"}
    settings: dict[str, Any] = {
        "alpha_unit": ALPHA_UNIT,
        "alpha_unit_doc": "the hook adds α·v_ℓ (norm α‖v_ℓ‖); random directions scaled to ‖v_ℓ‖",
        "n_random": n_random,
        "seed": seed,
        "min_gap": min_gap,
        "offtarget_measure": OFFTARGET_MEASURE if offtarget else None,
        "offtarget_tol_rule": (
            f"max({TOL_FLOOR}, {TOL_FACTOR}·KL_teacher)" if offtarget_tol is None else "user"
        ),
        "teacher": "system prompt" if sys_teacher else getattr(teacher_lm, "name", "model"),
        "necessity_mode": necessity_mode,
        "positions": "all",
        "thresholds": {"strong": STRONG, "weak": WEAK, "z_min": Z_MIN},
        "model": lm.name,
        "model_fingerprint": lm.fingerprint,
        "vector": {
            k: vmeta.get(k)
            for k in ("kind", "trait", "method", "position", "model", "name")
            if k in vmeta
        },
        "trait": spec.provenance() if spec is not None else None,
    }
    if spec is not None and describe.get("metric") == "logprob":
        settings["targets"] = spec.target_tokens(lm.tokenizer).to_json()

    n_cond = 2 + len(grid_layers) * len(alpha_list) * (1 + n_random)
    if necessity:
        n_cond += (len(grid_layers) + 1) * (1 + n_random)
    bar = tqdm(total=n_cond, desc="carry test", leave=False, disable=tqdm_disable(progress))
    try:
        b_base, ref_off = measure(lm)
        bar.update()
        b_teacher, t_off = measure_t(t_model)
        bar.update()
        kl_teacher = (
            _kl_rows(ref_off, t_off) if (ref_off is not None and t_off is not None) else None
        )
        b_neutral = None
        if (
            spec is not None
            and sys_teacher
            and hasattr(beh, "with_system")
            and teacher_metric is None
        ):
            b_neutral = float(
                _Measure(beh.with_system(spec.neutral_system_prompt), [], batch_size)(lm)[0]
            )
        gap = b_teacher - b_base
        result = CarryResult(
            kind=kind,
            trait=spec.name if spec else None,
            metric=describe,
            b_base=b_base,
            b_teacher=b_teacher,
            gap=gap,
            defined=True,
            level="",
            verdict="",
            layers=grid_layers,
            alphas=alpha_list,
            b_neutral=b_neutral,
            offtarget_kl_teacher=kl_teacher,
            settings=settings,
            vector_norms={layer: float(dirs[layer].norm()) for layer in grid_layers},
        )
        if not math.isfinite(gap) or abs(gap) < min_gap:
            result.defined = False
            result.level = "undefined"
            result.undefined_reason = (
                f"B_teacher − B_base = {gap:.4g} is below min_gap={min_gap} "
                f"(B_base={b_base:.4g}, B_teacher={b_teacher:.4g}): the teacher does not show "
                "the behavior more than the base, so sufficiency and necessity fractions are "
                "undefined. Check the trait's prompts and targets, or lower min_gap."
            )
            result.verdict = f"undefined: {result.undefined_reason}"
            return result

        if ref_off is not None:
            tol = (
                float(offtarget_tol)
                if offtarget_tol is not None
                else max(TOL_FLOOR, TOL_FACTOR * (kl_teacher or 0.0))
            )
        else:
            tol = None
        result.offtarget_tol = tol
        prompts = getattr(beh, "prompts", None) or (spec.eval_chats() if spec else None)
        if prompts:
            acts = record_activations(
                lm,
                list(prompts),
                grid_layers,
                "last",
                keep_rows=True,
                batch_size=batch_size,
                progress=False,
            )
            assert acts.rows is not None
            result.residual_norms = {
                layer: float(acts.rows[layer].norm(dim=1).mean()) for layer in grid_layers
            }

        def frac(b: float) -> float:
            return (b - b_base) / gap

        def kl_of(off: torch.Tensor | None) -> float | None:
            return None if (off is None or ref_off is None) else _kl_rows(ref_off, off)

        rand: dict[int, torch.Tensor] = (
            {
                layer: random_directions(lm.hidden_size, n_random, _layer_seed(seed, layer))
                for layer in grid_layers
            }
            if n_random
            else {}
        )
        # ---- sufficiency grid
        null_s: dict[int, list[list[float]]] = {}
        null_kl: dict[int, list[list[float]]] = {}
        for layer in grid_layers:
            v = dirs[layer].float()
            vn = float(v.norm())
            result.behavior[layer], result.sufficiency[layer] = [], []
            result.offtarget_kl[layer] = []
            null_s[layer] = [[0.0] * len(alpha_list) for _ in range(n_random)]
            null_kl[layer] = [[0.0] * len(alpha_list) for _ in range(n_random)]
            for j, a in enumerate(alpha_list):
                with steer(lm, {layer: v}, a):
                    b, off = measure(lm)
                bar.update()
                result.behavior[layer].append(b)
                result.sufficiency[layer].append(frac(b))
                k = kl_of(off)
                if k is not None:
                    result.offtarget_kl[layer].append(k)
                for r in range(n_random):
                    with steer(lm, {layer: rand[layer][r] * vn}, a):
                        b_r, off_r = measure(lm)
                    bar.update()
                    null_s[layer][r][j] = frac(b_r)
                    null_kl[layer][r][j] = kl_of(off_r) or 0.0
            if n_random:
                result.null_sufficiency[layer] = [
                    band([null_s[layer][r][j] for r in range(n_random)])
                    for j in range(len(alpha_list))
                ]
                if ref_off is not None:
                    result.null_offtarget_kl[layer] = [
                        band([null_kl[layer][r][j] for r in range(n_random)])
                        for j in range(len(alpha_list))
                    ]
        kl_grid = result.offtarget_kl if ref_off is not None else None
        if kl_grid is None:
            result.offtarget_kl = {}
        result.clean_peak = clean_peak_of(result.sufficiency, kl_grid, alpha_list, tol)
        result.raw_peak = clean_peak_of(result.sufficiency, None, alpha_list, None)
        if n_random:
            null_clean = [
                clean_peak_of(
                    {la: null_s[la][r] for la in grid_layers},
                    {la: null_kl[la][r] for la in grid_layers} if kl_grid else None,
                    alpha_list,
                    tol,
                )["S"]
                for r in range(n_random)
            ]
            null_raw = [
                clean_peak_of({la: null_s[la][r] for la in grid_layers}, None, alpha_list, None)[
                    "S"
                ]
                for r in range(n_random)
            ]
            result.clean_peak.update(compare_to_null(result.clean_peak["S"], null_clean))
            result.raw_peak.update(compare_to_null(result.raw_peak["S"], null_raw))
        result.clean_peak["tolerance"] = tol
        if tol is None:
            result.clean_peak["note"] = "no off-target prompts: the clean peak is the raw peak"
        result.sufficiency_level = _level(result.clean_peak["S"], result.clean_peak)

        # ---- necessity
        if necessity:
            result.necessity = _necessity(
                t_model,
                dirs,
                grid_layers,
                rand,
                measure_t,
                frac_nec=lambda b: (b_teacher - b) / gap,
                mode=necessity_mode,
                base_lm=base_lm,
                bar=bar,
            )
            best = result.necessity.get("best", {})
            result.necessity_level = _level(best.get("N"), best)
        result.level, result.verdict = _verdict(result)
        return result
    finally:
        bar.close()


def _necessity(
    t_model: LoadedModel,
    dirs: Mapping[int, torch.Tensor],
    grid_layers: Sequence[int],
    rand: Mapping[int, torch.Tensor],
    measure_t: _Measure,
    frac_nec: Callable[[float], float],
    *,
    mode: str,
    base_lm: LoadedModel | None,
    bar: Any,
) -> dict[str, Any]:
    n_random = next(iter(rand.values())).shape[0] if rand else 0
    usable = [layer for layer in grid_layers if float(dirs[layer].norm()) > 0]

    def run(vecs: Mapping[int, torch.Tensor]) -> float:
        with steer(
            t_model,
            dict(vecs),
            1.0,
            mode=mode,  # type: ignore[arg-type]
            base=base_lm if mode == "replace" else None,
        ):
            b, _ = measure_t(t_model, with_offtarget=False)
        bar.update()
        return b

    out: dict[str, Any] = {"mode": mode, "per_layer": {}, "joint": {}}
    null_by_draw: list[list[float]] = [[] for _ in range(n_random)]
    for layer in grid_layers:
        if layer not in usable:
            out["per_layer"][layer] = {"N": None, "reason": "zero vector at this layer"}
            bar.update(1 + n_random)
            continue
        b = run({layer: dirs[layer]})
        nulls = [frac_nec(run({layer: rand[layer][r]})) for r in range(n_random)]
        for r, val in enumerate(nulls):
            null_by_draw[r].append(val)
        out["per_layer"][layer] = {"N": frac_nec(b), "B": b, "null": band(nulls)}
    configs: list[tuple[str, float]] = [
        (str(k), v["N"]) for k, v in out["per_layer"].items() if v.get("N") is not None
    ]
    if len(usable) > 1:
        b = run({layer: dirs[layer] for layer in usable})
        nulls = [
            frac_nec(run({layer: rand[layer][r] for layer in usable})) for r in range(n_random)
        ]
        for r, val in enumerate(nulls):
            null_by_draw[r].append(val)
        out["joint"] = {"N": frac_nec(b), "B": b, "layers": list(usable), "null": band(nulls)}
        configs.append(("joint", frac_nec(b)))
    else:
        bar.update(1 + n_random)
    if configs:
        where, n_best = max(configs, key=lambda c: c[1])
        best: dict[str, Any] = {"N": n_best, "where": where}
        if n_random:
            best.update(compare_to_null(n_best, [max(d) for d in null_by_draw]))
        out["best"] = best
    return out


def _fmt_null(d: Mapping[str, Any]) -> str:
    nb = d.get("null") or {}
    if not nb.get("n"):
        return "no random-direction null"
    z = d.get("z")
    zs = "n/a" if z is None else f"{z:.1f}"
    return (
        f"random directions: mean {nb['mean']:+.2f}, max {nb['max']:+.2f}, z={zs}, "
        f"p={d.get('p'):.2g}, n={nb['n']}"
    )


def _verdict(r: CarryResult) -> tuple[str, str]:
    cp = r.clean_peak
    s_lvl = r.sufficiency_level
    n_lvl = r.necessity_level
    if s_lvl == "strong" and n_lvl in ("strong", None):
        level = "strongly carried"
    elif s_lvl != "none" or (n_lvl not in (None, "none")):
        level = "weakly carried"
    else:
        level = "not carried"
    where = (
        f"at layer {cp['layer']}, α={cp['alpha']:g}"
        if cp.get("layer") is not None
        else "at α=0 (no grid point beat not steering)"
    )
    tol = (
        f", off-target KL ≤ {r.offtarget_tol:.3f} nats"
        if r.offtarget_tol is not None
        else ", no off-target check"
    )
    parts = [
        f"{level}: B_base={r.b_base:.3f}, B_teacher={r.b_teacher:.3f}",
        f"clean peak sufficiency S={cp['S']:.2f} {where}{tol} ({_fmt_null(cp)}; {s_lvl})",
        f"raw peak S={r.raw_peak['S']:.2f}",
    ]
    if n_lvl is None:
        parts.append("necessity not tested")
    else:
        best = r.necessity.get("best")
        if best:
            parts.append(
                f"necessity N={best['N']:.2f} ({best['where']}; {_fmt_null(best)}; {n_lvl})"
            )
        else:
            parts.append("necessity undefined (zero vector at every grid layer)")
    if level == "weakly carried" and s_lvl == "strong":
        parts.append("sufficient but not necessary")
    return level, "; ".join(parts)


def student_carry_test(
    base: Any,
    student: Any,
    vector: SteeringVector | Mapping[int, torch.Tensor],
    trait: TraitSpec | str | None = None,
    **kwargs: Any,
) -> CarryResult:
    """Carry test of a student's own shift vector vˢ (DESIGN.md): sufficiency adds α·vˢ to the
    base; B_teacher is the student's behavior (no system prompt); necessity *replaces* the
    student's component along v̂ˢ with the base's (``steer(..., mode="replace", base=base)``)."""
    return carry_test(
        base,
        vector,
        trait,
        teacher=student,
        necessity_mode="replace",
        base=base,
        kind="student",
        **kwargs,
    )
