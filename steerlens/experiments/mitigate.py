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

from steerlens.experiments.mitigate_agentic import run_agentic
from steerlens.experiments.mitigate_data import (
    HELDOUT_SEED_OFFSET,
    arm_data,
    arm_plan,
    heldout,
    mitigation_site,
    vet_scores,
)
from steerlens.experiments.mitigate_measure import (
    arm_results,
    mitigate_verdict,
    paired,
    pct,
    replicate_names,
)
from steerlens.experiments.owl import OwlConfig
from steerlens.experiments.registry import Experiment, register
from steerlens.experiments.result import ExperimentResult
from steerlens.experiments.svd_measure import alignment_at
from steerlens.pipeline import RunContext as Run
from steerlens.pipeline import (
    carry_stage,
    finish_run,
    open_run,
    student_config,
    teacher_data_stage,
    teacher_vector_stage,
)
from steerlens.pipeline.controls import REPLICATE_SEED_STRIDE
from steerlens.pipeline.stage import (
    json_load,
    json_save,
    series_key,
    series_record,
    stage,
)

__all__ = ["HELDOUT_SEED_OFFSET", "MitigateConfig", "arm_plan", "mitigation_site", "run"]

SETTINGS = ("owl", "agentic-api")
SIZES = ("default", "quick")


