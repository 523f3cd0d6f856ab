"""``carry_test`` and ``student_carry_test``: the carry test as named steps (check the inputs,
build the behaviors, measure the references, run the sufficiency grid, the peaks and the
necessity, then the verdict)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

from steerlens.carry.levels import STRONG, WEAK, Z_MIN, CarryLevel, effect_level
from steerlens.carry.measure import OFFTARGET_MEASURE, Measure, offtarget_shift, vector_directions
from steerlens.carry.necessity import run_necessity
from steerlens.carry.nulls import null_draws
from steerlens.carry.peak import TOL_FACTOR, TOL_FLOOR, default_tolerance
from steerlens.carry.result import CarryResult, CarrySettings
from steerlens.carry.sufficiency import ALPHA_UNIT, ALPHA_UNIT_DOC, run_sufficiency
from steerlens.carry.teacher import accepts_teacher
from steerlens.carry.verdict import verdict_of
from steerlens.core.common import tqdm_disable
from steerlens.core.vectors import SteeringVector
from steerlens.inputs.traits import TraitSpec, as_trait
from steerlens.loading.models import LoadedModel, as_model, check_same_shape
from steerlens.measures.behavior import as_behavior, trait_behavior
from steerlens.runtime.backends import backend_for, record_with

DEFAULT_ALPHAS: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0, 8.0)

__all__ = ["DEFAULT_ALPHAS", "carry_test", "spread_layers", "student_carry_test"]


def spread_layers(available: Sequence[int], k: int = 5) -> list[int]:
    """``k`` layers evenly spread over ``available`` (quantiles (i+½)/k), e.g. 3, 9, 15, 21, 27
    of 30: a handful of layers, sized for a CPU (the carry grid's default)."""
    avail = sorted(available)
    if len(avail) <= k:
        return avail
    return sorted({avail[int((i + 0.5) * len(avail) / k)] for i in range(k)})


@dataclass
class _Setup:
    """The checked inputs of one carry test."""

    lm: LoadedModel
    spec: TraitSpec | None
    teacher_lm: LoadedModel | None
    base_lm: LoadedModel | None
    dirs: dict[int, torch.Tensor]
    layers: list[int]
    alphas: list[float]
    necessity_mode: str


@dataclass
class _Conditions:
    """The behaviors of the base/steered and teacher conditions."""

    beh: Any
    describe: dict[str, Any]
    measure: Measure
    measure_t: Measure
    t_model: LoadedModel
    sys_teacher: bool


@dataclass
class _References:
    """B_base, B_teacher (and B_neutral), the base's off-target log-probabilities and the
    teacher's own off-target shift KL_teacher."""

    b_base: float
    b_teacher: float
    b_neutral: float | None
    ref_off: torch.Tensor | None
    kl_teacher: float | None


def _setup(
    model: Any,
    vector: Any,
    trait: Any,
    teacher: Any,
    layers: Sequence[int] | None,
    alphas: Sequence[float],
    n_random: int,
    necessity_mode: str,
    base: Any,
) -> _Setup:
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
    dirs = vector_directions(vector)
    grid = sorted(int(x) for x in (layers if layers is not None else spread_layers(list(dirs))))
    _check_layers(lm, dirs, grid)
    return _Setup(lm, spec, teacher_lm, base_lm, dirs, grid, alpha_list, necessity_mode)


def _check_layers(lm: LoadedModel, dirs: Mapping[int, torch.Tensor], grid: Sequence[int]) -> None:
    missing = [layer for layer in grid if layer not in dirs]
    if missing:
        raise KeyError(f"the vector has no direction at layers {missing}; it has {sorted(dirs)}")
    for layer in grid:
        if not 0 <= layer < lm.n_layers:
            raise IndexError(f"layer {layer} is outside the model's 0..{lm.n_layers - 1}")
        if dirs[layer].shape[-1] != lm.hidden_size:
            raise ValueError(
                f"the vector at layer {layer} has d={dirs[layer].shape[-1]} but the "
                f"model has d={lm.hidden_size}"
            )


def _conditions(s: _Setup, metric: Any, teacher_metric: Any, batch_size: int) -> _Conditions:
    """The base behavior (``metric`` or the trait's) and the teacher's: the teacher model's,
    ``teacher_metric``, or the base behavior under the trait's system prompt."""
    spec = s.spec
    if metric is None:
        if spec is None:
            raise ValueError(
                "give trait= (a TraitSpec or built-in name) or metric= (model -> float)"
            )
        beh: Any = trait_behavior(s.lm, spec, batch_size=batch_size)
    elif isinstance(metric, str):
        if spec is None:
            raise ValueError(f"metric={metric!r} names a trait metric: also give trait=")
        beh = trait_behavior(s.lm, spec, metric, batch_size=batch_size)
    else:
        beh = as_behavior(metric)
    if teacher_metric is not None:
        teacher_beh: Any = as_behavior(teacher_metric, "teacher_metric")
    elif s.teacher_lm is not None:
        teacher_beh = beh
    elif spec is not None and hasattr(beh, "with_system"):
        teacher_beh = beh.with_system(spec.system_prompt)
    else:
        raise ValueError(
            "cannot build the teacher condition: this metric cannot switch to the trait system "
            "prompt. Pass teacher_metric= (the metric measured under the teacher condition) or "
            "teacher= (a teacher model)"
        )
    sys_teacher = s.teacher_lm is None
    offtarget = spec.offtarget_chats() if spec is not None else []
    teacher_off = spec.offtarget_chats(spec.system_prompt) if (spec and sys_teacher) else offtarget
    return _Conditions(
        beh,
        beh.describe() if hasattr(beh, "describe") else {"metric": "custom"},
        Measure(beh, offtarget, batch_size),
        Measure(teacher_beh, teacher_off, batch_size),
        s.teacher_lm if s.teacher_lm is not None else s.lm,
        sys_teacher,
    )


def _settings(
    s: _Setup,
    c: _Conditions,
    vector: Any,
    n_random: int,
    seed: int,
    min_gap: float,
    offtarget_tol: float | None,
) -> CarrySettings:
    vmeta = vector.meta if isinstance(vector, SteeringVector) else {}
    targets = None
    if s.spec is not None and c.describe.get("metric") == "logprob":
        targets = s.spec.target_tokens(s.lm.tokenizer).to_json()
    return CarrySettings(
        alpha_unit=ALPHA_UNIT,
        alpha_unit_doc=ALPHA_UNIT_DOC,
        n_random=n_random,
        seed=seed,
        min_gap=min_gap,
        offtarget_measure=OFFTARGET_MEASURE if c.measure.offtarget else None,
        offtarget_tol_rule=(
            f"max({TOL_FLOOR}, {TOL_FACTOR}·KL_teacher)" if offtarget_tol is None else "user"
        ),
        teacher="system prompt" if c.sys_teacher else getattr(s.teacher_lm, "name", "model"),
        necessity_mode=s.necessity_mode,
        positions="all",
        thresholds={"strong": STRONG, "weak": WEAK, "z_min": Z_MIN},
        model=s.lm.name,
        model_fingerprint=s.lm.fingerprint,
        precision=s.lm.compute_precision.to_dict(),
        vector={
            k: vmeta.get(k)
            for k in ("kind", "trait", "method", "position", "model", "name")
            if k in vmeta
        },
        trait=s.spec.provenance() if s.spec is not None else None,
        targets=targets,
    )


def _references(
    s: _Setup, c: _Conditions, teacher_metric: Any, batch_size: int, bar: Any
) -> _References:
    """B_base and B_teacher with their off-target rows, KL_teacher, and B_neutral (the base under
    the trait's neutral system prompt, for a system-prompt teacher)."""
    b_base, ref_off = c.measure(s.lm)
    bar.update()
    b_teacher, t_off = c.measure_t(c.t_model)
    bar.update()
    b_neutral = None
    spec, beh = s.spec, c.beh
    if (
        spec is not None
        and c.sys_teacher
        and hasattr(beh, "with_system")
        and teacher_metric is None
    ):
        neutral = Measure(beh.with_system(spec.neutral_system_prompt), [], batch_size)
        b_neutral = float(neutral(s.lm)[0])
    return _References(b_base, b_teacher, b_neutral, ref_off, offtarget_shift(ref_off, t_off))


def _new_result(
    kind: str, s: _Setup, c: _Conditions, ref: _References, settings: CarrySettings
) -> CarryResult:
    """The result with the references filled in (level and verdict still to come)."""
    return CarryResult(
        kind=kind,
        trait=s.spec.name if s.spec else None,
        metric=c.describe,
        b_base=ref.b_base,
        b_teacher=ref.b_teacher,
        gap=ref.b_teacher - ref.b_base,
        defined=True,
        level=CarryLevel.UNDEFINED,
        verdict="",
        layers=s.layers,
        alphas=s.alphas,
        b_neutral=ref.b_neutral,
        offtarget_kl_teacher=ref.kl_teacher,
        settings=settings,
        vector_norms={layer: float(s.dirs[layer].norm()) for layer in s.layers},
    )


def _undefined_reason(ref: _References, gap: float, min_gap: float) -> str | None:
    if math.isfinite(gap) and abs(gap) >= min_gap:
        return None
    return (
        f"B_teacher − B_base = {gap:.4g} is below min_gap={min_gap} "
        f"(B_base={ref.b_base:.4g}, B_teacher={ref.b_teacher:.4g}): the teacher does not show "
        "the behavior more than the base, so sufficiency and necessity fractions are "
        "undefined. Check the trait's prompts and targets, or lower min_gap."
    )


def _residual_norms(s: _Setup, beh: Any, batch_size: int) -> dict[int, float]:
    """Mean ‖hˡ‖ at the answer position of the eval prompts, per grid layer."""
    prompts = getattr(beh, "prompts", None) or (s.spec.eval_chats() if s.spec else None)
    if not prompts:
        return {}
    acts = record_with(
        backend_for(s.lm),
        list(prompts),
        s.layers,
        "last",
        keep_rows=True,
        batch_size=batch_size,
        progress=False,
    )
    assert acts.rows is not None
    return {layer: float(acts.rows[layer].norm(dim=1).mean()) for layer in s.layers}


def _run_grid(
    result: CarryResult,
    s: _Setup,
    c: _Conditions,
    ref: _References,
    *,
    n_random: int,
    seed: int,
    offtarget_tol: float | None,
    necessity: bool,
    batch_size: int,
    bar: Any,
) -> None:
    """Fill ``result`` in: the sufficiency grid and its peaks, necessity, and the verdict."""
    gap = result.gap
    tol = None
    if ref.ref_off is not None:
        tol = (
            float(offtarget_tol) if offtarget_tol is not None else default_tolerance(ref.kl_teacher)
        )
    result.offtarget_tol = tol
    result.residual_norms = _residual_norms(s, c.beh, batch_size)

    def frac(b: float) -> float:
        return (b - ref.b_base) / gap

    rand = null_draws(s.lm.hidden_size, n_random, s.layers, seed)
    g = run_sufficiency(s.lm, s.dirs, s.layers, s.alphas, rand, c.measure, frac, ref.ref_off, bar)
    result.behavior, result.sufficiency, result.offtarget_kl = (
        g.behavior,
        g.sufficiency,
        g.offtarget_kl,
    )
    result.null_sufficiency, result.null_offtarget_kl = g.null_sufficiency, g.null_offtarget_kl
    result.clean_peak, result.raw_peak = g.peaks(
        s.alphas, tol, n_random, has_kl=ref.ref_off is not None
    )
    cp = result.clean_peak
    result.sufficiency_level = effect_level(cp.sufficiency, cp.beats_null)
    if necessity:
        result.necessity = run_necessity(
            c.t_model,
            s.dirs,
            s.layers,
            rand,
            c.measure_t,
            frac_nec=lambda b: (ref.b_teacher - b) / gap,
            mode=s.necessity_mode,
            base_lm=s.base_lm,
            bar=bar,
        )
        best = result.necessity.best
        result.necessity_level = effect_level(
            None if best is None else best.value, None if best is None else best.beats_null
        )
    result.level, result.verdict = verdict_of(result)


@accepts_teacher
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
    n_random: int = 19,
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
    (formulas, tolerance and verdict rules in :mod:`steerlens.carry`).

    ``model`` is the base. The teacher is the base with ``trait.system_prompt`` unless
    ``teacher=`` gives a teacher model (a fine-tune, a planted model), whose behavior is read
    without a system prompt, or a :class:`~steerlens.teachers.Teacher` of any kind
    (:mod:`steerlens.carry.teacher`: its edit and its own system prompt). ``metric`` defaults to the trait's metric on its eval prompts; any
    ``model -> float`` callable works, with ``teacher_metric`` (the same measure under the
    teacher condition) or ``teacher=`` needed when it cannot switch system prompts. ``alphas``
    multiply the vector (α = 1: the vector as given). ``necessity_mode="replace"`` (with
    ``base=``) replaces the component by the base's instead of projecting it out.
    If |B_teacher − B_base| < ``min_gap`` (metric units) the result has ``defined=False``,
    ``level="undefined"`` and the reason; no grid is run.
    """
    s = _setup(model, vector, trait, teacher, layers, alphas, n_random, necessity_mode, base)
    c = _conditions(s, metric, teacher_metric, batch_size)
    kind = kind or ("student" if necessity_mode == "replace" else "teacher")
    settings = _settings(s, c, vector, n_random, seed, min_gap, offtarget_tol)
    n_cond = 2 + len(s.layers) * len(s.alphas) * (1 + n_random)
    if necessity:
        n_cond += (len(s.layers) + 1) * (1 + n_random)
    bar = tqdm(total=n_cond, desc="carry test", leave=False, disable=tqdm_disable(progress))
    try:
        ref = _references(s, c, teacher_metric, batch_size, bar)
        result = _new_result(kind, s, c, ref, settings)
        reason = _undefined_reason(ref, result.gap, min_gap)
        if reason is not None:
            result.defined, result.undefined_reason = False, reason
            result.verdict = f"undefined: {reason}"
            return result
        _run_grid(
            result,
            s,
            c,
            ref,
            n_random=n_random,
            seed=seed,
            offtarget_tol=offtarget_tol,
            necessity=necessity,
            batch_size=batch_size,
            bar=bar,
        )
        return result
    finally:
        bar.close()


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
