"""End-to-end calibration of the owl experiment's verdict on known truth (issue 12).

**Negative control (placebo)**: the student is distilled on the *neutral* teacher's numbers
(``series_plan(placebo=True)``), so it cannot have inherited the owl trait. Each trial s runs the
owl experiment's verdict on: main = placebo student N_s, base control C_s (the base's numbers),
and benign replicates N_{s+1}, …, N_{s+k} (the neutral teacher's numbers, other seeds), all at
the quick size. Placebo students and benign replicates are students of the same teacher, so
they are exchangeable, and the verdict's model-level test (``main_vs_benign_replicates``) has
false-claim probability α by construction; the calibration checks that on real models, and
counts how often each rule would claim "inherited":

- ``verdict``: the verdict as it is (per-prompt test vs the base control AND the prediction
  test vs the benign replicates);
- ``base_control_only``: the earlier rule (per-prompt test vs the base control alone).

The pool N_0 … N_{n+k−1} is shared by the trials (trial s uses N_s … N_{s+k}), so trials are
dependent; each trial is a valid test at level α, and the rate over 10 trials is reported with
that caveat. Each trial is a test at level α = 0.05; with 10 trials P(≥ 3 false claims |
rate 0.05) ≈ 0.012: the calibration fails at ≥ 3.

**Positive control**: the svd experiment's ``steered`` teacher (a trait that is a vector by
construction, :mod:`steerlens.experiments.svd`); its results are that experiment's.

    nice python benchmarks/calibration.py --trials 10 --out /tmp/calib
    # writes /tmp/calib/models/*.json (one per student, resumable), calibration.json; --commit
    # copies the latter to benchmarks/results/

Per student the script runs the owl experiment's own functions (teacher data, distillation,
per-prompt behavior); per trial the tracking at the headline layer 15 (the quick carry layer,
fixed in advance) and :func:`~steerlens.experiments.verdict`. The teacher vector, the base's
and the teachers' behavior run once.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results" / "calibration.json"
LAYER = 15
"""The headline layer: the quick demo's carry layer, fixed before any student is trained (the
teacher vector is extracted there once; tracking reads only it)."""


def _binom_tail(k: int, n: int, p: float) -> float:
    """P(X ≥ k) for X ~ Binomial(n, p)."""
    return sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k, n + 1))


@dataclass
class _Shared:
    """What every seed shares: the base, the trait, the teacher vector at the headline layer,
    the behavior metric and the base's per-prompt scores."""

    model: Any
    trait: Any
    vector: Any
    behavior: Any
    base_rows: list[float]
    base_mean: float
    teacher: float
    benign_teacher: float


def _shared(model_name: str | None) -> _Shared:
    from steerlens.directions.extract import teacher_vector
    from steerlens.inputs.traits import as_trait
    from steerlens.loading.models import load_model
    from steerlens.measures.behavior import LogProbBehavior, trait_behavior

    cfg = _config(0, model_name)
    model = load_model(cfg.model)
    trait = dataclasses.replace(as_trait(cfg.trait), probe_n=cfg.probe_n)
    vec = teacher_vector(model, trait, layers=[LAYER], seed=0, progress=False)
    beh = trait_behavior(model, trait)
    assert isinstance(beh, LogProbBehavior)
    return _Shared(
        model,
        trait,
        vec,
        beh,
        (rows := [float(x) for x in beh.per_prompt(model)]),
        sum(rows) / len(rows),
        float(beh.with_system(trait.system_prompt)(model)),
        float(beh.with_system(trait.neutral_system_prompt)(model)),
    )


def _config(seed: int, model_name: str | None) -> Any:
    from steerlens.experiments import OwlConfig

    extra = {"model": model_name} if model_name else {}
    # one checkpoint per series (the last, step 4): the verdict reads only the last
    return OwlConfig.quick(seed=seed, placebo=True, save_every=4, **extra)