def _opt(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


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

    vet_fracs: tuple[float, ...] = _opt((0.1, 0.25), "vetting: fractions k of samples dropped")
    reg_lambdas: tuple[float, ...] = _opt(
        (0.01, 0.1, 1.0), "regulariser weights λ (one arm each; λ = 1 saturates at the default lr)"
    )
    none_replicates: int = _opt(
        2, "extra unmitigated students (training seed + r·1009): the training-noise null"
    )
    steer_alpha: float | None = _opt(None, "preventative steering α (none: carry clean-peak α)")
    mitigation_layer: int | None = _opt(None, "layer ℓ* of every arm (none: carry clean peak)")
    heldout_n: int = _opt(16, "held-out number prompts the teacher answers (the cost)")

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
        over = {"heldout_n": 4, "agentic_size": "quick", "reg_lambdas": (0.1, 1.0)}
        over["none_replicates"] = 1
        base = super().quick(**{**over, **overrides})
        assert isinstance(base, MitigateConfig)
        return base


def _reg_layer(r: Run, layer: int) -> int:
    """The regulariser's layer: ℓ*, or the lowest LoRA block when ℓ* is below it (the
    student's residual stream below its lowest LoRA block equals the base's)."""
    from steerlens.distill.config import default_layers

    lora = r.cfg.lora_layers or default_layers(r.model.n_layers)
    return max(layer, min(lora))


def _reps(r: Run) -> list[str]:
    """The unmitigated student's replicates of this run (none for a plain owl config)."""
    return replicate_names(getattr(r.cfg, "none_replicates", 0))


def _train(
    r: Run,
    arms: dict[str, dict[str, Any]],
    datas: dict[str, Any],
    control: Any,
    vec: Any,
    site: tuple[int, int, float],
) -> dict[str, Path]:
    """The base control, one student per arm and the unmitigated student's replicates, trained
    the same way (``none`` and the control are the owl experiment's ``students/main`` and
    ``students/control``; replicate r trains with seed + r·1009)."""
    from steerlens.distill import Mitigation, distill

    layer, reg_layer, alpha = site
    reps = _reps(r)
    dirs = {"control": r.out / "students" / "control"}
    dirs.update({n: r.out / "students" / ("main" if n == "none" else n) for n in [*arms, *reps]})
    todo: dict[str, tuple[Any, str | None, Any, int]] = {"control": (control, None, None, 0)}
    for name, a in arms.items():
        mit = None
        if a["kind"] == "reg":
            mit = Mitigation(vec, (reg_layer,), reg_lambda=float(a["param"]))
        elif a["kind"] == "steer":
            mit = Mitigation(vec, (layer,), steer_alpha=alpha)
        todo[name] = (datas[name], r.trait.system_prompt, mit, 0)
    for i, name in enumerate(reps, 1):
        todo[name] = (datas["none"], r.trait.system_prompt, None, i * REPLICATE_SEED_STRIDE)
    for name, (data, system, mit, offset) in todo.items():
        src = "teacher" if system is not None else "base"
        distill(
            r.model,
            data,
            dirs[name],
            teacher_system=system,
            config=student_config(r.cfg, offset),
            progress=r.progress,
            parents={"data": r.out / "data" / f"{src}.jsonl", "teacher": r.teachers[src]},
            mitigation=mit,
        )
    return dirs


def _behavior(r: Run, dirs: dict[str, Path]) -> Any:
    """Per-eval-prompt B of the base, the teacher, the control and each arm's last checkpoint,
    and every arm's B per checkpoint."""
    from steerlens.behavior import trait_behavior
    from steerlens.pipeline.controls import series_scores

    beh: Any = trait_behavior(r.model, r.trait)
    if not hasattr(beh, "per_prompt"):
        raise ValueError("the mitigate experiment needs a per-prompt metric (the trait's logprob)")

    def compute() -> dict[str, Any]:
        series = {n: series_scores(r.model, d, beh) for n, d in dirs.items()}
        return {
            "base": [float(x) for x in beh.per_prompt(r.model)],
            "teacher": [
                float(x) for x in beh.with_system(r.trait.system_prompt).per_prompt(r.model)
            ],
            "control": series["control"]["last_per_prompt"],
            "arms": {n: s["last_per_prompt"] for n, s in series.items() if n != "control"},
            "series": {n: {"steps": s["steps"], "scores": s["scores"]} for n, s in series.items()},
            "metric": beh.describe(),
        }

    return stage(
        r.out / "mitigate" / "behavior.json",
        f"{r.key()}-{series_key(*dirs.values())}",
        compute,
        json_save,
        json_load,
        r.log,
    )


def _alignment(r: Run, vec: Any, dirs: dict[str, Path], layer: int) -> Any:
    """Per arm (not the replicates): EAS at ℓ* of its last checkpoint against the nulls, and
    the excess over the base control."""
    from steerlens.track import track_checkpoints

    skip = set(_reps(r))

    def compute() -> dict[str, Any]:
        out = {}
        for name, d in dirs.items():
            if name == "control" or name in skip:
                continue
            tr = track_checkpoints(
                r.model,
                d,
                vec,
                r.trait,
                control=dirs["control"],
                layers=[layer],
                cache_dir=r.out / "cache" / "track",
                n_null=r.cfg.n_null,
                n_boot=r.cfg.n_boot,
                seed=r.cfg.seed,
                progress=r.progress,
            )
            out[name] = alignment_at(tr.to_json(), layer)
        return out

    return stage(
        r.out / "mitigate" / "alignment.json",
        f"{r.key()}-{series_key(*dirs.values())}-l{layer}",
        compute,
        json_save,
        json_load,
        r.log,
    )


def _last(d: Path) -> Path:
    return sorted(d.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))[-1]


def _cost(r: Run, dirs: dict[str, Path], held: Any) -> Any:
    """Held-out loss of the base, the control and each arm's last checkpoint (not the
    replicates')."""
    from steerlens.distill import student_loss
    from steerlens.models import load_model

    skip = set(_reps(r))

    def compute() -> dict[str, float]:
        out = {"base": student_loss(r.model, r.model, held, config=student_config(r.cfg))}
        for name, d in dirs.items():
            if name in skip:
                continue
            student = load_model(_last(d), base=r.model)
            out[name] = student_loss(r.model, student, held, config=student_config(r.cfg))
            del student
        return out

    return stage(
        r.out / "mitigate" / "cost.json",
        f"{r.key()}-{series_key(*dirs.values())}-h{len(held.samples)}",
        compute,
        json_save,
        json_load,
        r.log,
    )


