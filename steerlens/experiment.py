"""The main job: steering-vector distillation end to end on one base model (``steerlens demo``).

Stages (each cached in the output folder, so an interrupted run resumes where it stopped):

1. teacher = base + trait system prompt; benign teacher = base + neutral system prompt;
2. teacher vector per layer (trait vs neutral system prompt on number probes) and carry test;
3. both teachers continue number sequences; the rule filter keeps pure-number answers;
4. reference distillation: a LoRA student on the teacher's numbers and a control student on the
   benign teacher's numbers, checkpoints in ``checkpoint-N`` layout;
5. behavior per checkpoint, alignment tracking of both series, screening of the training data;
6. ``results.json``, ``report.html`` and the vectors as safetensors.

Nothing here is tuned to an answer: the verdict reports what the numbers say.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

T = TypeVar("T")


@dataclass
class DemoConfig:
    """Settings of the end-to-end run. Defaults finish in about 8 minutes on an idle 2-core CPU
    (24 LoRA steps of batch 6 per series, 48 teacher samples, a 5-layer carry grid);
    :meth:`for_device` scales them up on a GPU; :meth:`quick` is a smoke-test size."""

    model: str = "smollm2-135m-instruct"
    trait: str = "owl"
    n_samples: int = 48
    steps: int = 24
    batch_size: int = 6
    save_every: int = 8
    rank: int = 4
    lora_layers: tuple[int, ...] | None = None
    loss: str = "kl"
    carry_layers: tuple[int, ...] | None = None
    alphas: tuple[float, ...] = (2.0, 4.0, 8.0)
    n_random: int = 2
    probe_n: int | None = None
    n_null: int = 1000
    n_boot: int = 1000
    screen_max: int = 24
    seed: int = 0
    device: str = "cpu"
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def for_device(cls, device: str | None = None, **overrides: Any) -> DemoConfig:
        dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
        base = cls(device=dev)
        if dev.startswith("cuda"):
            base = dataclasses.replace(
                base,
                n_samples=256,
                steps=200,
                batch_size=16,
                save_every=25,
                n_random=8,
                alphas=(0.5, 1.0, 2.0, 4.0, 8.0),
                screen_max=128,
            )
        return dataclasses.replace(base, **overrides)

    @classmethod
    def quick(cls, **overrides: Any) -> DemoConfig:
        """A smoke-test run (about 2 minutes on 2 cores): 16 probe prompts, one carry layer,
        8 samples, 4 training steps. Every stage runs; the numbers are too small to mean much."""
        base = cls(
            n_samples=8,
            steps=4,
            save_every=2,
            alphas=(4.0,),
            n_random=1,
            probe_n=16,
            carry_layers=(15,),
            n_null=1000,
            n_boot=200,
            screen_max=6,
        )
        return dataclasses.replace(base, **overrides)

    def to_json(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self), default=str))

    def key(self, *fields_: str) -> str:
        d = self.to_json()
        sub = {k: d[k] for k in fields_} if fields_ else d
        return hashlib.sha256(json.dumps(sub, sort_keys=True).encode()).hexdigest()[:12]


def _stage(
    path: Path,
    key: str,
    fn: Callable[[], T],
    save: Callable[[T, Path], object],
    load: Callable[[Path], T],
    log: Callable[[str], None],
) -> T:
    """Run ``fn`` unless ``path`` holds a result written for the same ``key``."""
    stamp = path.with_name(path.name + ".key")
    if path.exists() and stamp.is_file() and stamp.read_text().strip() == key:
        try:
            out = load(path)
            log(f"reusing {path.name}")
            return out
        except Exception as exc:  # noqa: BLE001 - a broken cache entry is recomputed
            log(f"cached {path.name} unreadable ({exc}); recomputing")
    out = fn()
    save(out, path)
    stamp.write_text(key)
    return out


def _json_save(obj: Any, path: Path) -> None:
    from steerlens.report import write_json

    write_json(obj, path)


def _json_load(path: Path) -> Any:
    return json.loads(path.read_text())


def checkpoint_behavior(
    base: Any, series_dir: Path, behavior: Callable[[Any], float]
) -> dict[str, Any]:
    """The behavior score of the base (step 0) and every checkpoint of a series."""
    from steerlens.checkpoints import CheckpointSeries

    series = CheckpointSeries.discover(series_dir)
    steps, scores = [0], [float(behavior(base))]
    with series.open(base) as load:
        for ck in series:
            steps.append(ck.step)
            scores.append(float(behavior(load(ck))))
    return {"steps": steps, "scores": scores}


def run_demo(
    cfg: DemoConfig,
    out_dir: str | Path,
    *,
    progress: bool | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the whole experiment; write ``results.json``, ``report.html`` and vectors to
    ``out_dir``; return the results dict."""
    import steerlens
    from steerlens.behavior import trait_behavior
    from steerlens.carry import carry_test
    from steerlens.distill import DistillConfig, TeacherData, distill, generate_teacher_data
    from steerlens.extract import teacher_vector
    from steerlens.models import describe, load_model
    from steerlens.numbers import number_prompts
    from steerlens.report import render_report
    from steerlens.screen import screen_dataset
    from steerlens.track import track_checkpoints
    from steerlens.traits import as_trait
    from steerlens.vectors import SteeringVector

    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    timings: dict[str, float] = {}

    def tick(name: str, since: float) -> float:
        timings[name] = round(time.time() - since, 2)
        log(f"[{time.time() - t0:6.1f}s] {name} done ({timings[name]:.1f}s)")
        return time.time()

    t = time.time()
    model = load_model(cfg.model, device=cfg.device)
    trait = as_trait(cfg.trait)
    if cfg.probe_n is not None:
        trait = dataclasses.replace(trait, probe_n=cfg.probe_n)
    mkey = model.fingerprint
    t = tick("load model", t)

    # 2. teacher vector and carry test -------------------------------------------------
    vec_path = out / "vectors" / "teacher.safetensors"
    vec_path.parent.mkdir(parents=True, exist_ok=True)
    vec = _stage(
        vec_path,
        f"{mkey}-{cfg.key('trait', 'seed', 'probe_n')}",
        lambda: teacher_vector(model, trait, layers="all", seed=cfg.seed, progress=progress),
        lambda v, p: v.save(p),
        SteeringVector.load,
        log,
    )
    t = tick("teacher vector", t)
    carry_layers = list(cfg.carry_layers) if cfg.carry_layers else None
    carry = _stage(
        out / "carry.json",
        f"{mkey}-{cfg.key('trait', 'seed', 'probe_n', 'carry_layers', 'alphas', 'n_random')}",
        lambda: carry_test(
            model,
            vec,
            trait,
            layers=carry_layers,
            alphas=cfg.alphas,
            n_random=cfg.n_random,
            seed=cfg.seed,
            progress=progress,
        ).to_json(),
        _json_save,
        _json_load,
        log,
    )
    t = tick("carry test", t)

    # 3. teacher data ---------------------------------------------------------------
    data_dir = out / "data"
    data_dir.mkdir(exist_ok=True)
    dkey = f"{mkey}-{cfg.key('trait', 'seed', 'n_samples')}"
    # training prompts differ from the probe prompts used for tracking (another seed)
    data_prompts = number_prompts(cfg.n_samples, seed=cfg.seed + 1000)
    data = _stage(
        data_dir / "teacher.jsonl",
        dkey,
        lambda: generate_teacher_data(
            model,
            data_prompts,
            system=trait.system_prompt,
            n=cfg.n_samples,
            seed=cfg.seed,
            progress=progress,
        ),
        lambda d, p: d.save(p),
        TeacherData.load,
        log,
    )
    control_data = _stage(
        data_dir / "control.jsonl",
        dkey,
        lambda: generate_teacher_data(
            model,
            data_prompts,
            system=trait.neutral_system_prompt,
            n=cfg.n_samples,
            seed=cfg.seed,
            progress=progress,
        ),
        lambda d, p: d.save(p),
        TeacherData.load,
        log,
    )
    t = tick("teacher data", t)

    # 4. distillation ------------------------------------------------------------------
    dcfg = DistillConfig(
        rank=cfg.rank,
        layers=cfg.lora_layers,
        loss=cfg.loss,
        steps=cfg.steps,
        batch_size=cfg.batch_size,
        save_every=cfg.save_every,
        seed=cfg.seed,
    )
    main_dir, ctrl_dir = out / "students" / "main", out / "students" / "control"
    main_res = distill(
        model, data, main_dir, teacher_system=trait.system_prompt, config=dcfg, progress=progress
    )
    ctrl_res = distill(
        model,
        control_data,
        ctrl_dir,
        teacher_system=trait.neutral_system_prompt,
        config=dcfg,
        progress=progress,
    )
    t = tick("distillation", t)

    # 5. behavior, tracking, screening ----------------------------------------------------
    behavior = trait_behavior(model, trait)
    beh = _stage(
        out / "behavior.json",
        f"{mkey}-{cfg.key()}",
        lambda: {
            "main": checkpoint_behavior(model, main_dir, behavior),
            "control": checkpoint_behavior(model, ctrl_dir, behavior),
            "teacher": float(behavior.with_system(trait.system_prompt)(model)),
            "benign_teacher": float(behavior.with_system(trait.neutral_system_prompt)(model)),
            "metric": behavior.describe(),
        },
        _json_save,
        _json_load,
        log,
    )
    t = tick("behavior per checkpoint", t)
    track = track_checkpoints(
        model,
        main_dir,
        vec,
        trait,
        control=ctrl_dir,
        cache_dir=out / "cache" / "track",
        n_null=cfg.n_null,
        n_boot=cfg.n_boot,
        seed=cfg.seed,
        progress=progress,
    )
    track_json = track.to_json()
    t = tick("tracking", t)
    n_screen = cfg.screen_max
    screen = _stage(
        out / "screen.json",
        f"{mkey}-{cfg.key()}",
        lambda: screen_dataset(
            model,
            vec,
            {"teacher": data.samples[:n_screen], "control": control_data.samples[:n_screen]},
            seed=cfg.seed,
            progress=progress,
        ).to_json(),
        _json_save,
        _json_load,
        log,
    )
    t = tick("screening", t)

    # 6. results -------------------------------------------------------------------------
    for name, res in (("main", main_res), ("control", ctrl_res)):
        _ = name, res
    results: dict[str, Any] = {
        "kind": "steerlens.demo",
        "steerlens_version": steerlens.__version__,
        "config": cfg.to_json(),
        "trait": trait.name,
        "lineage": {
            "base": describe(model),
            "teacher": {"model": model.name, "system_prompt": trait.system_prompt},
            "benign_teacher": {"model": model.name, "system_prompt": trait.neutral_system_prompt},
            "data": {"teacher": data.meta(), "control": control_data.meta()},
            "students": {"main": _series_record(main_dir), "control": _series_record(ctrl_dir)},
            "seeds": {"seed": cfg.seed},
            "steerlens_version": steerlens.__version__,
        },
        "teacher_vector": vec.to_json(),
        "carry": carry,
        "behavior": beh,
        "track": track_json,
        "screen": screen,
        "timings_s": timings,
    }
    results["verdict"] = verdict(results)
    from steerlens.report import write_json

    write_json(results, out / "results.json")
    render_report(results).save(out / "report.html")
    timings["total"] = round(time.time() - t0, 1)
    log(f"wrote {out / 'report.html'} and {out / 'results.json'} in {timings['total']:.0f}s")
    return results


