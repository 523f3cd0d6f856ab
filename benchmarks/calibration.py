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
    # writes /tmp/calib/calibration.json; --commit copies it to benchmarks/results/

The quick size (``OwlConfig.quick``: 8 samples, 4 LoRA steps, 16 probe prompts, 50 eval
prompts) is as small as keeps every stage and every test of the verdict running.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results" / "calibration.json"


def _binom_tail(k: int, n: int, p: float) -> float:
    """P(X ≥ k) for X ~ Binomial(n, p)."""
    return sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k, n + 1))


def _one_seed(seed: int, out: Path, overrides: dict[str, Any]) -> dict[str, Any]:
    from steerlens.experiments import OwlConfig, run_owl

    cfg = OwlConfig.quick(seed=seed, placebo=True, **overrides)
    t0 = time.time()
    res = run_owl(cfg, out / f"seed{seed}", progress=False, log=lambda _m: None)
    v = res["verdict"]
    nums = v["numbers"]
    mc = (nums.get("behavior") or {}).get("main_vs_control") or {}
    st = (nums.get("alignment") or {}).get("student") or {}
    ex = (nums.get("alignment") or {}).get("excess_vs_control") or {}
    return {
        "seed": seed,
        "claim": v["claim"],
        "behavior_main_vs_control": {k: mc.get(k) for k in ("estimate", "lo", "hi", "p")},
        "eas_student_p": st.get("p"),
        "excess_p": ex.get("p"),
        "layer": (nums.get("alignment") or {}).get("layer"),
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
        "seconds_total": round(seconds, 1),
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
    overrides = {"model": a.model} if a.model else {}
    t0 = time.time()
    rows: list[dict[str, Any]] = []
    for seed in range(a.seeds):
        rows.append(_one_seed(seed, out, overrides))
        print(json.dumps(rows[-1]), flush=True)
        summary = _summary(rows, time.time() - t0)
        (out / "calibration.json").write_text(json.dumps(summary, indent=2))
        if a.commit:
            RESULTS.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(out / "calibration.json", RESULTS)
    print(json.dumps({k: v for k, v in summary.items() if k != "runs"}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
