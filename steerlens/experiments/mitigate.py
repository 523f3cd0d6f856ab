"""The ``mitigate`` experiment (``steerlens experiment mitigate``): mitigations of trait
transfer side by side, on the owl setting (issue 18; DESIGN.md "Mitigations").

The owl stages run first (model, teacher vector, carry test, the teacher's and the base's
numbers, the unmitigated student and the base control: :mod:`steerlens.experiments.owl`, same
cache files), then one student per **arm**, each trained like the owl student on the teacher's
numbers:

- ``none``: no mitigation (the owl student itself);
- ``vet_<k>``: vetting, the top k% of the training samples by projection difference ΔP on vᵀ at
  ℓ* dropped (:func:`steerlens.distill.vet_by_scores`), for each k of ``vet_fracs``;
- ``random_<k>``: the same number as the largest k dropped at random (seeded): the control of
  vetting;
- ``reg_<λ>``: the trait-direction regulariser λ·mean((h_θ − h_θ₀)·v̂)² at ℓ*, for each λ of
  ``reg_lambdas``;
- ``steer``: preventative steering h ← h + α·v at ℓ* during training only (persona_vectors).

ℓ* and α are fixed from the teacher side before any student is looked at: the carry test's
clean peak (else its raw peak, else the middle carry layer and the largest α), or the config's.
Per arm (:mod:`steerlens.experiments.mitigate_measure`): transfer Δ vs the base control with CI
and permutation p, the reduction vs ``none``, alignment at ℓ* against random-direction nulls,
and the cost (loss on held-out clean teacher data, numbers the teacher wrote for prompts no
student saw). Every stage is cached in the output folder.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from steerlens.experiments import mitigate_stages as ms
from steerlens.experiments.mitigate_agentic import run_agentic
from steerlens.experiments.mitigate_data import (
    HELDOUT_SEED_OFFSET,
    arm_data,
    arm_plan,
    heldout,
    mitigation_site,
    vet_scores,
)
from steerlens.experiments.mitigate_measure import arm_results, mitigate_results, replicate_names
from steerlens.experiments.owl import OwlConfig
from steerlens.experiments.registry import Experiment, register
from steerlens.experiments.result import ExperimentResult
from steerlens.pipeline import (
    carry_stage,
    config_json,
    finish_run,
    lineage_json,
    open_run,
    series_records,
    teacher_data_stage,
    teacher_vector_stage,
)
from steerlens.pipeline.context import option

__all__ = ["HELDOUT_SEED_OFFSET", "MitigateConfig", "arm_plan", "mitigation_site", "run"]

SETTINGS = ("owl", "agentic-api")
SIZES = ("default", "quick")


@dataclass
class MitigateConfig(OwlConfig):
    """Settings of the mitigate run: the owl experiment's (model, trait, data, LoRA, carry grid,
    nulls) plus the arms' strengths, the mitigation layer and the held-out set. With
    ``setting="agentic-api"`` the data, teachers and metrics are the agentic experiment's
    (:mod:`steerlens.experiments.mitigate_agentic`; its sizes from ``agentic_size``, any
    agentic field from ``extra["agentic"]``); model, seed, device, nulls, carry and LoRA
    layers come from here."""

    benign_control: bool = field(
        default=False,
        metadata={"help": "also train benign controls (the arms compare with the base control)"},
    )
    setting: str = field(
        default="owl",
        metadata={"help": "owl numbers, or agentic-api trajectories", "choices": SETTINGS},
    )
    agentic_size: str = field(
        default="default",
        metadata={"help": "agentic-api sizes (quick: its smoke test)", "choices": SIZES},
    )

    vet_fracs: tuple[float, ...] = option((0.1, 0.25), "vetting: fractions k of samples dropped")
    reg_lambdas: tuple[float, ...] = option(
        (0.01, 0.1, 1.0), "regulariser weights λ (one arm each; λ = 1 saturates at the default lr)"
    )
    none_replicates: int = option(
        2, "extra unmitigated students (training seed + r·1009): the training-noise null"
    )
    steer_alpha: float | None = option(None, "preventative steering α (none: carry clean-peak α)")
    mitigation_layer: int | None = option(None, "layer ℓ* of every arm (none: carry clean peak)")
    heldout_n: int = option(16, "held-out number prompts the teacher answers (the cost)")

    def __post_init__(self) -> None:
        if self.setting not in SETTINGS or self.agentic_size not in SIZES:
            raise ValueError(
                f"setting must be one of {SETTINGS} and agentic_size one of {SIZES}, got "
                f"{self.setting!r}, {self.agentic_size!r}"
            )
        if not self.vet_fracs or any(not 0 < f < 1 for f in self.vet_fracs):
            raise ValueError(f"vet_fracs must be fractions in (0, 1), got {self.vet_fracs}")
        if any(lam <= 0 for lam in self.reg_lambdas):
            raise ValueError(f"reg_lambdas must be > 0, got {self.reg_lambdas}")
        if self.heldout_n < 1:
            raise ValueError("heldout_n must be >= 1: the cost needs held-out data")
        if self.none_replicates < 0:
            raise ValueError(f"none_replicates must be >= 0, got {self.none_replicates}")

    @classmethod
    def quick(cls, **overrides: Any) -> MitigateConfig:
        """The owl quick size (8 samples, 4 steps, one carry layer), 4 held-out prompts, two
        regulariser λ and one replicate of the unmitigated student."""
        over = dict(heldout_n=4, agentic_size="quick", reg_lambdas=(0.1, 1.0), none_replicates=1)
        base = super().quick(**{**over, **overrides})
        assert isinstance(base, MitigateConfig)
        return base


def run(
    cfg: MitigateConfig,
    out_dir: str | Path,
    *,
    progress: bool | None = None,
    log: Callable[[str], None] = print,
) -> ExperimentResult:
    """Run the mitigate experiment; write ``results.json`` (the command line adds the report)."""
    out = Path(out_dir).expanduser()
    for sub in ("data", "mitigate"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    if cfg.setting == "agentic-api":
        return run_agentic(cfg, out, progress, log)
    r = open_run(cfg, out, progress, log)
    vec = teacher_vector_stage(r)
    carry = carry_stage(r, vec)
    layer, alpha, src = mitigation_site(carry, cfg)
    reg_layer = ms.reg_layer(r, layer)
    log(f"mitigations at layer {layer} (regulariser {reg_layer}), steering α={alpha:g} ({src})")
    r.tick("teacher vector and carry test")
    data = teacher_data_stage(r)
    held = heldout(r)
    arms = arm_plan(cfg, alpha)
    main = data["main"]
    datas, vetting = arm_data(r, arms, main, vet_scores(r, vec, main, layer))
    r.tick("data and vetting")
    dirs = ms.train(r, arms, datas, data["control"], vec, (layer, reg_layer, alpha))
    r.tick("distillation")
    beh = ms.behavior(r, dirs)
    r.tick("behavior")
    align = ms.alignment(r, vec, dirs, layer)
    r.tick("alignment")
    cost = ms.cost(r, dirs, held)
    r.tick("cost")
    reps = replicate_names(cfg.none_replicates)
    rows = arm_results(arms, beh, align, cost, n_boot=cfg.n_boot, seed=cfg.seed, replicates=reps)
    head = {
        "config": config_json(cfg),
        "trait": r.trait.name,
        "lineage": lineage_json(
            r,
            teacher={"model": r.model.name, "system_prompt": r.trait.system_prompt},
            data={"main": main.meta()},
            vetting=vetting,
            students=series_records(dirs),
        ),
        "teacher_vector": vec.to_json(),
        "carry": carry,
    }
    results = mitigate_results(
        cfg,
        head,
        rows,
        beh,
        reps,
        ("owl", layer, reg_layer, alpha, src),
        heldout_loss_base=cost["base"],
        heldout_loss_control=cost["control"],
        behavior_series=beh.series,
        metric=beh.metric or {},
    )
    finish_run(r, results, {"vector": r.out / "vectors" / "teacher.safetensors"})
    return ExperimentResult(results)


MITIGATE = register(
    Experiment(
        name="mitigate",
        config=MitigateConfig,
        run=run,
        description="mitigations of trait transfer side by side (vetting, random drop, "
        "regulariser, preventative steering) with transfer, alignment and cost per arm",
        default_out="runs/mitigate",
    ),
    replace=True,
)
"""The registered mitigate experiment."""