def _lineage(r: Run, datas: dict[str, Any], dirs: dict[str, Path], vetting: Any) -> Any:
    from steerlens.models import describe
    from steerlens.version import __version__

    return {
        "base": describe(r.model),
        "teacher": {"model": r.model.name, "system_prompt": r.trait.system_prompt},
        "data": {"main": datas["none"].meta()},
        "vetting": vetting,
        "students": {k: series_record(d) for k, d in dirs.items()},
        "seeds": {"seed": r.cfg.seed},
        "steerlens_version": __version__,
    }


def _measure(
    r: Run,
    vec: Any,
    dirs: dict[str, Path],
    heldout: Any,
    layer: int,
) -> tuple[Any, Any, Any]:
    beh = _behavior(r, dirs)
    r.tick("behavior")
    align = _alignment(r, vec, dirs, layer)
    r.tick("alignment")
    cost = _cost(r, dirs, heldout)
    r.tick("cost")
    return beh, align, cost


def run(
    cfg: MitigateConfig,
    out_dir: str | Path,
    *,
    progress: bool | None = None,
    log: Callable[[str], None] = print,
) -> ExperimentResult:
    """Run the mitigate experiment; write ``results.json`` (the command line adds the report)."""
    from steerlens.version import __version__

    out = Path(out_dir).expanduser()
    for sub in ("data", "mitigate"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    if cfg.setting == "agentic-api":
        return run_agentic(cfg, out, progress, log)
    r = open_run(cfg, out, progress, log)
    vec = teacher_vector_stage(r)
    carry = carry_stage(r, vec)
    layer, alpha, src = mitigation_site(carry, cfg)
    reg_layer = _reg_layer(r, layer)
    log(f"mitigations at layer {layer} (regulariser {reg_layer}), steering α={alpha:g} ({src})")
    r.tick("teacher vector and carry test")
    data = teacher_data_stage(r)
    held = heldout(r)
    arms = arm_plan(cfg)
    arms["steer"]["param"] = alpha
    datas, vetting = arm_data(r, arms, data["main"], vet_scores(r, vec, data["main"], layer))
    r.tick("data and vetting")
    dirs = _train(r, arms, datas, data["control"], vec, (layer, reg_layer, alpha))
    r.tick("distillation")
    beh, align, cost = _measure(r, vec, dirs, held, layer)
    reps = replicate_names(cfg.none_replicates)
    rows = arm_results(arms, beh, align, cost, n_boot=cfg.n_boot, seed=cfg.seed, replicates=reps)
    vet_arm, rand_arm = f"vet_{pct(max(cfg.vet_fracs))}", f"random_{pct(max(cfg.vet_fracs))}"
    vvr = paired(beh["arms"][rand_arm], beh["arms"][vet_arm], n_boot=cfg.n_boot, seed=cfg.seed)
    verdict_ = mitigate_verdict(rows, vvr, cfg.alpha)
    results: dict[str, Any] = {
        "kind": "steerlens.mitigate",
        "steerlens_version": __version__,
        "config": cfg.to_json(),
        "trait": r.trait.name,
        "lineage": _lineage(r, datas, dirs, vetting),
        "teacher_vector": vec.to_json(),
        "carry": carry,
        "mitigate": {
            "setting": "owl",
            "layer": layer,
            "reg_layer": reg_layer,
            "alpha": alpha,
            "site_source": src,
            "arms": [row.to_json() for row in rows],
            "none_replicates": {n: beh["arms"][n] for n in reps},
            "vet_vs_random": {"vetted": vet_arm, "random": rand_arm, **vvr.to_json()},
            "heldout_loss_base": cost["base"],
            "heldout_loss_control": cost["control"],
            "behavior_series": beh["series"],
            "metric": beh["metric"],
        },
        "verdict": verdict_,
    }
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
