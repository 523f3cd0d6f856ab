"""Cost of the carry test's random-direction null: 19 draws (the smallest null that can reach
empirical p ≤ 0.05) against the 2 the demo used before, side by side (issue 12).

One process, one model load; the two settings alternate (2, 19, 19, 2, …) so the machine's
drift hits both; the figure that means anything is the median of per-repeat ratios
seconds(19) / seconds(2). The grid is the owl teacher vector of SmolLM2-135M-Instruct at the
quick demo's cell (layer 15, α = 4) on the first 8 eval prompts and the 6 off-target prompts,
with necessity; every condition (the vector or one random draw, at one cell) is one scored
forward of those 14 prompts, so the expected ratio is the condition count (1 + n) ratio,
20 / 3 ≈ 6.7, unless conditions are batched.

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
    from steerlens.behavior import trait_behavior
    from steerlens.extract import teacher_vector
    from steerlens.models import load_model
    from steerlens.traits import as_trait

    trait = dataclasses.replace(as_trait("owl"), probe_n=16)
    if tiny:
        from steerlens.testing import tiny_model

        model = tiny_model()
        layers = [1]
    else:
        model = load_model("smollm2-135m-instruct")
        layers = [15]
    vec = teacher_vector(model, trait, layers=layers, seed=0, progress=False)
    beh = trait_behavior(model, trait)
    metric = dataclasses.replace(beh, prompts=beh.prompts[:8])
    return model, trait, vec, metric, layers


def main(argv: list[str] | None = None) -> int:
    from steerlens.carry import carry_test

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--tiny", action="store_true")
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    model, trait, vec, metric, layers = _setup(a.tiny)

    def timed(n_random: int) -> tuple[float, Any]:
        t0 = time.perf_counter()
        r = carry_test(
            model,
            vec,
            trait,
            metric=metric,
            layers=layers,
            alphas=[4.0],
            n_random=n_random,
            seed=0,
            progress=False,
        )
        return time.perf_counter() - t0, r

    timed(2)  # warm-up
    runs: list[dict[str, Any]] = []
    for rep in range(a.repeats):
        order = (2, 19) if rep % 2 == 0 else (19, 2)
        row: dict[str, Any] = {"repeat": rep, "load_start": os.getloadavg()[0]}
        for n in order:
            sec, r = timed(n)
            cp = r.clean_peak
            row[f"s_{n}"] = round(sec, 2)
            row[f"clean_peak_p_{n}"] = None if cp is None or cp.vs_null is None else cp.vs_null.p
            row[f"level_{n}"] = str(r.level)
        row["ratio"] = row["s_19"] / row["s_2"]
        runs.append(row)
        print(json.dumps(row), flush=True)
    out = {
        "bench": "carry-nulls",
        "model": "tiny" if a.tiny else "smollm2-135m-instruct",
        "grid": {"layers": layers, "alphas": [4.0], "eval_prompts": 8, "offtarget": 6},
        "median_seconds_2": statistics.median(r["s_2"] for r in runs),
        "median_seconds_19": statistics.median(r["s_19"] for r in runs),
        "median_ratio_19_over_2": statistics.median(r["ratio"] for r in runs),
        "target_ratio": 2.0,
        "condition_ratio": 20 / 3,
        "note": "conditions run one scored forward each (not batched across random directions)",
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
