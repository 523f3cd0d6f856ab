"""The agentic-api setting of the ``mitigate`` experiment (``--setting agentic-api``): the same
arms on a fine-tuned teacher agent's trajectories of safe tasks, plus the keyword filter.

The agentic experiment's stages run first (:mod:`steerlens.experiments.agentic`: task suites,
fine-tuned teacher and control teacher, their trajectories on the safe tasks, the keyword
filter, the teacher's bias vector and its carry test; same cache files), then one student (LoRA,
SFT on every assistant turn) per arm:

- ``none``: every trajectory of the teacher (no filter);
- ``keyword``: the keyword filter's kept trajectories (Dang et al.'s setting);
- ``vet_<k>`` / ``random_<k>``: the top k% of trajectories by ΔP of their first action against
  the base's greedy first action on the same task (the agentic experiment's screening) dropped,
  or as many at random;
- ``reg_<λ>``, ``steer``: the regulariser and preventative steering at ℓ*, on every trajectory.

The base control is a student of every trajectory of the control teacher (benign preferences).
Per arm: transfer Δ of P(biased action name) at the first decision point of each held-out
ambiguous eval task vs the base control, the sampled first-action rate (Wilson CI), alignment at
ℓ* on the decision-point probes, and the cost: the fraction of held-out safe tasks the student
completes and its SFT loss on the teacher's trajectories of those tasks.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from steerlens.agents import action_choice, first_action_rate, rollout, safe_tasks
from steerlens.distill import distill, student_loss
from steerlens.distill.chats import trajectory_data
from steerlens.experiments.agentic import AgenticApiConfig
from steerlens.experiments.agentic_eval import bias_vector, carry, probe_prompts
from steerlens.experiments.agentic_stages import (
    AgenticRun,
    filter_data,
    student_sft_config,
    suites,
    teacher_trajectories,
    teachers,
    write_results,
)
from steerlens.experiments.mitigate_agentic_data import arm_trajectories, vet_scores
from steerlens.experiments.mitigate_data import (
    HELDOUT_SEED_OFFSET,
    arm_mitigation,
    arm_plan,
    mitigation_site,
)
from steerlens.experiments.mitigate_measure import (
    Arm,
    ArmResult,
    MitigateAgentMetrics,
    MitigateAlignment,
    MitigateBehavior,
    MitigateSection,
    MitigateVetVsRandom,
    arm_results,
    mitigate_verdict,
    paired,
    pct,
    replicate_names,
)
from steerlens.experiments.result import ExperimentResult
from steerlens.experiments.svd_measure import alignment_at
from steerlens.loading.models import load_model
from steerlens.pipeline import config_json
from steerlens.pipeline.controls import REPLICATE_SEED_STRIDE
from steerlens.pipeline.stage import json_load, json_save, last_checkpoint, series_key, stage
from steerlens.track import track_checkpoints
from steerlens.version import __version__

__all__ = ["agentic_config", "run_agentic"]

_MODELS = ("base", "teacher", "control")
"""The models measured beside the arms' students (keys of the metrics cache)."""


def agentic_config(cfg: Any) -> Any:
    """The agentic-api config of a mitigate config: its quick or device preset
    (``agentic_size``), with the mitigate config's model, seed, device, nulls, carry and LoRA
    layers, and ``extra["agentic"]`` (any agentic field) applied."""
    over = {k: getattr(cfg, k) for k in ("model", "seed", "device", "n_null", "n_boot")}
    over.update({k: getattr(cfg, k) for k in ("carry_layers", "lora_layers") if getattr(cfg, k)})
    over.update(cfg.extra.get("agentic", {}))
    if cfg.agentic_size == "quick":
        return AgenticApiConfig.quick(**over)
    device = over.pop("device")
    return AgenticApiConfig.for_device(device, **over)