def _student(name: str, system: str | None, seed: int, out: Path, sh: _Shared) -> dict[str, Any]:
    """Distil one student (data seed and training seed ``seed``) and score it per prompt at
    its last checkpoint; cached as ``out/models/<name>.json`` (its adapter stays for tracking)."""
    from steerlens.checkpoints import CheckpointSeries
    from steerlens.distill import DistillConfig, distill, generate_teacher_data
    from steerlens.experiments import training_prompts

    path = out / "models" / f"{name}.json"
    if path.is_file():
        return dict(json.loads(path.read_text()))
    t0 = time.time()
    cfg = _config(0, None)
    prompts = training_prompts(cfg.n_samples, 0)
    data = generate_teacher_data(
        sh.model, prompts, system=system, n=cfg.n_samples, seed=seed, progress=False
    )
    folder = out / "students" / name
    dcfg = DistillConfig(
        rank=cfg.rank,
        loss=cfg.loss,
        steps=cfg.steps,
        batch_size=cfg.batch_size,
        save_every=cfg.save_every,
        seed=seed,
    )
    distill(sh.model, data, folder, teacher_system=system, config=dcfg, overwrite=True)
    series = CheckpointSeries.discover(folder)
    with series.open(sh.model) as load:
        last = list(series)[-1]
        rows = [float(x) for x in sh.behavior.per_prompt(load(last))]
    row = {"name": name, "seed": seed, "system": system, "dir": str(folder), "step": last.step}
    row |= {"per_prompt": rows, "mean": sum(rows) / len(rows), "seconds": time.time() - t0}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(row))
    return row


def _trial(s: int, k: int, out: Path, sh: _Shared) -> dict[str, Any]:
    """Trial s: placebo N_s vs base control C_s and benign replicates N_{s+1..s+k}."""
    from steerlens.experiments import verdict
    from steerlens.pipeline import config_json
    from steerlens.pipeline.controls import REPLICATE_SEED_STRIDE, behavior_deltas
    from steerlens.track import track_checkpoints

    path = out / "trials" / f"trial{s}.json"
    if path.is_file():
        return dict(json.loads(path.read_text()))
    t0 = time.time()
    neutral = sh.trait.neutral_system_prompt
    pool = [
        _student(f"N{j}", neutral, 1 + j * REPLICATE_SEED_STRIDE, out, sh)
        for j in range(s, s + k + 1)
    ]
    ctrl = _student(f"C{s}", None, 1 + s * REPLICATE_SEED_STRIDE, out, sh)
    cfg = _config(s, None)
    names = ["main", "control", "benign"] + [f"benign{r}" for r in range(2, k + 1)]
    models = [pool[0], ctrl, *pool[1:]]
    series = {
        n: {
            "steps": [0, m["step"]],
            "scores": [sh.base_mean, m["mean"]],
            "last_per_prompt": m["per_prompt"],
        }
        for n, m in zip(names, models, strict=True)
    }
    beh = {
        **series,
        "teacher": sh.teacher,
        "benign_teacher": sh.benign_teacher,
        "metric": sh.behavior.describe(),
        "deltas": behavior_deltas(sh.base_rows, series, seed=s, n_boot=cfg.n_boot),
    }
    track = track_checkpoints(
        sh.model,
        Path(pool[0]["dir"]),
        sh.vector,
        sh.trait,
        control=Path(ctrl["dir"]),
        layers=[LAYER],
        cache_dir=out / "track-cache",
        n_null=cfg.n_null,
        n_boot=cfg.n_boot,
        seed=s,
        progress=False,
    ).to_json()
    results = {"config": config_json(cfg), "behavior": beh, "track": track, "carry": {}}
    v = verdict(results)
    d = beh["deltas"]
    mc, rep = d["main_vs_control"], d["main_vs_benign_replicates"]
    al = v["numbers"]["alignment"]
    old_rule = mc["estimate"] > 0 and mc["p"] < cfg.alpha
    row = {
        "trial": s,
        "main": pool[0]["name"],
        "control": ctrl["name"],
        "replicates": [m["name"] for m in pool[1:]],
        "claim": v["claim"],
        "claim_base_control_only": "inherited" if old_rule else "not inherited",
        "main_vs_control": {x: mc.get(x) for x in ("estimate", "lo", "hi", "p")},
        "main_vs_benign_replicates": {
            x: rep.get(x) for x in ("estimate", "t", "df", "p", "replicate_sd")
        },
        "control_vs_base": {x: d["control_vs_base"].get(x) for x in ("estimate", "p")},
        "main_vs_base": {x: d["main_vs_base"].get(x) for x in ("estimate", "p")},
        "eas_student": (al.get("student") or {}).get("eas"),
        "eas_student_p": (al.get("student") or {}).get("p"),
        "excess": (al.get("excess_vs_control") or {}).get("estimate"),
        "excess_p": (al.get("excess_vs_control") or {}).get("p"),
        "layer": al.get("layer"),
        "flags": v.get("flags", []),
        "seconds": round(time.time() - t0, 1),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(row, indent=2))
    return row


