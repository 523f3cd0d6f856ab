"""Fidelity of bfloat16 against float32, stage by stage, on the embedded SmolLM2 and the owl trait.

    python benchmarks/fidelity.py --demo DIR [--precisions float32 bfloat16]
                                  [--vector-precisions float32 bfloat16 autocast] [--out F]

``DIR`` is a finished float32 ``steerlens demo`` folder (its ``students/main`` and
``students/control`` series, its teacher data and ``results.json``). For each precision, in one
process, the same stages the demo runs, with the same settings:

- the teacher vector at every layer (``teacher_vector(..., layers="all")``): cosine with the
  float32 vector per layer (also for ``--vector-precisions``, e.g. autocast);
- the carry test of that vector (the demo's grid): S per cell, the clean peak and the level;
- the behavior score of the base, both teachers and every checkpoint of both series;
- tracking of both series against that vector: EAS and projection per checkpoint and layer,
  the excess alignment at the last checkpoint;
- a few LoRA steps of the student on the demo's teacher data (loss per step);
- the demo's verdict recomputed from these stages (the float32-trained series and teacher data
  are shared, so only the measuring stages change precision).

Writes ``benchmarks/results/fidelity.json`` and the table ``benchmarks/results/fidelity.md``
(``--report`` rewrites the table from the JSON). Differences are reported plainly, with the
float32 rerun as the control: it must reproduce the float32 demo's verdict.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
MODEL = "smollm2-135m-instruct"


#: ``--quick``: smaller stages for a loaded machine (fidelity is compared at equal settings)
QUICK: dict[str, Any] = {
    "probe_n": 16,
    "carry_layers": [22],
    "alphas": [4.0],
    "n_random": 1,
    "track_layers": [15, 22],
    "n_null": 200,
    "n_boot": 200,
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double().flatten(), b.double().flatten()
    return float(a @ b / (a.norm() * b.norm() + 1e-30))


def teacher_vectors(lm: Any, trait: Any, seed: int) -> tuple[Any, float]:
    from steerlens.directions.extract import teacher_vector

    t0 = time.perf_counter()
    vec = teacher_vector(lm, trait, layers="all", seed=seed, progress=False)
    return vec, time.perf_counter() - t0


def stages(lm: Any, trait: Any, vec: Any, demo: Path, cfg: dict[str, Any]) -> dict[str, Any]:
    """The demo's measuring stages at ``lm``'s precision (see the module doc)."""
    from steerlens.carry import carry_test
    from steerlens.measures.behavior import trait_behavior
    from steerlens.pipeline.stage import checkpoint_behavior
    from steerlens.track import track_checkpoints

    out: dict[str, Any] = {"seconds": {}}
    t0 = time.perf_counter()
    out["carry"] = carry_test(
        lm,
        vec,
        trait,
        layers=list(cfg["carry_layers"]) if cfg.get("carry_layers") else None,
        alphas=tuple(cfg["alphas"]),
        n_random=int(cfg["n_random"]),
        seed=int(cfg["seed"]),
        progress=False,
    ).to_json()
    out["seconds"]["carry"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    beh = trait_behavior(lm, trait)
    main_dir, ctrl_dir = demo / "students" / "main", demo / "students" / "control"
    out["behavior"] = {
        "main": checkpoint_behavior(lm, main_dir, beh),
        "control": checkpoint_behavior(lm, ctrl_dir, beh),
        "teacher": float(beh.with_system(trait.system_prompt)(lm)),
        "benign_teacher": float(beh.with_system(trait.neutral_system_prompt)(lm)),
        "metric": beh.describe(),
    }
    out["seconds"]["behavior"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="steerlens-fid-") as cache:
        out["track"] = track_checkpoints(
            lm,
            main_dir,
            vec,
            trait,
            control=ctrl_dir,
            layers=cfg.get("track_layers"),
            cache_dir=cache,
            n_null=int(cfg["n_null"]),
            n_boot=int(cfg["n_boot"]),
            seed=int(cfg["seed"]),
            progress=False,
        ).to_json()
    out["seconds"]["track"] = time.perf_counter() - t0
    return out


def lora_steps(lm: Any, demo: Path, cfg: dict[str, Any], steps: int) -> dict[str, Any]:
    """``steps`` LoRA steps of the demo's student on its teacher data: losses and seconds."""
    from steerlens.distill import DistillConfig, TeacherData, distill

    data = TeacherData.load(demo / "data" / "teacher.jsonl")
    dcfg = DistillConfig(
        rank=int(cfg["rank"]),
        layers=tuple(cfg["lora_layers"]) if cfg.get("lora_layers") else None,
        loss=str(cfg["loss"]),
        steps=steps,
        batch_size=int(cfg["batch_size"]),
        save_every=steps,
        seed=int(cfg["seed"]),
    )
    with tempfile.TemporaryDirectory(prefix="steerlens-fid-lora-") as out:
        t0 = time.perf_counter()
        res = distill(lm, data, Path(out) / "s", config=dcfg, progress=False)
        secs = time.perf_counter() - t0
        from safetensors.torch import load_file

        weights = load_file(str(res.final / "adapter_model.safetensors"))
    return {
        "losses": res.losses,
        "seconds": secs,
        "train_seconds": res.record.get("train_seconds"),
        "fast_path": res.record.get("fast_path"),
        "adapter": {k: v.float() for k, v in weights.items()},
    }


