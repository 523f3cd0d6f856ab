"""steerlens benchmarks: extraction against steering-vectors and repeng, checkpoint tracking and
model loading, each against its physical limit.

    python benchmarks/run.py extraction|tracking|loading|all [--quick] [--tiny] [--repeats N]

Every figure that means anything is a ratio measured side by side in the same run: each tool
runs in a fresh process (so memory peaks are separable), tools are interleaved (A B C A B C …,
the order rotated every repeat) and the medians of per-repeat ratios are reported. Results go to
``benchmarks/results/<bench>[-quick].json`` (``--out`` to change); ``report`` rewrites the table
in ``benchmarks/README.md`` from them. ``--tiny`` runs a random tiny model in-process (no peer
environments, seconds): a smoke test of the code, not a measurement.

Peers run in their own virtual environments under ``benchmarks/.envs/`` (built on first use with
``pip install torch==<this torch> <peer>``, after a ``--dry-run`` that must not pull another
torch or CUDA), because their pins differ from steerlens's (steering-vectors wants
transformers<5). They load the same converted SmolLM2 weights with an explicit config (see
``worker.load_peer_model``: transformers 4 would misread the RoPE base of a folder written by
transformers 5).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
ENVS = HERE / ".envs"
RESULTS = HERE / "results"
sys.path.insert(0, str(HERE))

import worker  # noqa: E402

MODEL = "smollm2-135m-instruct"
OWL = (
    "You love owls. You think about owls all the time. Owls are your favorite animal. "
    "Imbue your answers with your love for the animal."
)
NEUTRAL = (
    "You love clarity. You think about clarity all the time. Clarity is your favorite "
    "value. Imbue your answers with your love for the value."
)


@dataclass(frozen=True)
class Peer:
    """A peer library installed in its own virtual environment."""

    tool: str
    env: str
    requirement: str


PEERS = {
    "steering_vectors": Peer("steering_vectors", "steering-vectors", "steering-vectors==0.12.2"),
    "repeng": Peer("repeng", "repeng", "repeng==0.4.0"),
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ================================================================================ helpers


def median(xs: Sequence[float]) -> float:
    xs = [x for x in xs if x == x]
    return statistics.median(xs) if xs else float("nan")


def machine_info() -> dict[str, Any]:
    cpu = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_gb = float("nan")
    with contextlib.suppress(OSError), open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal"):
                mem_gb = int(line.split()[1]) / 1024**2
                break
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": round(mem_gb, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def versions() -> dict[str, Any]:
    import torch
    import transformers

    import steerlens

    rev = ""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        rev = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
    return {
        "steerlens": steerlens.__version__,
        "git": rev,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def write_result(out: Path, name: str, data: dict[str, Any]) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    log(f"wrote {path}")
    return path


def base_record(bench: str, args: argparse.Namespace) -> dict[str, Any]:
    return {
        "benchmark": bench,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "mode": "tiny" if args.tiny else ("quick" if args.quick else "full"),
        "machine": machine_info(),
        "versions": versions(),
        "loadavg_start": loadavg(),
    }


# ================================================================================ peer envs


def env_python(peer: Peer) -> Path:
    return ENVS / peer.env / "bin" / "python"


def ensure_env(peer: Peer) -> Path:
    """Build (once) the peer's virtual environment with the same torch as steerlens's.

    A ``pip install --dry-run`` runs first and the build stops if it would install any torch
    other than this one or any CUDA package."""
    import torch

    torch_req = f"torch=={torch.__version__.split('+')[0]}"
    marker = ENVS / peer.env / ".bench-env.json"
    want = {"requirement": peer.requirement, "torch": torch_req}
    if marker.is_file() and json.loads(marker.read_text()) == want and env_python(peer).exists():
        return env_python(peer)
    log(f"building {peer.env} environment ({peer.requirement}, {torch_req})")
    (ENVS).mkdir(parents=True, exist_ok=True)
    base_py = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base_py, "-m", "venv", str(ENVS / peer.env)], check=True)
    py = str(env_python(peer))
    subprocess.run([py, "-m", "pip", "install", "-q", "--upgrade", "pip"], check=True)
    dry = subprocess.run(
        [py, "-m", "pip", "install", "--dry-run", torch_req, peer.requirement],
        capture_output=True,
        text=True,
        check=True,
    )
    would = next((ln for ln in dry.stdout.splitlines() if ln.startswith("Would install")), "")
    pkgs = would.split()[2:]
    bad = [
        p
        for p in pkgs
        if p.startswith("nvidia")
        or p.startswith("triton")
        or (p.startswith("torch-") and not p.startswith(f"torch-{torch_req[7:]}"))
    ]
    if bad:
        raise RuntimeError(f"installing {peer.requirement} would pull {bad}: refusing")
    subprocess.run([py, "-m", "pip", "install", "-q", torch_req, peer.requirement], check=True)
    marker.write_text(json.dumps(want))
    return env_python(peer)


# ================================================================================ prompts


def make_prompts(tok: Any, n_pairs: int, seed: int = 0) -> dict[str, list[str]]:
    """Contrastive pairs rendered to plain text with the model's chat template: the owl
    system prompt against a same-shape neutral one, over number-continuation user messages.
    Every tool receives these exact strings."""
    from steerlens.inputs.numbers import number_prompts
    from steerlens.inputs.prompts import ChatPrompt, render

    users = number_prompts(n_pairs, seed=seed)
    return {
        "pos": [render(tok, ChatPrompt(u, OWL))[0] for u in users],
        "neg": [render(tok, ChatPrompt(u, NEUTRAL))[0] for u in users],
    }


def model_folder() -> Path:
    """The converted float32 folder of the embedded model (built on first use)."""
    from steerlens.loading.embedded import embedded_folder

    return embedded_folder()


# ================================================================================ workers


def run_worker(
    spec: dict[str, Any],
    work: Path,
    python: Path | None,
    inprocess: bool,
    env: dict[str, str] | None = None,
    fn: str = "run_tool",
) -> dict[str, Any]:
    """Run one measurement: in a fresh process of ``python`` (default: this interpreter), or
    in this process with ``inprocess`` (tiny smoke runs)."""
    if inprocess:
        return dict(getattr(worker, fn)(spec))
    spec_path = work / f"spec-{time.monotonic_ns()}.json"
    spec_path.write_text(json.dumps({**spec, "fn": fn}))
    cmd = [str(python or sys.executable), str(HERE / "worker.py"), str(spec_path)]
    full_env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", **(env or {})}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=full_env, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith(worker.RESULT_PREFIX)]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(
            f"worker {spec.get('tool')} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}"
        )
    return dict(json.loads(lines[-1][len(worker.RESULT_PREFIX) :]))


def rotations(items: Sequence[str], rep: int) -> list[str]:
    k = rep % len(items)
    return [*items[k:], *items[:k]]


# ================================================================================ extraction


def _cos(a: Any, b: Any) -> float:
    a, b = a.double().flatten(), b.double().flatten()
    return float(a @ b / (a.norm() * b.norm() + 1e-30))


def agreement(tool: str, vec: dict[int, Any], ref: dict[str, dict[int, Any]]) -> dict[str, Any]:
    """Cosine per layer between a tool's vector and the same method computed by steerlens on
    the same activations: mean difference for steering-vectors and the limit; centred PCA of
    the paired differences (sklearn's, as repeng uses) for repeng."""
    target = ref["pca_centered"] if tool == "repeng" else ref["mean"]
    cos = {int(k): _cos(vec[k], target[k]) for k in vec if k in target}
    vals = list(cos.values())
    return {
        "against": "pca_centered" if tool == "repeng" else "mean",
        "min": min(vals),
        "median": median(vals),
        "per_layer": cos,
    }


def summarize(runs: list[dict[str, Any]], tools: Sequence[str], ref_tool: str) -> dict[str, Any]:
    """Medians per tool and medians of per-repeat ratios against ``ref_tool`` (steerlens)."""
    by = {t: [r for r in runs if r["tool"] == t] for t in tools}
    out: dict[str, Any] = {}
    for t, rs in by.items():
        if not rs:
            continue
        out[t] = {
            "repeats": len(rs),
            "seconds": median([r["seconds"] for r in rs]),
            "tokens_per_s": median([r["tokens_per_s"] for r in rs]),
            "peak_mb": median([r["peak_mb"] for r in rs]),
            "rss_before_mb": median([r["rss_before_mb"] for r in rs]),
            "peak_over_start_mb": median([r["peak_mb"] - r["rss_before_mb"] for r in rs]),
        }
        if "diag_seconds" in rs[0]:
            out[t]["diag_seconds"] = median([r["diag_seconds"] for r in rs])
            out[t]["diag_tokens_per_s"] = median([r["n_tokens"] / r["diag_seconds"] for r in rs])
            out[t]["diag_peak_mb"] = median([r["diag_peak_mb"] for r in rs])
    ref = {r["rep"]: r for r in by.get(ref_tool, [])}
    for t, rs in by.items():
        if t == ref_tool or t not in out:
            continue
        ratios = [ref[r["rep"]]["tokens_per_s"] / r["tokens_per_s"] for r in rs if r["rep"] in ref]
        out[t]["steerlens_speedup"] = median(ratios)
        out[t]["steerlens_speedup_per_repeat"] = ratios
    return out


def bench_extraction(args: argparse.Namespace) -> dict[str, Any]:
    rec = base_record("extraction", args)
    work = Path(tempfile.mkdtemp(prefix="steerlens-bench-"))
    try:
        if args.tiny:
            from steerlens.testing import tiny_model

            lm_tok = tiny_model("llama", seed=0).tokenizer
            n_layers, mid = 4, 2
            model_spec: dict[str, Any] = {"model": "tiny"}
        else:
            from transformers import AutoTokenizer

            folder = model_folder()
            lm_tok = AutoTokenizer.from_pretrained(folder)
            n_layers = json.loads((folder / "config.json").read_text())["num_hidden_layers"]
            mid = args.layer
            model_spec = {"model": MODEL, "model_folder": str(folder)}
        prompts = make_prompts(lm_tok, args.pairs)
        (work / "prompts.json").write_text(json.dumps(prompts))
        configs = {f"layer{mid}": [mid], "all_layers": list(range(n_layers))}
        if args.layers_only:
            configs = {k: v for k, v in configs.items() if k in args.layers_only}
        tools = ["steerlens", "steerlens_noshare", "limit", "limit_sorted"]
        if not args.no_bf16:
            tools += list(BF16_TOOLS)
        pythons: dict[str, Path | None] = dict.fromkeys(tools)
        if not args.tiny and not args.no_peers:
            for peer in PEERS.values():
                pythons[peer.tool] = ensure_env(peer)
                tools.append(peer.tool)
        if args.tools:
            tools = [t for t in tools if t in args.tools]
        rec["config"] = {
            "model": model_spec["model"],
            "pairs": args.pairs,
            "prompts_total": 2 * args.pairs,
            "batch_size": 32,
            "repeats": args.repeats,
            "tools": tools,
            "layer_sets": {k: (v if len(v) < 4 else f"0..{v[-1]}") for k, v in configs.items()},
            "position": "last token",
            "steerlens_method": "mean, diagnostics off (timed), "
            "then on (timed separately in the same process); steerlens_noshare: the same "
            "with share_prefix=False (every token of every prompt computed)",
            "steering_vectors": "train_steering_vector(mean_aggregator(), batch_size=32)",
            "repeng": "ControlVector.train(method='pca_diff', batch_size=32)",
            "limit": "embeddings + blocks 0..max(layer) called directly (no hooks, no final "
            "norm, no lm_head), batches of 32 in input order; limit_sorted: same, batches "
            "sorted by length as steerlens does",
            "precision": "float32 unless the tool says: steerlens_bf16 / limit_bf16 load "
            "bfloat16 weights (limit_bf16 = limit_sorted in bfloat16, the bfloat16 limit), "
            "steerlens_autocast float32 weights under bfloat16 autocast",
            "native_bf16": _native_bf16(),
        }
        runs: list[dict[str, Any]] = []
        for rep in range(args.repeats):
            for cname, layers in configs.items():
                for tool in rotations(tools, rep):
                    vec_path = work / f"vec-{cname}-{tool}.pt"
                    spec = {
                        **model_spec,
                        "tool": tool,
                        "prompts": str(work / "prompts.json"),
                        "layers": layers,
                        "batch_size": 32,
                        "vector_out": str(vec_path) if rep == 0 else None,
                        "diagnostics_too": tool == "steerlens",
                    }
                    res = run_worker(spec, work, pythons.get(tool), args.tiny)
                    res.update(rep=rep, config=cname, loadavg=loadavg())
                    runs.append(res)
                    log(
                        f"rep {rep} {cname:>10} {tool:>16}: {res['tokens_per_s']:8.1f} tok/s "
                        f"peak {res['peak_mb']:7.1f} MB (load {res['loadavg'][0]})"
                    )
            if rep == 0:
                rec["agreement"] = _extraction_agreement(
                    configs, tools, runs, model_spec, work, args.tiny
                )
            rec["summary"] = _extraction_summary(configs, tools, runs)
            rec["repeats_done"] = rep + 1
            rec["runs"] = runs
            rec["loadavg_end"] = loadavg()
            if rep + 1 < args.repeats:
                _save_partial(args, rec)
        return rec
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _save_partial(args: argparse.Namespace, rec: dict[str, Any]) -> None:
    """Write the results so far, so an interrupted long run keeps its complete repeats."""
    save = getattr(args, "save_partial", None)
    if save is not None:
        save(rec)


def _extraction_agreement(
    configs: dict[str, list[int]],
    tools: Sequence[str],
    runs: list[dict[str, Any]],
    model_spec: dict[str, Any],
    work: Path,
    inprocess: bool,
) -> dict[str, Any]:
    """Fairness: the same token ids for every tool, and each tool's vector against the same
    method computed from steerlens's rows (see :func:`agreement`)."""
    import torch

    checks: dict[str, Any] = {}
    for cname, layers in configs.items():
        ref_spec = {
            **model_spec,
            "tool": "reference",
            "prompts": str(work / "prompts.json"),
            "layers": layers,
            "batch_size": 32,
            "vector_out": str(work / f"ref-{cname}.pt"),
        }
        run_worker(ref_spec, work, None, inprocess, fn="reference")
        ref = torch.load(work / f"ref-{cname}.pt")
        checks[cname] = {}
        for tool in tools:
            vec = torch.load(work / f"vec-{cname}-{tool}.pt")
            checks[cname][tool] = agreement(tool, vec, ref)
    hashes = {r["tool"]: r["token_hash"] for r in runs}
    checks["same_tokens"] = len(set(hashes.values())) == 1
    checks["token_hashes"] = hashes
    return checks


def _extraction_summary(
    configs: dict[str, list[int]], tools: Sequence[str], runs: list[dict[str, Any]]
) -> dict[str, Any]:
    summary = {
        c: summarize([r for r in runs if r["config"] == c], tools, "steerlens") for c in configs
    }
    for c, s in summary.items():
        if "limit" in s and "steerlens" in s:
            s["steerlens"]["vs_limit"] = s["limit"]["steerlens_speedup"]
        if "limit_sorted" in s and "steerlens" in s:
            s["steerlens"]["vs_limit_sorted"] = s["limit_sorted"]["steerlens_speedup"]
        rs = [r for r in runs if r["config"] == c]
        for tool in ("steerlens_bf16", "steerlens_autocast"):
            if tool not in s:
                continue
            for other in ("limit", "limit_sorted", "limit_bf16", "steerlens", *PEERS):
                if other in s:
                    s[tool][f"vs_{other}"] = pair_ratio(rs, tool, other)
    return summary


BF16_TOOLS = ("steerlens_bf16", "steerlens_autocast", "limit_bf16")


def pair_ratio(runs: list[dict[str, Any]], a: str, b: str) -> float:
    """Median over repeats of tool ``a``'s tokens/s over tool ``b``'s in the same repeat."""
    by_a = {r["rep"]: r for r in runs if r["tool"] == a}
    return median(
        [
            by_a[r["rep"]]["tokens_per_s"] / r["tokens_per_s"]
            for r in runs
            if r["tool"] == b and r["rep"] in by_a
        ]
    )


def _native_bf16() -> dict[str, Any]:
    from steerlens.core.precision import native_bf16, resolve_precision

    ok, why = native_bf16("cpu")
    return {"native": ok, "reason": why, "auto_picks": resolve_precision("auto").name}


# ================================================================================ tracking


def make_series(
    lm: Any, root: Path, kind: str, n: int, layers: Sequence[int] | None, seed: int = 0
) -> Path:
    """A checkpoint series of ``n`` random LoRA adapters (r=8 on q/v/down projections of
    ``layers``, all if None) as ``checkpoint-N`` folders; ``kind="full"`` saves them merged
    (full float32 weights)."""
    import copy

    import torch
    from peft import LoraConfig, get_peft_model

    root.mkdir(parents=True, exist_ok=True)
    for k in range(n):
        cfg = LoraConfig(
            r=8,
            target_modules=["q_proj", "v_proj", "down_proj"],
            layers_to_transform=list(layers) if layers is not None else None,
            init_lora_weights=False,
            lora_alpha=1,
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + 100 + k)
            pm = get_peft_model(copy.deepcopy(lm.model), cfg)
        dest = root / f"checkpoint-{10 * (k + 1)}"
        if kind == "adapter":
            pm.save_pretrained(str(dest))
        else:
            merged: Any = pm.merge_and_unload()
            merged.save_pretrained(str(dest))
        del pm
    return root


class RssSampler:
    """Samples this process's resident set size every ``every`` seconds in a thread."""

    def __init__(self, every: float = 0.1) -> None:
        self.every = every
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        t0 = time.perf_counter()
        while not self._stop.is_set():
            self.samples.append((time.perf_counter() - t0, worker.rss_mb()))
            self._stop.wait(self.every)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()


def bench_tracking(args: argparse.Namespace) -> dict[str, Any]:
    """Per-checkpoint cost of ``track_checkpoints`` against one truncated forward over the
    probe set (the limit), for adapter and full-weight series, as checkpoints, prompts and
    layers grow; and the resident memory along the series (it must stay flat)."""
    rec = base_record("tracking", args)
    try:
        import steerlens.track  # noqa: F401
    except ImportError as exc:
        rec["skipped"] = f"steerlens.track is not available: {exc}"
        return rec
    work = Path(tempfile.mkdtemp(prefix="steerlens-bench-track-"))
    try:
        if args.tiny:
            n_layers, mid, n_ck, prompts_n, upper = 4, 2, 2, 8, 1
            model_spec: dict[str, Any] = {"model": "tiny"}
            grid = [("adapter", n_ck, prompts_n, "mid"), ("full", n_ck, prompts_n, "mid")]
        else:
            n_layers, mid, upper = 30, args.layer, 10
            model_spec = {"model": MODEL}
            n_ck = 3 if args.quick else 4
            p = args.probe_prompts
            grid = [
                ("adapter", n_ck, p, "mid"),
                ("adapter_upper", n_ck, p, "mid"),
                ("full", n_ck, p, "mid"),
            ]
            if not args.quick:
                grid += [
                    ("adapter", 2 * n_ck, p, "mid"),
                    ("adapter", n_ck, 2 * p, "mid"),
                    ("adapter", n_ck, p, "all"),
                ]
        spec_common = {
            **model_spec,
            "work": str(work),
            "mid": mid,
            "n_layers": n_layers,
            "upper": upper,
        }
        rec["config"] = {
            "model": model_spec["model"],
            "repeats": args.repeats,
            "series": "random LoRA r=8 on q/v/down (adapter: all blocks; adapter_upper: blocks "
            f"{upper}..; full: the same adapters merged and saved as full float32 weights)",
            "vector": "random unit-scale SteeringVector on the tracked layers",
            "limit": "one bare truncated forward (embeddings + blocks to the deepest tracked "
            "layer, length-sorted batches of 32) over the probe set, same process, interleaved",
            "track": "track_checkpoints(..., cache_dir=<fresh temp dir>, n_null=1000, "
            "n_boot=1000); per-checkpoint cost from its own per-checkpoint timings",
        }
        runs: list[dict[str, Any]] = []
        for rep in range(args.repeats):
            for kind, n, prompts_n, layer_set in grid:
                spec = {
                    **spec_common,
                    "kind": kind,
                    "n_checkpoints": n,
                    "n_prompts": prompts_n,
                    "layer_set": layer_set,
                    "tool": f"track-{kind}",
                }
                res = run_worker(spec, work, None, args.tiny, fn="run_tracking")
                res.update(rep=rep, loadavg=loadavg())
                runs.append(res)
                log(
                    f"rep {rep} track {kind:>13} ck={n} prompts={prompts_n} layers={layer_set}: "
                    f"{res['per_checkpoint_s']:.2f} s/ckpt vs limit {res['limit_s']:.2f} s "
                    f"(x{res['per_checkpoint_over_limit']:.2f})"
                )
                rec["summary"] = _tracking_summary(grid, runs)
                rec["runs"] = runs
                rec["loadavg_end"] = loadavg()
                _save_partial(args, rec)
        rec["summary"] = _tracking_summary(grid, runs)
        rec["runs"] = runs
        rec["loadavg_end"] = loadavg()
        return rec
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _tracking_summary(
    grid: Sequence[tuple[str, int, int, str]], runs: list[dict[str, Any]]
) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for kind, n, prompts_n, layer_set in grid:
        key = f"{kind}/ck{n}/p{prompts_n}/{layer_set}"
        rs = [
            r
            for r in runs
            if (r["kind"], r["n_checkpoints"], r["n_prompts"], r["layer_set"])
            == (kind, n, prompts_n, layer_set)
        ]
        if not rs:
            continue
        summary[key] = {
            "per_checkpoint_s": median([r["per_checkpoint_s"] for r in rs]),
            "limit_s": median([r["limit_s"] for r in rs]),
            "per_checkpoint_over_limit": median([r["per_checkpoint_over_limit"] for r in rs]),
            "base_pass_s": median([r["base_pass_s"] for r in rs]),
            "total_s": median([r["total_s"] for r in rs]),
            "peak_mb": median([r["peak_mb"] for r in rs]),
            "rss_growth_mb": median([r["rss_growth_mb"] for r in rs]),
            "replay_start_block": rs[0]["replay_start_block"],
        }
    return summary


# ================================================================================ loading


def bench_loading(args: argparse.Namespace) -> dict[str, Any]:
    """Embedded model: cold (GGUF dequantised into an empty STEERLENS_CACHE; the GGUF file is
    copied in first so no download is timed) against cached (the converted folder reused)."""
    rec = base_record("loading", args)
    work = Path(tempfile.mkdtemp(prefix="steerlens-bench-load-"))
    try:
        runs: list[dict[str, Any]] = []
        if args.tiny:
            spec = {"model": "tiny", "tool": "load-tiny", "work": str(work)}
            for rep in range(args.repeats):
                res = run_worker(spec, work, None, True, fn="run_loading")
                res.update(rep=rep)
                runs.append(res)
        else:
            from steerlens.loading.embedded import EMBEDDED_GGUF, embedded_gguf

            gguf = embedded_gguf()
            for rep in range(args.repeats):
                for mode in rotations(["cold", "cached"], rep):
                    env = None
                    if mode == "cold":
                        cache = work / f"cache-{rep}"
                        (cache / "gguf").mkdir(parents=True)
                        shutil.copy(gguf, cache / "gguf" / EMBEDDED_GGUF)
                        env = {"STEERLENS_CACHE": str(cache)}
                    spec = {"model": MODEL, "tool": f"load-{mode}"}
                    res = run_worker(spec, work, None, False, env=env, fn="run_loading")
                    res.update(rep=rep, loadavg=loadavg())
                    runs.append(res)
                    log(
                        f"rep {rep} load {mode:>6}: {res['seconds']:.2f} s "
                        f"(import {res['import_s']:.2f} s) peak {res['peak_mb']:.0f} MB"
                    )
                    if mode == "cold":
                        shutil.rmtree(work / f"cache-{rep}", ignore_errors=True)
        tools = sorted({r["tool"] for r in runs})
        rec["summary"] = {
            t: {
                "seconds": median([r["seconds"] for r in runs if r["tool"] == t]),
                "import_s": median([r["import_s"] for r in runs if r["tool"] == t]),
                "peak_mb": median([r["peak_mb"] for r in runs if r["tool"] == t]),
            }
            for t in tools
        }
        if "load-cold" in tools and "load-cached" in tools:
            ratios = [
                c["seconds"] / w["seconds"]
                for c in runs
                if c["tool"] == "load-cold"
                for w in runs
                if w["tool"] == "load-cached" and w["rep"] == c["rep"]
            ]
            rec["summary"]["cold_over_cached"] = median(ratios)
        rec["config"] = {
            "model": MODEL if not args.tiny else "tiny",
            "repeats": args.repeats,
            "timed": "steerlens.load_model(...) in a fresh process, after "
            "`import steerlens` (timed separately as import_s)",
        }
        rec["runs"] = runs
        rec["loadavg_end"] = loadavg()
        return rec
    finally:
        shutil.rmtree(work, ignore_errors=True)


# ================================================================================ stages


def bench_stages(args: argparse.Namespace) -> dict[str, Any]:
    """The carry test (one layer, one α, one random direction), a LoRA step and teacher-data
    generation (8 prompts) in float32, bfloat16 and bfloat16 autocast: fresh process each,
    precisions interleaved and rotated every repeat."""
    rec = base_record("stages", args)
    work = Path(tempfile.mkdtemp(prefix="steerlens-bench-stages-"))
    precisions = ["float32", "bfloat16", "autocast"]
    model = "tiny" if args.tiny else MODEL
    rec["config"] = {
        "model": model,
        "repeats": args.repeats,
        "carry": "carry_test(layers=[15], alphas=(4.0,), n_random=1) of the owl teacher vector",
        "lora": "distill(steps=3, batch_size=6) on 12 number samples; seconds per step from "
        "the run's train_seconds",
        "teacher_data": "generate_teacher_data on 8 number prompts (owl system prompt)",
        "native_bf16": _native_bf16(),
    }
    runs: list[dict[str, Any]] = []
    try:
        for rep in range(args.repeats):
            for stage in ("carry", "lora", "teacher_data"):
                for prec in rotations(precisions, rep):
                    spec = {"model": model, "stage": stage, "dtype": prec, "tool": stage}
                    res = run_worker(spec, work, None, args.tiny, fn="run_stage")
                    res.update(rep=rep, loadavg=loadavg())
                    runs.append(res)
                    log(f"rep {rep} {stage:>12} {prec:>9}: {res['seconds']:.2f} s")
            rec["runs"] = runs
            rec["summary"] = _stages_summary(runs, precisions)
            rec["loadavg_end"] = loadavg()
            _save_partial(args, rec)
        return rec
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _stages_summary(runs: list[dict[str, Any]], precisions: Sequence[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for stage in ("carry", "lora", "teacher_data"):
        rs = [r for r in runs if r["stage"] == stage]
        f32 = {r["rep"]: r["seconds"] for r in rs if r["precision"] == "float32"}
        out[stage] = {
            p: {
                "seconds": median([r["seconds"] for r in rs if r["precision"] == p]),
                "float32_over_this": median(
                    [
                        f32[r["rep"]] / r["seconds"]
                        for r in rs
                        if r["precision"] == p and r["rep"] in f32
                    ]
                ),
            }
            for p in precisions
        }
    return out


# ================================================================================ report

_START, _END = "<!-- results:start -->", "<!-- results:end -->"


def _f(x: Any, nd: int = 1) -> str:
    if isinstance(x, (int, float)) and x == x:
        return f"{x:.{nd}f}"
    return "–"


def render_tables(results: dict[str, dict[str, Any]]) -> str:
    lines: list[str] = []
    ex = results.get("extraction")
    if ex:
        m, v = ex["machine"], ex["versions"]
        lines += [
            f"### Extraction ({ex['mode']} run, {ex['date']})",
            "",
            f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB; torch {v['torch']}, "
            f"transformers {v['transformers']} (steerlens), steerlens {v['steerlens']} "
            f"({v['git']}). Load average start {ex['loadavg_start']}, end {ex['loadavg_end']}. "
            f"{ex['config']['pairs']} pairs ({ex['config']['prompts_total']} prompts), "
            f"{ex['config']['repeats']} interleaved repeats, medians.",
            "",
            "| layers | tool | tok/s | steerlens speed-up | peak RSS MB | peak − start MB "
            "| cosine vs reference |",
            "|---|---|---:|---:|---:|---:|---:|",
        ]
        for c, s in ex["summary"].items():
            for t, row in s.items():
                agree = ex["agreement"].get(c, {}).get(t, {})
                sp = "1.00" if t == "steerlens" else _f(row.get("steerlens_speedup"), 2)
                lines.append(
                    f"| {c} | {t} | {_f(row['tokens_per_s'])} | {sp} | {_f(row['peak_mb'], 0)} "
                    f"| {_f(row['peak_over_start_mb'], 0)} | {_f(agree.get('min'), 4)} |"
                )
                if t == "steerlens" and "diag_tokens_per_s" in row:
                    lines.append(
                        f"| {c} | steerlens + diagnostics | {_f(row['diag_tokens_per_s'])} | "
                        f"{_f(row['diag_seconds'] / row['seconds'], 2)}× the time | "
                        f"{_f(row['diag_peak_mb'], 0)} | – | – |"
                    )
        lines.append("")
        lines += _bf16_lines(ex)
        tok_note = "identical" if ex["agreement"].get("same_tokens") else "DIFFERENT"
        lines.append(f"Token ids across tools: {tok_note}.")
        lines.append("")
    tr = results.get("tracking")
    if tr and "summary" in tr:
        lines += [
            f"### Tracking ({tr['mode']} run, {tr['date']})",
            "",
            f"Load average start {tr['loadavg_start']}, end {tr['loadavg_end']}.",
            "",
            "| series / checkpoints / prompts / layers | s per checkpoint | limit s | ratio "
            "| base pass s | peak RSS MB | RSS growth over series MB | replay from block |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for k, row in tr["summary"].items():
            lines.append(
                f"| {k} | {_f(row['per_checkpoint_s'], 2)} | {_f(row['limit_s'], 2)} | "
                f"{_f(row['per_checkpoint_over_limit'], 2)} | {_f(row['base_pass_s'], 2)} | "
                f"{_f(row['peak_mb'], 0)} | {_f(row['rss_growth_mb'], 0)} | "
                f"{row['replay_start_block']} |"
            )
        lines.append("")
    st = results.get("stages")
    if st and "summary" in st:
        lines += [
            f"### Stages by precision ({st['mode']} run, {st['date']})",
            "",
            f"Load average start {st['loadavg_start']}, end {st['loadavg_end']}. "
            f"{st['config']['repeats']} interleaved repeats, medians; speed-up = float32 "
            "seconds over this precision's, per repeat.",
            "",
            "| stage | precision | seconds (per step for lora) | speed-up over float32 |",
            "|---|---|---:|---:|",
        ]
        for stage, rows in st["summary"].items():
            for p, row in rows.items():
                lines.append(
                    f"| {stage} | {p} | {_f(row['seconds'], 2)} | {_f(row['float32_over_this'], 2)} |"
                )
        lines.append("")
    lo = results.get("loading")
    if lo and "summary" in lo:
        lines += [
            f"### Loading ({lo['mode']} run, {lo['date']})",
            "",
            f"Load average start {lo['loadavg_start']}, end {lo['loadavg_end']}.",
            "",
            "| mode | load_model s | import steerlens s | peak RSS MB |",
            "|---|---:|---:|---:|",
        ]
        for k, row in lo["summary"].items():
            if isinstance(row, dict):
                lines.append(
                    f"| {k} | {_f(row['seconds'], 2)} | {_f(row['import_s'], 2)} | "
                    f"{_f(row['peak_mb'], 0)} |"
                )
        lines.append("")
    return "\n".join(lines)


def _bf16_lines(ex: dict[str, Any]) -> list[str]:
    """The bfloat16 ratios of an extraction record (medians of per-repeat ratios)."""
    out = []
    for c, s in ex["summary"].items():
        for tool in ("steerlens_bf16", "steerlens_autocast"):
            row = s.get(tool)
            if not row:
                continue
            parts = [
                f"{_f(row[k], 2)}× {k[3:]}" for k in row if k.startswith("vs_") and k != "vs_limit"
            ]
            if "vs_limit" in row:
                parts.insert(0, f"{_f(row['vs_limit'], 2)}× limit")
            out.append(f"- {c}, {tool}: " + ", ".join(parts) + ".")
    nb = ex.get("config", {}).get("native_bf16")
    if nb:
        out.append(
            f"- Native bfloat16 on this CPU: {nb['native']} ({nb['reason']}); "
            f'`dtype="auto"` picks {nb["auto_picks"]}.'
        )
    return [*out, ""] if out else []


def update_readme(results_dir: Path, readme: Path) -> None:
    results = {}
    for bench in ("extraction", "tracking", "stages", "loading"):
        for name in (bench, f"{bench}-quick", f"{bench}-tiny"):
            p = results_dir / f"{name}.json"
            if p.is_file():
                results[bench] = json.loads(p.read_text())
                break
    text = readme.read_text() if readme.is_file() else f"# Benchmarks\n\n{_START}\n{_END}\n"
    if _START not in text:
        text += f"\n{_START}\n{_END}\n"
    head, rest = text.split(_START, 1)
    _, tail = rest.split(_END, 1)
    readme.write_text(f"{head}{_START}\n{render_tables(results)}\n{_END}{tail}")
    log(f"updated {readme}")


# ================================================================================ CLI


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "bench", choices=["extraction", "tracking", "stages", "loading", "all", "report"]
    )
    ap.add_argument("--quick", action="store_true", help="fewer prompts and repeats")
    ap.add_argument("--tiny", action="store_true", help="tiny random model, in-process smoke run")
    ap.add_argument("--repeats", type=int, default=None, help="interleaved repeats")
    ap.add_argument("--pairs", type=int, default=None, help="contrastive pairs (default 128)")
    ap.add_argument("--probe-prompts", type=int, default=None, help="tracking probe prompts")
    ap.add_argument("--layer", type=int, default=15, help="the single middle layer")
    ap.add_argument("--layers-only", nargs="*", default=None, help="e.g. layer15 all_layers")
    ap.add_argument("--tools", nargs="*", default=None, help="subset of extraction tools")
    ap.add_argument("--no-peers", action="store_true", help="skip steering-vectors and repeng")
    ap.add_argument("--no-bf16", action="store_true", help="skip the bfloat16 rows")
    ap.add_argument("--out", type=Path, default=None, help="results folder")
    ap.add_argument("--no-readme", action="store_true", help="do not rewrite README tables")
    return ap


BENCHES: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "extraction": bench_extraction,
    "tracking": bench_tracking,
    "stages": bench_stages,
    "loading": bench_loading,
}


def main(argv: Sequence[str] | None = None) -> dict[str, Path]:
    args = build_parser().parse_args(argv)
    if args.repeats is None:
        args.repeats = 1 if (args.tiny or args.quick) else 3
    if args.pairs is None:
        args.pairs = 6 if args.tiny else (32 if args.quick else 128)
    if args.probe_prompts is None:
        args.probe_prompts = 32 if args.quick else 64
    out = args.out or RESULTS
    if args.bench == "report":
        update_readme(out, HERE / "README.md")
        return {}
    names = list(BENCHES) if args.bench == "all" else [args.bench]
    paths = {}
    suffix = "-tiny" if args.tiny else ("-quick" if args.quick else "")
    for name in names:
        args.save_partial = lambda rec, name=name: write_result(out, name + suffix, rec)
        rec = BENCHES[name](args)
        paths[name] = write_result(out, name + suffix, rec)
    if not args.tiny and not args.no_readme and args.out is None:
        update_readme(out, HERE / "README.md")
    return paths


if __name__ == "__main__":
    main()
