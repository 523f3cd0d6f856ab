"""End-to-end calibration of the owl experiment's verdict on known truth (issue 12).

**Negative control (placebo)**: the student is distilled on the *neutral* teacher's numbers
(``OwlConfig(placebo=True)``) and compared with the base control (the base's numbers), so the
student cannot have inherited the owl trait. Over ``--seeds`` seeds at the quick size, count how
often the verdict claims "inherited" (and, separately, an "activation signature"). Each claim is
a test at level α (``OwlConfig.alpha``, default 0.05), so the expected false-claim rate is at
most α; with 10 seeds only a gross miscalibration is visible (P(≥ 2 false claims | rate 0.05)
≈ 0.09, P(≥ 3) ≈ 0.012: we call the test failed at ≥ 3).

**Positive control** (a steered teacher whose trait is a vector by construction): needs
``steerlens.teachers`` (issue 13). ``--positive`` says so and exits until that package lands;
the hook is :func:`steerlens.experiments.controls.series_plan` (the main series' data source).

    nice python benchmarks/calibration.py --seeds 10 --out /tmp/calib
    # writes /tmp/calib/seed<k>.json and calibration.json; --commit copies the latter to
    # benchmarks/results/; seeds already in --out are not rerun. In parallel:
    #   nice python benchmarks/calibration.py --out /tmp/calib --only 0 1 2 &  (… --only 3 4 5 …)

The quick size (``OwlConfig.quick``: 8 samples, 4 LoRA steps, 16 probe prompts, 50 eval
prompts) is as small as keeps every test of the verdict running. Per seed the script runs the
owl experiment's own stage functions (teacher data, distillation of both series, per-prompt
behavior and deltas, tracking, :func:`~steerlens.experiments.verdict`); what does not depend on
the seed's students runs once: the teacher vector (at the headline layer 15, the quick carry
layer, fixed in advance), the base's and the teachers' behavior. The carry test and screening do
not enter the claim and are skipped.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shutil
import sys
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
    teacher: float
    benign_teacher: float


def _shared(model_name: str | None) -> _Shared:
    from steerlens.behavior import trait_behavior
    from steerlens.extract import teacher_vector
    from steerlens.models import load_model
    from steerlens.traits import as_trait

    cfg = _config(0, model_name)
    model = load_model(cfg.model)
    trait = dataclasses.replace(as_trait(cfg.trait), probe_n=cfg.probe_n)
    vec = teacher_vector(model, trait, layers=[LAYER], seed=0, progress=False)
    beh = trait_behavior(model, trait)
    return _Shared(
        model,
        trait,
        vec,
        beh,
        [float(x) for x in beh.per_prompt(model)],
        float(beh.with_system(trait.system_prompt)(model)),
        float(beh.with_system(trait.neutral_system_prompt)(model)),
    )


def _config(seed: int, model_name: str | None) -> Any:
    from steerlens.experiments import OwlConfig

    extra = {"model": model_name} if model_name else {}
    # one checkpoint per series (the last, step 4): the verdict reads only the last
    return OwlConfig.quick(seed=seed, placebo=True, save_every=4, **extra)


def _one_seed(seed: int, out: Path, sh: _Shared, model_name: str | None) -> dict[str, Any]:
    """The owl experiment's data, distillation, behavior, tracking and verdict stages for one
    seed of the placebo (the same functions ``run_owl`` calls; no carry test, no screening)."""
    from steerlens.distill import DistillConfig, distill, generate_teacher_data
    from steerlens.experiments import training_prompts, verdict
    from steerlens.experiments.controls import behavior_deltas, series_plan, series_scores
    from steerlens.track import track_checkpoints

    cfg = _config(seed, model_name)
    t0 = time.time()
    root = out / f"seed{seed}"
    prompts = training_prompts(cfg.n_samples, seed)
    dcfg = DistillConfig(
        rank=cfg.rank,
        loss=cfg.loss,
        steps=cfg.steps,
        batch_size=cfg.batch_size,
        save_every=cfg.save_every,
        seed=seed,
    )
    dirs = {}
    for sp in series_plan(sh.trait, benign=False, placebo=True):
        data = generate_teacher_data(
            sh.model, prompts, system=sp.system, n=cfg.n_samples, seed=seed, progress=False
        )
        dirs[sp.name] = root / sp.name
        distill(
            sh.model,
            data,
            dirs[sp.name],
            teacher_system=sp.system,
            config=dcfg,
            overwrite=True,
            progress=False,
        )
    series = {k: series_scores(sh.model, d, sh.behavior) for k, d in dirs.items()}
    beh = {
        **series,
        "teacher": sh.teacher,
        "benign_teacher": sh.benign_teacher,
        "metric": sh.behavior.describe(),
        "deltas": behavior_deltas(sh.base_rows, series, seed=seed, n_boot=cfg.n_boot),
    }
    track = track_checkpoints(
        sh.model,
        dirs["main"],
        sh.vector,
        sh.trait,
        control=dirs["control"],
        layers=[LAYER],
        cache_dir=out / "track-cache",
        n_null=cfg.n_null,
        n_boot=cfg.n_boot,
        seed=seed,
        progress=False,
    ).to_json()
    results = {"config": cfg.to_json(), "behavior": beh, "track": track, "carry": {}}
    v = verdict(results)
    nums = v["numbers"]
    mc = nums["behavior"].get("main_vs_control") or {}
    al = nums["alignment"]
    shutil.rmtree(root, ignore_errors=True)
    return {
        "seed": seed,
        "claim": v["claim"],
        "behavior_main_vs_control": {k: mc.get(k) for k in ("estimate", "lo", "hi", "p")},
        "eas_student": (al.get("student") or {}).get("eas"),
        "eas_student_p": (al.get("student") or {}).get("p"),
        "excess": (al.get("excess_vs_control") or {}).get("estimate"),
        "excess_p": (al.get("excess_vs_control") or {}).get("p"),
        "layer": al.get("layer"),
        "flags": v.get("flags", []),
        "seconds": round(time.time() - t0, 1),
    }


def _summary(rows: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    alpha = 0.05
    n = len(rows)
    k_inh = sum(r["claim"] == "inherited" for r in rows)
    k_sig = sum(r["claim"] == "activation signature without behavior change" for r in rows)
    return {
        "what": "placebo: student on the neutral teacher's data vs the base control (owl trait)",
        "size": "OwlConfig.quick (8 samples, 4 LoRA steps, 16 probe prompts, 50 eval prompts)",
        "nominal_alpha": alpha,
        "n_seeds": n,
        "false_inherited": k_inh,
        "false_activation_signature": k_sig,
        "p_at_least_observed_inherited_at_alpha": _binom_tail(k_inh, n, alpha),
        "pass": k_inh < 3,
        "rule": "fail at >= 3 false 'inherited' claims of 10 (P <= 0.012 at rate 0.05)",
        "seconds_per_seed": [r["seconds"] for r in rows],
        "seconds_this_call": round(seconds, 1),
        "load_avg_end": os.getloadavg(),
        "runs": rows,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--out", default="/tmp/steerlens-calibration")
    ap.add_argument("--commit", action="store_true", help="copy the result to benchmarks/results")
    ap.add_argument("--positive", action="store_true", help="the steered-teacher positive control")
    ap.add_argument("--model", default=None, help="base model (default: the embedded SmolLM2)")
    ap.add_argument(
        "--only",
        type=int,
        nargs="*",
        default=None,
        help="run only these seeds (parallel workers share --out; every run collects all "
        "seed*.json there into calibration.json)",
    )
    a = ap.parse_args(argv)
    if a.positive:
        try:
            import steerlens.teachers  # noqa: F401
        except ImportError:
            print(
                "the positive control needs steerlens.teachers (issue 13: a steered teacher); "
                "it is not installed in this tree yet",
                file=sys.stderr,
            )
            return 2
        print("steerlens.teachers is present: wire it into series_plan first", file=sys.stderr)
        return 2
    out = Path(a.out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    seeds = a.only if a.only else list(range(a.seeds))
    todo = [k for k in seeds if not (out / f"seed{k}.json").is_file()]
    if todo:
        sh = _shared(a.model)
        for seed in todo:
            row = _one_seed(seed, out, sh, a.model)
            (out / f"seed{seed}.json").write_text(json.dumps(row, indent=2))
            print(json.dumps(row), flush=True)
    rows = [
        json.loads(p.read_text())
        for p in sorted(out.glob("seed*.json"), key=lambda p: int(p.stem[4:]))
    ]
    summary = _summary(rows, time.time() - t0)
    (out / "calibration.json").write_text(json.dumps(summary, indent=2))
    if a.commit:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(out / "calibration.json", RESULTS)
    print(json.dumps({k: v for k, v in summary.items() if k != "runs"}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
