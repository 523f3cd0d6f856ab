"""Does this machine multiply bfloat16 faster than float32? One process, interleaved rounds.

    python benchmarks/bf16_probe.py [--rounds 3] [--pairs 8] [--out benchmarks/results/bf16-probe.json]

Per round, in rotated order: a 2944×576 by 576×1536 matmul (GFLOP/s) in float32, bfloat16 and
float32 under bfloat16 autocast; the bare truncated forward to block 15 (the limit of
``worker.bare_truncated_forward``) of SmolLM2 in float32 and bfloat16 weights; and
``extract_vector`` at block 15 in float32, bfloat16 and autocast. Reports medians and the
medians of per-round ratios against float32, and what ``dtype="auto"`` picks here and why. A
light companion of ``run.py extraction`` (fresh process per measurement) for machines too loaded
for that run to finish.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def _time(fn: Callable[[], Any], n: int = 1) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n


def main(argv: list[str] | None = None) -> None:
    import run as bench
    import worker

    import steerlens as sl
    from steerlens.core.precision import native_bf16, resolve_precision

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--pairs", type=int, default=8)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "bf16-probe.json")
    args = ap.parse_args(argv)

    a, b = torch.randn(2944, 576), torch.randn(576, 1536)
    flops = 2 * 2944 * 576 * 1536
    models = {p: sl.load_model(bench.MODEL, dtype=p) for p in ("float32", "bfloat16", "autocast")}
    prompts = bench.make_prompts(models["float32"].tokenizer, args.pairs)
    pos, neg = prompts["pos"], prompts["neg"]
    tok = models["float32"].tokenizer

    def matmul(p: str) -> Callable[[], Any]:
        if p == "autocast":

            def f() -> Any:
                with torch.autocast("cpu", dtype=torch.bfloat16):
                    return a @ b

            return f
        x, y = a.to(getattr(torch, p)), b.to(getattr(torch, p))
        return lambda: x @ y

    def limit(p: str) -> Callable[[], Any]:
        m = models[p].model
        return lambda: worker.limit_extract(m, tok, pos, neg, [15], 32, "sorted")

    def extract(p: str) -> Callable[[], Any]:
        lm = models[p]
        return lambda: sl.extract_vector(
            lm, pos, neg, [15], method="mean", diagnostics=False, progress=False
        )

    cases = {
        **{f"matmul_{p}": matmul(p) for p in ("float32", "bfloat16", "autocast")},
        **{f"limit_{p}": limit(p) for p in ("float32", "bfloat16")},
        **{f"steerlens_{p}": extract(p) for p in ("float32", "bfloat16", "autocast")},
    }
    extract("float32")()  # warm-up: lazy imports, allocator
    rounds: list[dict[str, float]] = []
    load = [round(x, 2) for x in os.getloadavg()]
    for r in range(args.rounds):
        names = list(cases)
        k = r % len(names)
        times = {}
        for name in names[k:] + names[:k]:
            if r == 0 and name.startswith("matmul"):
                cases[name]()  # first call: oneDNN picks its kernel
            times[name] = _time(cases[name])
            print(f"round {r} {name}: {times[name]:.3f} s", file=sys.stderr, flush=True)
            partial = {
                "rounds": [*rounds, times],
                "loadavg": [round(x, 2) for x in os.getloadavg()],
            }
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.with_suffix(".partial.json").write_text(json.dumps(partial, indent=2))
        rounds.append(times)

    def med(xs: list[float]) -> float:
        return statistics.median(xs)

    summary: dict[str, Any] = {name: {"seconds": med([t[name] for t in rounds])} for name in cases}
    for p in ("float32", "bfloat16", "autocast"):
        summary[f"matmul_{p}"]["gflops"] = flops / summary[f"matmul_{p}"]["seconds"] / 1e9
    for group in ("matmul", "limit", "steerlens"):
        for name in cases:
            if name.startswith(group + "_"):
                summary[name]["speedup_over_float32"] = med(
                    [t[f"{group}_float32"] / t[name] for t in rounds]
                )
    summary["steerlens_bfloat16"]["vs_limit_float32"] = med(
        [t["limit_float32"] / t["steerlens_bfloat16"] for t in rounds]
    )
    summary["steerlens_bfloat16"]["vs_limit_bfloat16"] = med(
        [t["limit_bfloat16"] / t["steerlens_bfloat16"] for t in rounds]
    )
    ok, why = native_bf16("cpu")
    rec = {
        "benchmark": "bf16-probe",
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": bench.machine_info(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "native_bf16": ok,
        "reason": why,
        "auto_picks": resolve_precision("auto").name,
        "threads": torch.get_num_threads(),
        "pairs": args.pairs,
        "rounds": rounds,
        "summary": summary,
        "loadavg_start": load,
        "loadavg_end": [round(x, 2) for x in os.getloadavg()],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rec, indent=2) + "\n")
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