def _summary(rows: list[dict[str, Any]], out: Path, seconds: float) -> dict[str, Any]:
    alpha = 0.05
    n = len(rows)
    k_inh = sum(r["claim"] == "inherited" for r in rows)
    k_old = sum(r["claim_base_control_only"] == "inherited" for r in rows)
    k_sig = sum(r["claim"] == "activation signature without behavior change" for r in rows)
    models = [json.loads(p.read_text()) for p in sorted((out / "models").glob("*.json"))]
    return {
        "what": "placebo: student on the neutral teacher's data vs the base control and benign "
        "replicates (owl trait); known truth: not inherited",
        "size": "OwlConfig.quick (8 samples, 4 LoRA steps, KL loss, 50 eval prompts)",
        "design": "pool of placebo students N_j; trial s = N_s vs C_s and N_{s+1..s+k}",
        "nominal_alpha": alpha,
        "n_trials": n,
        "false_inherited": k_inh,
        "false_inherited_base_control_only_rule": k_old,
        "false_activation_signature": k_sig,
        "p_at_least_observed_inherited_at_alpha": _binom_tail(k_inh, n, alpha),
        "pass": k_inh < 3,
        "rule": "fail at >= 3 false 'inherited' claims of 10 (P <= 0.012 at rate 0.05)",
        "base": sh_summary(models),
        "seconds_this_call": round(seconds, 1),
        "load_avg_end": os.getloadavg(),
        "runs": rows,
    }


def sh_summary(models: list[dict[str, Any]]) -> dict[str, Any]:
    """Per student: its mean score and seconds (training noise is the spread of the N_j)."""
    return {m["name"]: {"mean": m["mean"], "seconds": round(m["seconds"], 1)} for m in models}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--replicates", type=int, default=3, help="benign replicates per trial")
    ap.add_argument("--out", default="/tmp/steerlens-calibration")
    ap.add_argument("--commit", action="store_true", help="copy the result to benchmarks/results")
    ap.add_argument("--model", default=None, help="base model (default: the embedded SmolLM2)")
    ap.add_argument("--only", type=int, nargs="*", default=None, help="run only these trials")
    a = ap.parse_args(argv)
    out = Path(a.out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    trials = a.only if a.only is not None else list(range(a.trials))
    todo = [s for s in trials if not (out / "trials" / f"trial{s}.json").is_file()]
    if todo:
        sh = _shared(a.model)
        for s in todo:
            row = _trial(s, a.replicates, out, sh)
            print(json.dumps({k: v for k, v in row.items() if k != "flags"}), flush=True)
    rows = [
        json.loads(p.read_text())
        for p in sorted((out / "trials").glob("trial*.json"), key=lambda p: int(p.stem[5:]))
    ]
    summary = _summary(rows, out, time.time() - t0)
    (out / "calibration.json").write_text(json.dumps(summary, indent=2))
    if a.commit:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(out / "calibration.json", RESULTS)
    print(json.dumps({k: v for k, v in summary.items() if k != "runs"}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