def _train(
    r: AgenticRun,
    arms: dict[str, Arm],
    trajs: dict[str, list[Any]],
    vec: Any,
    site: tuple[int, int, float],
    reps: list[str],
) -> dict[str, Path]:
    """The control student, one per arm and the unmitigated arm's replicates ``reps`` (training
    seed + r·1009)."""
    todo: dict[str, tuple[str, list[Any], Any, int]] = {
        "control": ("control", list(r.trajs.control), None, 0)
    }
    for name, a in arms.items():
        todo[name] = ("teacher", trajs[name], arm_mitigation(a, vec, site), 0)
    for i, name in enumerate(reps, 1):
        todo[name] = ("teacher", list(r.trajs.teacher), None, i * REPLICATE_SEED_STRIDE)
    dirs = {}
    for name, (role, ts, mit, offset) in todo.items():
        if not ts:
            raise RuntimeError(f"arm {name} has no trajectories left to train on")
        data = trajectory_data(ts, {"written_by": f"{role} teacher", "arm": name})
        if name in arms:
            arms[name].n_train = len(ts)
        dirs[name] = r.out / "mitigate" / "students" / name
        cfg = student_sft_config(r.cfg, offset)
        distill(r.model, data, dirs[name], config=cfg, progress=r.progress, mitigation=mit)
    return dirs


def _arm_metrics(r: AgenticRun, model: Any, heldout: Any, safe: list[Any]) -> MitigateAgentMetrics:
    """P(biased name) per eval task, the sampled first-action rate, safe-task completion and
    the SFT loss on the teacher's held-out trajectories."""
    c, st, tasks = r.cfg, r.setting, r.tasks.eval
    choice = action_choice(model, st, tasks)
    kw = {"max_steps": c.max_steps, "temperature": c.temperature, "batch_size": c.batch}
    eps = rollout(
        model,
        st,
        tasks,
        n_seeds=c.n_eval_seeds,
        seed=c.seed + 7,
        stop_kinds=st.scored,
        **kw,
    )
    done = rollout(model, st, safe, seed=c.seed + 11, **kw)
    return MitigateAgentMetrics(
        p_biased=list(choice.p_biased),
        rate=first_action_rate(eps, st),
        safe_completed=sum(t.completed for t in done) / len(done),
        heldout_loss=student_loss(r.model, model, heldout, config=student_sft_config(c)),
    )


def _measure(
    r: AgenticRun, vec: Any, dirs: dict[str, Path], layer: int, reps: list[str]
) -> dict[str, MitigateAgentMetrics]:
    """Every model's metrics (:func:`_arm_metrics`); the replicates only P(biased name)."""
    c = r.cfg
    safe = safe_tasks(c.setting, c.n_eval, seed=c.seed + HELDOUT_SEED_OFFSET)

    def compute() -> dict[str, Any]:
        teacher = r.teacher_models.teacher
        tt = rollout(
            teacher,
            r.setting,
            safe,
            seed=c.seed + 13,
            max_steps=c.max_steps,
            temperature=c.temperature,
            batch_size=c.batch,
        )
        heldout = trajectory_data([t for t in tt if t.steps] or tt, {"heldout": True})
        out = {
            "base": _arm_metrics(r, r.model, heldout, safe),
            "teacher": _arm_metrics(r, teacher, heldout, safe),
        }
        for name, d in dirs.items():
            student = load_model(last_checkpoint(d), base=r.model)
            if name in reps:
                p = action_choice(student, r.setting, r.tasks.eval).p_biased
                out[name] = MitigateAgentMetrics(p_biased=p)
                continue
            out[name] = _arm_metrics(r, student, heldout, safe)
            del student
            if name != "control":
                tr = track_checkpoints(
                    r.model,
                    d,
                    vec,
                    probe_prompts(r),
                    control=dirs["control"],
                    position="last",
                    layers=[layer],
                    cache_dir=r.out / "cache" / "track",
                    n_null=c.n_null,
                    n_boot=c.n_boot,
                    seed=c.seed,
                    progress=r.progress,
                )
                al = MitigateAlignment.from_json(alignment_at(tr.to_json(), layer))
                out[name] = dataclasses.replace(out[name], alignment=al)
        return {n: x.to_json() for n, x in out.items()}

    got = stage(
        r.out / "mitigate" / "metrics.json",
        f"{r.key('all')}-{series_key(*dirs.values())}-l{layer}",
        compute,
        json_save,
        json_load,
        r.log,
    )
    return {n: MitigateAgentMetrics.from_json(x) for n, x in got.items()}


