"""The student, its controls and their behavior deltas (DESIGN.md "Words": controls, "Behavior
deltas"; docs/statistics.md).

Series of one distillation experiment, each trained the same way (same prompts, loss, steps):

- ``main``: the student, on data the teacher (base + trait system prompt) wrote;
- ``control``: the **base control**, on data the base wrote (no trait system prompt); the
  default comparison. Under the KL loss its targets are the base's own distribution, so it
  stays at the base up to the optimiser's response to rounding: it measures what training on
  numbers does without any teacher signal;
- ``benign`` (optional): the **benign control**, on data the benign teacher (base + neutral
  system prompt) wrote. With vᵀ = trait − neutral it is expected to move along −vᵀ (the mirror
  of the contrast), so it is shown beside the base control, never as the null.

Behavior deltas per eval prompt i, with Bᵢ(θ) the per-prompt score (DESIGN.md "Token
log-probability score", before the mean over prompts) at the last checkpoint:
dᵢ(X vs base) = Bᵢ(X) − Bᵢ(θ₀) and dᵢ(main vs control) = Bᵢ(main) − Bᵢ(control). Each delta is
mean_i dᵢ with a percentile bootstrap CI over prompts (:func:`steerlens.measures.stats.paired_bootstrap_mean`)
and a two-sided sign-flip permutation p-value (:func:`steerlens.measures.stats.sign_flip_test`).

These per-prompt tests hold the two models fixed: they ask whether *these* checkpoints differ,
not whether the teacher made the difference. Two students trained on the same teacher's data
with different samples and seeds differ systematically too (training noise), so with ≥ 2 benign
replicates the student is also tested at the level of models: ``main_vs_benign_replicates`` =
:func:`steerlens.measures.stats.prediction_t_test` of B̄(main) against the replicates' B̄ (is the student
outside what another matched-control run would give?).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from steerlens.measures.stats import paired_bootstrap_mean, prediction_t_test, sign_flip_test

__all__ = [
    "REPLICATE_SEED_STRIDE",
    "SeriesPlan",
    "behavior_deltas",
    "benign_names",
    "series_plan",
    "series_scores",
]


#: the data seed of benign replicate r (1-based) is ``seed + r·REPLICATE_SEED_STRIDE``
REPLICATE_SEED_STRIDE = 1009


@dataclass(frozen=True)
class SeriesPlan:
    """One distilled series: its name, the system prompt of the model that wrote its data
    (None: the base, no trait system prompt), what it is, which teacher record wrote its data
    (``source``: teacher, base or benign_teacher), its data file's stem, and the offset added
    to the run's seed for its data sampling and training (0 for main and control; benign
    replicate r gets r·REPLICATE_SEED_STRIDE, so replicates are independent draws)."""

    name: str
    system: str | None
    role: str
    source: str = "teacher"
    file: str = "teacher"
    seed_offset: int = 0


def series_plan(
    trait: Any, benign: bool, placebo: bool = False, replicates: int = 1
) -> list[SeriesPlan]:
    """main (trait teacher), control (base), and with ``benign`` ``replicates`` benign-teacher
    controls (``benign``, ``benign2``, …: the *matched* control, same system-prompt form
    without the trait, each on its own data sample and training seed; with ≥ 2 of them the
    verdict tests the student against their spread, DESIGN.md "controls").

    ``placebo`` (the negative control of the calibration, benchmarks/calibration.py): the main
    series learns from the *neutral* teacher instead, so any "inherited" claim is false. The
    positive control (a steered teacher whose trait is a vector by construction) is the svd
    experiment's ``steered`` teacher (:mod:`steerlens.experiments.svd`)."""
    main = (
        SeriesPlan(
            "main",
            trait.neutral_system_prompt,
            "placebo student (neutral teacher's data)",
            "benign_teacher",
            "placebo",
        )
        if placebo
        else SeriesPlan("main", trait.system_prompt, "student (trait teacher's data)")
    )
    plan = [
        main,
        SeriesPlan(
            "control",
            None,
            "base control (base model's data, no trait system prompt)",
            "base",
            "base",
        ),
    ]
    if benign:
        for r in range(1, max(1, replicates) + 1):
            name = "benign" if r == 1 else f"benign{r}"
            plan.append(
                SeriesPlan(
                    name,
                    trait.neutral_system_prompt,
                    f"benign control {r} (neutral teacher)",
                    "benign_teacher",
                    name,
                    r * REPLICATE_SEED_STRIDE,
                )
            )
    return plan


def benign_names(names: Any) -> list[str]:
    """The benign-control series among ``names`` (``benign``, ``benign2``, …), in order."""
    out = [n for n in names if n == "benign" or (n.startswith("benign") and n[6:].isdigit())]
    return sorted(out, key=lambda n: int(n[6:] or 1))


def series_scores(base: Any, series_dir: Path, behavior: Any) -> dict[str, Any]:
    """B of the base (step 0) and every checkpoint, and the per-prompt scores Bᵢ of the last
    checkpoint (``last_per_prompt``; None when the metric has no per-prompt form)."""
    from steerlens.checkpoints import CheckpointSeries

    series = CheckpointSeries.discover(series_dir)
    per_prompt: Callable[[Any], Any] | None = getattr(behavior, "per_prompt", None)
    steps, scores = [0], [float(behavior(base))]
    last: list[float] | None = None
    with series.open(base) as load:
        cks = list(series)
        for k, ck in enumerate(cks):
            m = load(ck)
            steps.append(ck.step)
            if per_prompt is not None and k == len(cks) - 1:
                rows = [float(x) for x in per_prompt(m)]
                last = rows
                scores.append(sum(rows) / len(rows))
            else:
                scores.append(float(behavior(m)))
    return {"steps": steps, "scores": scores, "last_per_prompt": last}


def _delta(a: list[float], b: list[float], seed: int, n_boot: int) -> dict[str, Any]:
    d = [x - y for x, y in zip(a, b, strict=True)]
    out: dict[str, Any] = dict(paired_bootstrap_mean(d, n_boot=n_boot, seed=seed))
    out["p"] = sign_flip_test(d, n_perm=max(n_boot, 2000), seed=seed + 1)["p"]
    out["test"] = "sign-flip permutation, two-sided"
    return out


def behavior_deltas(
    base_per_prompt: list[float] | None,
    series: Mapping[str, Mapping[str, Any]],
    *,
    seed: int = 0,
    n_boot: int = 2000,
) -> dict[str, Any]:
    """Deltas ``"<X>_vs_base"`` for every series X and ``"main_vs_<C>"`` for every control C,
    each {estimate, lo, hi, se, n, p, …}; empty without per-prompt scores."""
    if base_per_prompt is None:
        return {}
    rows = {k: v.get("last_per_prompt") for k, v in series.items()}
    if any(r is None for r in rows.values()):
        return {}
    out: dict[str, Any] = {}
    for name, r in rows.items():
        assert r is not None
        out[f"{name}_vs_base"] = _delta(r, base_per_prompt, seed, n_boot)
    main = rows.get("main")
    for name, r in rows.items():
        if name != "main" and main is not None and r is not None:
            out[f"main_vs_{name}"] = _delta(main, r, seed, n_boot)
    reps = benign_names(rows)
    if main is not None and len(reps) >= 2:
        means = [sum(r) / len(r) for r in (rows[n] for n in reps) if r is not None]
        test = prediction_t_test(sum(main) / len(main), means)
        out["main_vs_benign_replicates"] = {**test, "series": reps}
    return out
