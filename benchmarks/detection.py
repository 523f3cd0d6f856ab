"""Detection power on known truth (issue 31): the ``detect`` experiment's bank, resumable per
student, then the classifier table as JSON, Markdown and HTML.

    nice python benchmarks/detection.py --out ~/steerlens-runs/detect            # default size
    nice python benchmarks/detection.py --out … --seeds 4 --sft-seeds 3 --losses kl  # smaller
    python benchmarks/detection.py --out … --commit   # copy detection.{json,md,html} to
                                                      # benchmarks/results/ and the summary the
                                                      # verdicts quote to steerlens/pipeline/

Stop it at any time: a rerun with the same options reuses every finished student. The
measurements are one process on the machine it runs on; the JSON records the CPU, the precision
the model ran in and the load average at the end (run it alone: other heavy jobs on 2 cores
slow it several times over).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def markdown(res: Any, bank: dict[str, Any]) -> str:
    """The classifier table and the power curve as Markdown."""
    from steerlens.pipeline.power import fraction

    lines = [
        "# Detection power on known truth",
        "",
        f"Bank: {bank['what']}. Machine: {bank['cpu']}, {bank['precision']}; "
        f"{bank['seconds']:.0f} s in all, load average at the end {bank['load_end']}.",
        "",
        res.headline(),
        "",
        "| detector | loss | neg / pos pairs | AUC [95% CI] | held-out FPR / TPR at τ (FPR≤0.05 on "
        "the rule half) | held-out FPR / TPR at p<α |",
        "|---|---|---|---|---|---|",
    ]
    for r in res.rows:
        lines.append(
            f"| {r.detector} | {r.loss} | {r.n_neg} / {r.n_pos} | {r.auc:.2f} [{r.auc_lo:.2f}, "
            f"{r.auc_hi:.2f}] | {fraction(r.heldout_fpr)} / {fraction(r.heldout_tpr)} | "
            f"{fraction(r.alpha_fpr)} / {fraction(r.alpha_tpr)} |"
        )
    cells = sorted({c for r in res.rows for c in r.tpr_by_cell})
    if not cells:
        lines += ["", "No held-out positive yet: no power curve (the bank was stopped early).", ""]
        lines += _pairs_table(res)
        return "\n".join(lines)
    lines += ["", "Held-out TPR at p<α per positive cell (power curve over steered α = m·α*):", ""]
    lines.append("| detector | loss | " + " | ".join(cells) + " |")
    lines.append("|---|---|" + "---|" * len(cells))
    for r in res.rows:
        row = [fraction(r.tpr_by_cell[c]) if c in r.tpr_by_cell else "–" for c in cells]
        lines.append(f"| {r.detector} | {r.loss} | " + " | ".join(row) + " |")
    lines += ["", f"Best detector (chosen on the rule half): {res.best}", ""]
    lines += _pairs_table(res)
    return "\n".join(lines)


def _pairs_table(res: Any) -> list[str]:
    """Every student read against its own trait (negatives: against the bank's trait): each
    detector's score and p, so a partial bank still shows which signal sees what."""
    dets = [r.detector for r in res.rows if r.loss == "kl"] or [r.detector for r in res.rows]
    loss = "kl" if any(r.loss == "kl" for r in res.rows) else (res.rows[0].loss if res.rows else "")
    by = {d: res.scored.get(f"{d}/{loss}", []) for d in dets}
    if not dets or not by[dets[0]]:
        return []
    trait = next((x.trait for x in by[dets[0]] if x.positive), by[dets[0]][0].trait)
    keys = [(x.cell, x.seed) for x in by[dets[0]] if x.trait == trait]
    out = [
        f"Every {loss} student read against `{trait}`: score (p); p < {res.level:g} in bold. "
        "The reference set of each is the base students (the student itself left out).",
        "",
        "| student | label | " + " | ".join(dets) + " |",
        "|---|---|" + "---|" * len(dets),
    ]
    for cell, seed in keys:
        cells = []
        for d in dets:
            x = next(y for y in by[d] if (y.cell, y.seed, y.trait) == (cell, seed, trait))
            txt = f"{x.score:+.3g} ({x.p:.2g})"
            cells.append(f"**{txt}**" if x.p < res.level else txt)
        pos = next(
            y.positive for y in by[dets[0]] if (y.cell, y.seed, y.trait) == (cell, seed, trait)
        )
        out.append(f"| {cell}-s{seed} | {'+' if pos else '−'} | " + " | ".join(cells) + " |")
    return [*out, ""]


def _student_seconds(out: Path) -> dict[str, float]:
    """Median, min and max of the training seconds the finished students' distill.json
    record (their own clock; data generation and reading not included)."""
    import statistics

    secs = [
        float(json.loads(p.read_text()).get("train_seconds", "nan"))
        for p in out.glob("students/*/*/distill.json")
    ]
    if not secs:
        return {}
    return {"median": statistics.median(secs), "min": min(secs), "max": max(secs), "n": len(secs)}


def main(argv: list[str] | None = None) -> int:
    from steerlens.experiments import get
    from steerlens.experiments.detect import classify_finished, todo_order
    from steerlens.loading.models import load_model
    from steerlens.pipeline import config_json
    from steerlens.pipeline.power import POWER_FILE, DetectionResult

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="~/steerlens-runs/detect")
    ap.add_argument("--quick", action="store_true", help="the smoke-test bank")
    ap.add_argument("--seeds", type=int, default=None)
    ap.add_argument("--neg-seeds", type=int, default=None)
    ap.add_argument("--sft-seeds", type=int, default=None)
    ap.add_argument("--sft-neg-seeds", type=int, default=None)
    ap.add_argument("--losses", nargs="*", default=None)
    ap.add_argument("--no-student-carry", action="store_true", help="--carry-seeds 0")
    ap.add_argument("--carry-seeds", type=int, default=None, help="seeds with a student carry")
    ap.add_argument("--screen-max", type=int, default=None)
    ap.add_argument("--commit", action="store_true")
    ap.add_argument(
        "--classify-only",
        action="store_true",
        help="classify the students the bank in --out has finished (a stopped run); train none",
    )
    a = ap.parse_args(argv)
    over: dict[str, Any] = {}
    for name in ("seeds", "neg_seeds", "sft_seeds", "sft_neg_seeds"):
        if getattr(a, name) is not None:
            over[name] = getattr(a, name)
    if a.losses:
        over["losses"] = tuple(a.losses)
    if a.no_student_carry:
        over["carry_seeds"] = 0
    if a.carry_seeds is not None:
        over["carry_seeds"] = a.carry_seeds
    if a.screen_max is not None:
        over["screen_max"] = a.screen_max
    exp = get("detect")
    cfg = exp.make_config(quick=a.quick, device="cpu", **over)
    out = Path(a.out).expanduser()
    t0 = time.time()
    if a.classify_only:
        det = classify_finished(cfg, out)
        (out / "detection.html").write_text(det.html_page())
    else:
        res = exp.execute(cfg, out, progress=True)
        det = DetectionResult.from_json(res["detection"])
    precision = load_model(cfg.model, dtype=cfg.dtype).compute_precision.name
    sizes = {k: v for k, v in det.n_students.items()}
    planned = len(todo_order(cfg))
    done = sum(sizes.values())
    bank = {
        "what": f"{done} students{'' if done == planned else f' of {planned} planned (stopped)'}"
        f" ({sizes}); {cfg.n_samples} samples, "
        f"{cfg.steps} (kl) / {cfg.sft_steps} (sft) LoRA steps of batch {cfg.batch_size}, "
        f"{cfg.model}, ℓ*={det.layer}, α*={det.alpha_star:g}",
        "config": config_json(cfg),
        "cpu": _cpu(),
        "precision": precision,
        "seconds": round(time.time() - t0, 1),
        "seconds_per_student": _student_seconds(out),
        "load_end": [round(x, 2) for x in os.getloadavg()],
        "date": time.strftime("%Y-%m-%d"),
    }
    full = {**det.to_json(), "bank": bank}
    (out / "detection.json").write_text(json.dumps(full, indent=1))
    (out / "detection.md").write_text(markdown(det, bank))
    print(markdown(det, bank))
    if a.commit:
        RESULTS.mkdir(exist_ok=True)
        shutil.copy(out / "detection.json", RESULTS / "detection.json")
        shutil.copy(out / "detection.md", RESULTS / "detection.md")
        shutil.copy(out / "detection.html", RESULTS / "detection.html")
        summary = {k: v for k, v in full.items() if k != "scored"}
        POWER_FILE.write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