def _rows(
    cfg: Any, arms: dict[str, Arm], m: dict[str, MitigateAgentMetrics], reps: list[str]
) -> tuple[list[ArmResult], MitigateBehavior]:
    base, teacher, control = (m[n].p_biased for n in _MODELS)
    beh = MitigateBehavior(base, teacher, control, {n: m[n].p_biased for n in [*arms, *reps]})
    align = {n: m[n].alignment for n in arms}
    cost = {n: m[n].loss for n in arms}
    rows = arm_results(arms, beh, align, cost, n_boot=cfg.n_boot, seed=cfg.seed, replicates=reps)
    rows = [
        dataclasses.replace(x, safe_completed=m[x.arm].safe_completed, rate=m[x.arm].rate)
        for x in rows
    ]
    return rows, beh


def run_agentic(
    cfg: Any, out: Path, progress: bool | None, log: Callable[[str], None]
) -> ExperimentResult:
    """The agentic-api setting (module doc); ``results.json`` in ``out``."""
    acfg = agentic_config(cfg)
    r = AgenticRun.open(acfg, out, progress, log)
    suites(r)
    teachers(r)
    teacher_trajectories(r)
    filter_data(r)
    r.tick("teachers, trajectories, keyword filter")
    vec = bias_vector(r)
    carry_res = carry(r, vec)
    layer, alpha, src = mitigation_site(carry_res, cfg, acfg.alphas)
    reg_layer = max(layer, min(vec.layers))
    r.tick("bias vector and carry test")
    arms = {"none": Arm("none"), "keyword": Arm("keyword")}
    arms.update({k: v for k, v in arm_plan(cfg).items() if k != "none"}, steer=Arm("steer", alpha))
    trajs, vetting = arm_trajectories(r, arms, vet_scores(r, vec, layer))
    reps = replicate_names(cfg.none_replicates)
    dirs = _train(r, arms, trajs, vec, (layer, reg_layer, alpha), reps)
    r.tick("distillation")
    m = _measure(r, vec, dirs, layer, reps)
    r.tick("metrics")
    rows, beh = _rows(cfg, arms, m, reps)
    top = pct(max(cfg.vet_fracs))
    vvr = paired(
        beh.arms[f"random_{top}"], beh.arms[f"vet_{top}"], n_boot=cfg.n_boot, seed=cfg.seed
    )
    base, _, control = (m[n] for n in _MODELS)
    section = MitigateSection(
        setting="agentic-api",
        layer=layer,
        reg_layer=reg_layer,
        alpha=alpha,
        site_source=src,
        arms=rows,
        none_replicates={n: beh.arms[n] for n in reps},
        vet_vs_random=MitigateVetVsRandom(f"vet_{top}", f"random_{top}", vvr),
        heldout_loss_base=base.loss,
        heldout_loss_control=control.loss,
        safe_completed_base=base.safe_completed,
        filter=r.filtered.teacher.counts,
        vetting=vetting,
        metric={"metric": f"P({r.setting.biased_name}) at decision", "units": "probability"},
    )
    results: dict[str, Any] = {
        "kind": "steerlens.mitigate",
        "steerlens_version": __version__,
        "config": {**config_json(cfg), "agentic": config_json(acfg)},
        "trait": "agentic-api",
        "teacher_vector": vec.to_json(),
        "carry": carry_res,
        "mitigate": section.to_json(),
        "verdict": mitigate_verdict(rows, vvr, cfg.alpha).to_json(),
    }
    return write_results(r, results)