def _track_arrays(track: dict[str, Any], series: str, key: str) -> np.ndarray:
    return np.asarray(track["series"][series][key], dtype=float)


def compare(ref: dict[str, Any], got: dict[str, Any]) -> dict[str, Any]:
    """Differences of ``got`` against the float32 ``ref`` for every measured quantity."""
    out: dict[str, Any] = {}
    for series in ("main", "control"):
        for key in ("eas", "proj"):
            a, b = (
                _track_arrays(ref["track"], series, key),
                _track_arrays(got["track"], series, key),
            )
            d = np.abs(a - b)
            out[f"{series}_{key}_max_abs_diff"] = float(np.nanmax(d))
            out[f"{series}_{key}_median_abs_diff"] = float(np.nanmedian(d))
            out[f"{series}_{key}_ref_median_abs"] = float(np.nanmedian(np.abs(a)))
    ex_r, ex_g = ref["track"].get("excess") or {}, got["track"].get("excess") or {}
    out["excess"] = {k: [ex_r.get(k), ex_g.get(k)] for k in ("eas_diff", "lo", "hi") if k in ex_r}
    b_r, b_g = ref["behavior"], got["behavior"]
    diffs = [
        abs(x - y)
        for s in ("main", "control")
        for x, y in zip(b_r[s]["scores"], b_g[s]["scores"], strict=True)
    ]
    diffs += [abs(b_r[k] - b_g[k]) for k in ("teacher", "benign_teacher")]
    out["behavior_max_abs_diff_nats"] = max(diffs)
    delta = [
        (b_g[s]["scores"][-1] - b_g[s]["scores"][0]) - (b_r[s]["scores"][-1] - b_r[s]["scores"][0])
        for s in ("main", "control")
    ]
    out["behavior_delta_diff_nats"] = {"main": delta[0], "control": delta[1]}
    c_r, c_g = ref["carry"], got["carry"]
    s_d = [
        abs(x - y)
        for layer in c_r["sufficiency"]
        for x, y in zip(c_r["sufficiency"][layer], c_g["sufficiency"][layer], strict=True)
    ]
    out["carry_S_max_abs_diff"] = max(s_d)
    out["carry_level"] = [c_r["level"], c_g["level"]]
    out["carry_clean_peak"] = [c_r.get("clean_peak"), c_g.get("clean_peak")]
    out["carry_b_base_teacher"] = [
        [c_r["b_base"], c_r["b_teacher"]],
        [c_g["b_base"], c_g["b_teacher"]],
    ]
    return out