def _series_record(series_dir: Path) -> dict[str, Any]:
    rec: dict[str, Any] = {"path": str(series_dir)}
    meta = series_dir / "distill.json"
    if meta.is_file():
        d = json.loads(meta.read_text())
        rec.update(
            {
                k: d[k]
                for k in (
                    "config",
                    "data",
                    "base",
                    "teacher_system",
                    "checkpoints",
                    "losses",
                    "lineage_hash",
                )
                if k in d
            }
        )
    rec["checkpoints"] = sorted(p.name for p in series_dir.glob("checkpoint-*"))
    return rec


def _last_excess(track: dict[str, Any]) -> tuple[int, float, float, float, float] | None:
    ex = track.get("excess")
    if not ex:
        return None
    est = np.array(ex["estimate"], dtype=float)
    lo, hi, p = (np.array(ex[k], dtype=float) for k in ("lo", "hi", "p"))
    row = est[-1]
    if not np.isfinite(row).any():
        return None
    j = int(np.nanargmax(row))
    return (
        int(track["layers"][j]),
        float(row[j]),
        float(lo[-1, j]),
        float(hi[-1, j]),
        float(p[-1, j]),
    )


def verdict(results: dict[str, Any]) -> dict[str, Any]:
    """Plain-words answer to: did the student inherit the trait, does its shift align with the
    teacher vector beyond the control, and is the behavior carried by that vector?"""
    beh = results["behavior"]
    b_main = beh["main"]["scores"]
    b_ctrl = beh["control"]["scores"]
    d_main, d_ctrl = b_main[-1] - b_main[0], b_ctrl[-1] - b_ctrl[0]
    gap = beh["teacher"] - b_main[0]
    inherit = d_main - d_ctrl
    lines = [
        f"Behavior ({beh['metric'].get('metric')}, nats): base {b_main[0]:.2f}, teacher "
        f"{beh['teacher']:.2f}; after training the student moved {d_main:+.2f} and the control "
        f"{d_ctrl:+.2f} (difference {inherit:+.2f}, "
        f"{(inherit / gap * 100 if gap else float('nan')):.0f}% of the teacher's gap)."
    ]
    ex = _last_excess(results["track"])
    aligned = False
    if ex is not None:
        layer, est, lo, hi, p = ex
        aligned = lo > 0
        lines.append(
            f"Alignment: at the last checkpoint the largest excess alignment EAS(student) − "
            f"EAS(control) is {est:+.3f} at layer {layer} (95% CI [{lo:+.3f}, {hi:+.3f}], "
            f"bootstrap p={p:.3g})."
        )
    main = results["track"]["series"]["main"]
    p_adj = np.array(main["p_adj"], dtype=float)
    n_sig = int(np.nansum(p_adj[-1] < results["track"]["settings"].get("alpha", 0.05)))
    lines.append(
        f"{n_sig} of {p_adj.shape[1]} layers align beyond the random-direction nulls "
        "after correction."
    )
    carry = results["carry"]
    lines.append(f"Carry test of the teacher vector: {carry.get('verdict')}")
    inherited = inherit > 0.1 * abs(gap) if gap else False
    if inherited and aligned:
        head = "The student picked up the trait, and its activation shift aligns with the teacher vector beyond the control."
        strength = "strong"
    elif aligned:
        head = "The student's activation shift aligns with the teacher vector beyond the control; the behavioral change is small."
        strength = "weak"
    elif inherited:
        head = "The student's behavior moved toward the teacher, but its shift does not align with the teacher vector beyond the control."
        strength = "weak"
    else:
        head = "No transfer detected: neither the behavior nor the alignment separates the student from the control."
        strength = "none"
    return {
        "headline": head,
        "lines": lines,
        "strength": strength,
        "numbers": {
            "behavior_student_delta": d_main,
            "behavior_control_delta": d_ctrl,
            "behavior_gap": gap,
            "excess_alignment": None if ex is None else ex[1],
            "excess_ci": None if ex is None else [ex[2], ex[3]],
            "excess_layer": None if ex is None else ex[0],
            "significant_layers": n_sig,
            "carry_level": carry.get("level"),
        },
    }


def _finite(x: float) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)
