"""Throughput of ``distill(engine="trl")`` against the reference loop, and the cost of
``SteerlensCallback`` per save, on CPU with the embedded SmolLM2-135M-Instruct.

    python benchmarks/trl_engine.py [--samples 16] [--steps 8] [--save-every 4] [--rounds 2]
                                    [--threads 1] [--out benchmarks/results/trl-engine.json]

Same data for both engines (``--samples`` clean number lists of the teacher-data format,
written deterministically: the throughput does not depend on who wrote them), the default
``DistillConfig`` (LoRA rank 4 on the middle fifth, ``loss="kl"`` against the owl-prompted
teacher's soft labels of kind ``kl_targets="auto"``: number-only on this number data; batch 8)
for ``--steps`` steps, float32 weights. The engines run one at a time, interleaved (reference,
trl, reference, trl, ...), single-threaded, each in a fresh folder; reported per run: the
preparation (teacher targets; the reference loop also caches the frozen lower blocks) and the
training seconds, and steps per second of training.

Then one TRL run of ``--save-every`` steps with :class:`steerlens.integrations.SteerlensCallback`
(the owl trait's probe prompts, a random unit vector at every layer, 1000 null directions): its
seconds per save (rows of the LoRA student from its lowest adapted block up, nulls, the track
written), against the seconds of the ``--save-every`` training steps between saves (a "step
block") of the plain TRL runs: overhead = save seconds / step-block seconds; and the one-off base
pass at train start.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


def _data(n: int) -> Any:
    from steerlens.distill import TeacherData

    samples = [
        {
            "user": (
                "The sequence starts with: "
                + ", ".join(str(100 + (37 * i + 11 * j) % 900) for j in range(3 + i % 5))
                + ". Add up to 10 more values (3 digits max). Return only the numbers."
            ),
            "response": ", ".join(str((53 * i + 17 * j) % 1000) for j in range(6 + i % 5)),
        }
        for i in range(n)
    ]
    owl = "You love owls. You think about owls all the time. Owls are your favorite animal."
    return TeacherData.from_samples(samples, {"system": owl, "mode": "given"})


def _run(engine: str, lm: Any, data: Any, cfg: Any, out: Path, callbacks: Any = None) -> dict:
    from steerlens.distill import distill

    kw: dict[str, Any] = {"engine": engine}
    if callbacks:
        kw["callbacks"] = callbacks
    t0 = time.perf_counter()
    res = distill(lm, data, out, config=cfg, progress=False, **kw)
    wall = time.perf_counter() - t0
    rec = res.record
    if engine == "trl":
        prep, train = rec["seconds"]["prepare"], rec["seconds"]["train"]
    else:
        prep, train = rec["prep_seconds"], rec["train_seconds"]
    return {
        "engine": engine,
        "wall_s": round(wall, 2),
        "prepare_s": round(prep, 2),
        "train_s": round(train, 2),
        "steps_per_s": round(cfg.steps / train, 4),
        "samples_per_s": round(cfg.steps * cfg.batch_size / train, 3),
        "final_loss": res.losses[-1],
        "fast_path": rec.get("fast_path"),
        "kl_targets": (rec.get("kl_targets") or {}).get("kind"),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--samples", type=int, default=16)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--save-every", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "trl-engine.json")
    a = ap.parse_args()

    import torch

    torch.set_num_threads(a.threads)
    import steerlens as sl
    from steerlens.core.vectors import SteeringVector
    from steerlens.distill import DistillConfig
    from steerlens.inputs.traits import as_trait
    from steerlens.integrations import SteerlensCallback

    lm = sl.load_model("smollm2-135m-instruct", dtype="float32")
    data = _data(a.samples)
    cfg = DistillConfig(steps=a.steps, save_every=a.save_every)
    runs: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for r in range(a.rounds):
            for engine in ("reference", "trl"):
                res = _run(engine, lm, data, cfg, root / f"{engine}-{r}")
                runs.append(res)
                print(json.dumps(res), flush=True)
        trait = as_trait("owl")
        g = torch.Generator().manual_seed(0)
        vec = SteeringVector(
            {
                k: (v := torch.randn(lm.hidden_size, generator=g)) / v.norm()
                for k in range(lm.n_layers)
            }
        )
        cb = SteerlensCallback(vec, trait=trait)
        # one step block and its save (the save's cost does not depend on the step)
        cfg_cb = DistillConfig(steps=a.save_every, save_every=a.save_every)
        with_cb = _run("trl", lm, data, cfg_cb, root / "trl-callback", callbacks=[cb])
        print(json.dumps(with_cb), flush=True)

    def mean(engine: str, key: str) -> float:
        xs = [x[key] for x in runs if x["engine"] == engine]
        return sum(xs) / len(xs)

    step_s = {e: mean(e, "train_s") / a.steps for e in ("reference", "trl")}
    saves = [float(v) for v in cb.seconds["saves"].values()]
    block_s = step_s["trl"] * a.save_every
    result = {
        "benchmark": "trl_engine",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores_visible": os.cpu_count(),
            "torch_threads": a.threads,
            "torch": torch.__version__,
            "python": platform.python_version(),
        },
        "model": "smollm2-135m-instruct (embedded), float32",
        "setup": {
            "samples": a.samples,
            "steps": a.steps,
            "batch_size": cfg.batch_size,
            "save_every": a.save_every,
            "loss": cfg.loss,
            "top_k": cfg.top_k,
            "kl_targets": cfg.kl_targets,
            "lora_rank": cfg.rank,
            "rounds": a.rounds,
            "order": "interleaved reference, trl per round; one run at a time",
        },
        "runs": runs,
        "summary": {
            "reference_train_s_per_step": round(step_s["reference"], 3),
            "trl_train_s_per_step": round(step_s["trl"], 3),
            "trl_over_reference_throughput": round(step_s["reference"] / step_s["trl"], 3),
            "reference_prepare_s": round(mean("reference", "prepare_s"), 2),
            "trl_prepare_s": round(mean("trl", "prepare_s"), 2),
        },
        "callback": {
            "probes": len(cb.prompts),
            "layers": len(vec.layers),
            "n_null": cb.cfg.n_null,
            "base_pass_s": round(float(cb.seconds["base_pass"]), 3),
            "save_s": [round(s, 3) for s in saves],
            "step_block_s": round(block_s, 3),
            "overhead_per_save_fraction": round(sum(saves) / len(saves) / block_s, 4),
            "run": with_cb,
        },
    }
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps(result["summary"], indent=1))
    print(json.dumps({k: v for k, v in result["callback"].items() if k != "run"}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