def run(args: argparse.Namespace, save: Any) -> dict[str, Any]:
    import steerlens as sl
    from steerlens.experiments.verdict import verdict
    from steerlens.inputs.traits import as_trait
    from steerlens.loading.models import describe

    demo = Path(args.demo).expanduser()
    demo_results = json.loads((demo / "results.json").read_text())
    cfg = {**demo_results["config"], **(QUICK if args.quick else {})}
    trait = as_trait(cfg["trait"])
    if cfg.get("probe_n") is not None:
        import dataclasses

        trait = dataclasses.replace(trait, probe_n=cfg["probe_n"])
    rec: dict[str, Any] = {
        "benchmark": "fidelity",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "demo": str(demo),
        "demo_config": demo_results["config"],
        "settings": cfg,
        "quick": bool(args.quick),
        "demo_verdict": demo_results["verdict"],
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "precisions": {},
    }
    vectors: dict[str, Any] = {}
    measured: dict[str, Any] = {}
    models: dict[str, Any] = {}
    # vectors first (every precision), then the later stages: a run cut short keeps the most
    for prec in dict.fromkeys(["float32", *args.vector_precisions, *args.precisions]):
        log(f"{prec}: load")
        lm = sl.load_model(MODEL, dtype=prec)
        vec, secs = teacher_vectors(lm, trait, int(cfg["seed"]))
        vectors[prec] = vec
        cos = {layer: _cos(vec[layer], vectors["float32"][layer]) for layer in vec.layers}
        rec["precisions"][prec] = {
            "model": describe(lm),
            "seconds": {"teacher_vector": secs},
            "vector_cosine": cos,
            "vector_cosine_min": min(cos.values()),
        }
        log(f"{prec}: teacher vector {secs:.1f}s, min cosine {min(cos.values()):.5f}")
        if prec in args.precisions:
            models[prec] = lm
        save(rec)
    for prec in args.precisions:
        lm, vec, entry = models.pop(prec), vectors[prec], rec["precisions"][prec]
        got = stages(lm, trait, vec, demo, cfg)
        entry["seconds"].update(got.pop("seconds"))
        if args.lora_steps:
            lora = lora_steps(lm, demo, cfg, args.lora_steps)
            entry["lora"] = {k: v for k, v in lora.items() if k != "adapter"}
            got["adapter"] = lora["adapter"]
        results = {**demo_results, **got, "teacher_vector": vec.to_json()}
        got["verdict"] = verdict(results)
        entry["verdict"] = got["verdict"]
        measured[prec] = got
        log(f"{prec}: stages {entry['seconds']}")
        del lm
        if prec != "float32" and "float32" in measured:
            entry["vs_float32"] = _versus(rec, measured, prec)
        if prec == "float32":
            v32 = got["verdict"]
            rec["float32_rerun_reproduces_demo"] = (
                v32["headline"] == demo_results["verdict"]["headline"]
                and v32["strength"] == demo_results["verdict"]["strength"]
            )
        rec["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
        save(rec)
    return rec


def _versus(rec: dict[str, Any], measured: dict[str, Any], prec: str) -> dict[str, Any]:
    got, ref = measured[prec], measured["float32"]
    diff = compare(ref, got)
    if "adapter" in got and "adapter" in ref:
        diff["lora_adapter_cosine_min"] = min(
            _cos(got["adapter"][k], v) for k, v in ref["adapter"].items()
        )
        l_r = rec["precisions"]["float32"]["lora"]["losses"]
        l_g = rec["precisions"][prec]["lora"]["losses"]
        diff["lora_loss_max_rel_diff"] = max(
            abs(x - y) / abs(x) for x, y in zip(l_r, l_g, strict=True)
        )
    diff["verdict_same"] = (
        got["verdict"]["headline"] == ref["verdict"]["headline"]
        and got["verdict"]["strength"] == ref["verdict"]["strength"]
    )
    return diff


def _f(x: Any, nd: int = 4) -> str:
    return f"{x:.{nd}f}" if isinstance(x, (int, float)) and x == x else "–"


def table(rec: dict[str, Any]) -> str:
    """The markdown fidelity table of a :func:`run` record."""
    precs = rec["precisions"]
    lines = [
        f"# Fidelity of bfloat16 against float32 ({rec['date']})",
        "",
        f"Demo folder {rec['demo']} (float32 run; its series and teacher data are shared by "
        f"every precision). torch {rec['torch']}, {rec['threads']} threads, load average "
        f"{rec['loadavg_start']} → {rec['loadavg_end']}. Reasons: "
        + "; ".join(f"{p}: {e['model']['precision']['reason']}" for p, e in precs.items()),
        "",
        "Settings: "
        + ("`--quick` (" if rec.get("quick") else "the demo's (")
        + ", ".join(
            f"{k}={rec.get('settings', {}).get(k)}"
            for k in ("probe_n", "carry_layers", "alphas", "n_random", "track_layers")
        )
        + "). A precision or stage missing below did not finish in the time the run had.",
        "",
        "## Teacher vector: cosine with float32 per layer",
        "",
        "| layer | " + " | ".join(p for p in precs if p != "float32") + " |",
        "|---:|" + "---:|" * (len(precs) - 1),
    ]
    layers = list(precs["float32"]["vector_cosine"])
    for layer in layers:
        row = [_f(e["vector_cosine"][layer], 5) for p, e in precs.items() if p != "float32"]
        lines.append(f"| {layer} | " + " | ".join(row) + " |")
    lines.append(
        "| **min** | "
        + " | ".join(_f(e["vector_cosine_min"], 5) for p, e in precs.items() if p != "float32")
        + " |"
    )
    lines += ["", "## Later stages against float32", ""]
    for p, e in precs.items():
        d = e.get("vs_float32")
        if d is None:
            continue
        lines += [
            f"### {p}",
            "",
            "| quantity | value |",
            "|---|---|",
            f"| EAS, main: max / median abs diff (median abs EAS) | {_f(d['main_eas_max_abs_diff'])} / "
            f"{_f(d['main_eas_median_abs_diff'])} ({_f(d['main_eas_ref_median_abs'])}) |",
            f"| EAS, control: max / median abs diff (median abs EAS) | "
            f"{_f(d['control_eas_max_abs_diff'])} / {_f(d['control_eas_median_abs_diff'])} "
            f"({_f(d['control_eas_ref_median_abs'])}) |",
            f"| projection, main: max / median abs diff (median abs) | "
            f"{_f(d['main_proj_max_abs_diff'])} / {_f(d['main_proj_median_abs_diff'])} "
            f"({_f(d['main_proj_ref_median_abs'])}) |",
            f"| projection, control: max / median abs diff (median abs) | "
            f"{_f(d['control_proj_max_abs_diff'])} / {_f(d['control_proj_median_abs_diff'])} "
            f"({_f(d['control_proj_ref_median_abs'])}) |",
            f"| excess alignment [float32, {p}] | {d['excess']} |",
            f"| behavior score: max abs diff, nats | {_f(d['behavior_max_abs_diff_nats'])} |",
            f"| behavior change after training: diff, nats | {d['behavior_delta_diff_nats']} |",
            f"| carry test S: max abs diff over the grid | {_f(d['carry_S_max_abs_diff'])} |",
            f"| carry level [float32, {p}] | {d['carry_level']} |",
            f"| LoRA steps: max relative loss diff | {_f(d.get('lora_loss_max_rel_diff'))} |",
            f"| LoRA adapter cosine with float32's (min over tensors) | "
            f"{_f(d.get('lora_adapter_cosine_min'))} |",
            f"| demo verdict the same | {d['verdict_same']} |",
            "",
        ]
    lines += [
        "## Verdicts and seconds",
        "",
        "| precision | seconds per stage | headline |",
        "|---|---|---|",
    ]
    for p, e in precs.items():
        secs = ", ".join(f"{k} {v:.0f}" for k, v in e["seconds"].items())
        head = e.get("verdict", {}).get("headline", "–")
        lines.append(f"| {p} | {secs} | {head} |")
    lines += [
        "",
        f"float32 rerun reproduces the demo's own verdict: {rec.get('float32_rerun_reproduces_demo')}.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--demo", type=Path, help="a finished float32 demo folder")
    ap.add_argument("--precisions", nargs="*", default=["float32", "bfloat16"])
    ap.add_argument("--vector-precisions", nargs="*", default=["bfloat16", "autocast"])
    ap.add_argument("--lora-steps", type=int, default=4)
    ap.add_argument("--quick", action="store_true", help="smaller stages (see QUICK)")
    ap.add_argument("--out", type=Path, default=RESULTS / "fidelity.json")
    ap.add_argument("--report", action="store_true", help="rewrite the table from --out")
    args = ap.parse_args(argv)
    if not args.report:
        if args.demo is None:
            ap.error("--demo DIR is required (a finished float32 `steerlens demo` folder)")
        if "float32" not in args.precisions:
            args.precisions = ["float32", *args.precisions]
        args.out.parent.mkdir(parents=True, exist_ok=True)

        def save(rec: dict[str, Any]) -> None:
            rec.setdefault("loadavg_end", [round(x, 2) for x in os.getloadavg()])
            args.out.write_text(json.dumps(rec, indent=2, default=str) + "\n")
            args.out.with_suffix(".md").write_text(table(rec))
            log(f"wrote {args.out}")

        run(args, save)
    rec = json.loads(args.out.read_text())
    md = args.out.with_suffix(".md")
    md.write_text(table(rec))
    log(f"wrote {md}")


if __name__ == "__main__":
    main()
