"""Cost of the carry test's random-direction null: 19 draws (the smallest null that can reach
empirical p ≤ 0.05) against the 2 the demo used before, side by side (issue 12).

Settings: ``loop-2`` (before: one ``steer`` block and one scored forward per condition, 2
draws), ``batched-19`` (now: per grid layer the blocks below it run once and every condition of the
layer, the vector at each α and the 19 draws at each α, runs as row groups of batched forwards
over the blocks above, :mod:`steerlens.carry.batched`; necessity's joint ablation over the grid
layers runs the same way from the lowest grid layer up) and
``loop-19`` (19 draws the old way). One process, one model load; the settings rotate order each
repeat so the machine's drift hits all; the figures that mean anything are the medians of
per-repeat ratios seconds(X) / seconds(loop-2) (target: batched-19 ≤ 2). The grid is the
default demo's: the owl teacher vector of SmolLM2-135M-Instruct at the layers 3, 9, 15, 21, 27
and α = 2, 4, 8, on the first 8 eval prompts and the 6 off-target prompts, with necessity. The
looped conditions' count ratio is (1 + 19)/(1 + 2) ≈ 6.7.

    nice python benchmarks/carry_nulls.py [--repeats 2] [--tiny]
    # writes benchmarks/results/carry-nulls.json (--tiny: a random tiny model, smoke only)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def _setup(tiny: bool) -> tuple[Any, Any, Any, Any, list[int]]:
    from steerlens.directions.extract import teacher_vector
    from steerlens.inputs.traits import as_trait
    from steerlens.loading.models import load_model
    from steerlens.measures.behavior import trait_behavior

    trait = dataclasses.replace(as_trait("owl"), probe_n=16)
    if tiny:
        from steerlens.testing import tiny_model

        model = tiny_model()
        layers = [1]
    else:
        model = load_model("smollm2-135m-instruct")
        layers = [3, 9, 15, 21, 27]
    vec = teacher_vector(model, trait, layers=layers, seed=0, progress=False)
    beh = trait_behavior(model, trait)
    metric = dataclasses.replace(beh, prompts=beh.prompts[:8])
    return model, trait, vec, metric, layers


def _close(a: Any, b: Any, tol: float = 1e-4) -> bool:
    """Whether two null-band JSON trees agree to ``tol`` (relative, floor 1e-6)."""
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k], tol) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(_close(x, y, tol) for x, y in zip(a, b, strict=True))
    if isinstance(a, float):
        return abs(a - b) <= tol * max(abs(a), abs(b), 1e-2)
    return bool(a == b)


def main(argv: list[str] | None = None) -> int:
    from steerlens.carry import carry_test

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--out", default=None)
    ap.add_argument("--skip-loop19", action="store_true", help="only loop-2 and batched-19")
    a = ap.parse_args(argv)
    model, trait, vec, metric, layers = _setup(a.tiny)

    from steerlens.carry.measure import Measure

    batched_many = Measure.many
    alphas = [4.0] if a.tiny else [2.0, 4.0, 8.0]

    def timed(setting: str) -> tuple[float, Any]:
        kind, n = setting.split("-")
        Measure.many = batched_many if kind == "batched" else (lambda *_a, **_k: None)  # type: ignore[method-assign]
        t0 = time.perf_counter()
        try:
            r = carry_test(
                model,
                vec,
                trait,
                metric=metric,
                layers=layers,
                alphas=alphas,
                n_random=int(n),
                seed=0,
                progress=False,
            )
        finally:
            Measure.many = batched_many  # type: ignore[method-assign]
        return time.perf_counter() - t0, r

    settings = ["loop-2", "batched-19", "loop-19"]
    if a.skip_loop19:
        settings.remove("loop-19")
    timed("loop-2")  # warm-up
    runs: list[dict[str, Any]] = []
    for rep in range(a.repeats):
        order = settings[rep % len(settings) :] + settings[: rep % len(settings)]
        row: dict[str, Any] = {"repeat": rep, "load_start": os.getloadavg()[0]}
        peaks = {}
        for setting in order:
            sec, r = timed(setting)
            cp = r.clean_peak
            row[f"s_{setting}"] = round(sec, 2)
            row[f"clean_peak_p_{setting}"] = (
                None if cp is None or cp.vs_null is None else cp.vs_null.p
            )
            row[f"level_{setting}"] = str(r.level)
            peaks[setting] = r.to_json()["null_sufficiency"]
        if "loop-19" in peaks:
            row["batched_equals_loop_19"] = json.dumps(peaks["loop-19"]) == json.dumps(
                peaks["batched-19"]
            ) or _close(peaks["loop-19"], peaks["batched-19"])
        for setting in settings[1:]:
            row[f"ratio_{setting}"] = row[f"s_{setting}"] / row["s_loop-2"]
        runs.append(row)
        print(json.dumps(row), flush=True)
    out = {
        "bench": "carry-nulls",
        "model": "tiny" if a.tiny else "smollm2-135m-instruct",
        "grid": {"layers": layers, "alphas": alphas, "eval_prompts": 8, "offtarget": 6},
        "median_seconds": {s: statistics.median(r[f"s_{s}"] for r in runs) for s in settings},
        "median_ratio_over_loop_2": {
            s: statistics.median(r[f"ratio_{s}"] for r in runs) for s in settings[1:]
        },
        "target_ratio_batched_19": 2.0,
        "condition_ratio_looped": 20 / 3,
        "torch_threads": __import__("torch").get_num_threads(),
        "runs": runs,
    }
    path = (
        Path(a.out)
        if a.out
        else RESULTS / ("carry-nulls-tiny.json" if a.tiny else "carry-nulls.json")
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    print(json.dumps({k: v for k, v in out.items() if k != "runs"}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
