"""The ``steerlens`` command line: extract | carry | track | screen | distill | report | demo.

Every command takes ``--config FILE.yaml`` whose keys are the long option names (``layers:``,
``out:`` …); options given on the command line win. Errors print one line naming the problem
and the fix, and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

Handler = Callable[[argparse.Namespace], int]


def _layers(text: str | None) -> Any:
    """``all``, ``15``, ``6,12,18`` or ``10-20``."""
    if text is None or text == "all":
        return "all"
    out: list[int] = []
    for part in str(text).split(","):
        part = part.strip()
        if "-" in part[1:]:
            a, b = part.split("-", 1)
            out.extend(range(int(a), int(b) + 1))
        elif part:
            out.append(int(part))
    return out


def _floats(text: str | None) -> tuple[float, ...] | None:
    return None if text is None else tuple(float(x) for x in str(text).split(",") if x.strip())


def _read_prompts(path: str) -> list[Any]:
    """One prompt per line (.txt), or JSON/JSONL of strings or {user, system, prefill} objects."""
    from steerlens.prompts import as_prompt

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"prompt file {p} does not exist")
    text = p.read_text(encoding="utf-8")
    if p.suffix == ".json":
        items = json.loads(text)
    elif p.suffix == ".jsonl":
        items = [json.loads(line) for line in text.splitlines() if line.strip()]
    else:
        items = [line for line in text.splitlines() if line.strip()]
    if not items:
        raise ValueError(f"prompt file {p} is empty: it needs at least one prompt")
    return [as_prompt(x) for x in items]


def _read_samples(path: str) -> list[dict[str, Any]]:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"data file {p} does not exist")
    rows = [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not rows:
        raise ValueError(f"data file {p} has no samples")
    return rows


def _device(name: str) -> str:
    """``auto``: the GPU when there is one, else the CPU."""
    if name != "auto":
        return name
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _load(args: argparse.Namespace) -> Any:
    from steerlens.models import load_model

    return load_model(args.model, device=_device(args.device), dtype=args.dtype)


def _emit(args: argparse.Namespace, payload: dict[str, Any], summary: str | None = None) -> None:
    from steerlens.report import render_report, write_json

    if summary:
        print(summary)
    if getattr(args, "out", None):
        write_json(payload, args.out)
        print(f"wrote {args.out}")
    if getattr(args, "html", None):
        render_report(payload).save(args.html)
        print(f"wrote {args.html}")


# ----------------------------------------------------------------------------- commands


def cmd_extract(args: argparse.Namespace) -> int:
    from steerlens.extract import extract_vector, teacher_vector
    from steerlens.traits import as_trait

    model = _load(args)
    if args.trait:
        vec = teacher_vector(
            model,
            as_trait(args.trait),
            layers=_layers(args.layers),
            method=args.method,
            position=args.position,
            seed=args.seed,
            batch_size=args.batch_size,
        )
    else:
        if not (args.pos and args.neg):
            raise ValueError("give --trait NAME, or both --pos FILE and --neg FILE")
        vec = extract_vector(
            model,
            _read_prompts(args.pos),
            _read_prompts(args.neg),
            _layers(args.layers),
            args.method,
            position=args.position,
            seed=args.seed,
            batch_size=args.batch_size,
        )
    vec.save(args.out)
    sh = vec.diagnostics.get("split_half", {})
    print(vec)
    for layer in vec.layers:
        r = sh.get(layer) or {}
        print(
            f"  layer {layer:>3}: ‖v‖={float(vec[layer].norm()):.3f}  split-half cos="
            f"{r.get('mean', float('nan')):.3f} [{r.get('lo', float('nan')):.3f}, {r.get('hi', float('nan')):.3f}]"
        )
    print(f"wrote {args.out}")
    return 0


def cmd_carry(args: argparse.Namespace) -> int:
    from steerlens.carry import carry_test
    from steerlens.traits import as_trait
    from steerlens.vectors import SteeringVector

    model = _load(args)
    vec = SteeringVector.load(args.vector)
    kw: dict[str, Any] = {"n_random": args.n_random, "seed": args.seed}
    if args.alphas:
        kw["alphas"] = _floats(args.alphas)
    layers = _layers(args.layers)
    res = carry_test(
        model, vec, as_trait(args.trait), layers=None if layers == "all" else layers, **kw
    )
    _emit(args, {"carry": res.to_json(), "trait": res.trait}, res.summary())
    return 0


def cmd_track(args: argparse.Namespace) -> int:
    from steerlens.track import track_checkpoints
    from steerlens.traits import as_trait
    from steerlens.vectors import SteeringVector

    model = _load(args)
    vec = SteeringVector.load(args.vector)
    probes: Any = _read_prompts(args.prompts) if args.prompts else as_trait(args.trait)
    layers = _layers(args.layers)
    track = track_checkpoints(
        model,
        args.checkpoints,
        vec,
        probes,
        control=args.control,
        layers=None if layers == "all" else layers,
        seed=args.seed,
        cache_dir=args.cache_dir,
        n_null=args.n_null,
        n_boot=args.n_boot,
        correction=args.correction,
    )
    _emit(args, {"track": track.to_json()}, track.summary())
    return 0


def cmd_screen(args: argparse.Namespace) -> int:
    from steerlens.screen import screen_dataset
    from steerlens.vectors import SteeringVector

    model = _load(args)
    vec = SteeringVector.load(args.vector)
    data: dict[str, list[dict[str, Any]]] = {"data": _read_samples(args.data)}
    if args.control_data:
        data["control"] = _read_samples(args.control_data)
    res = screen_dataset(model, vec, data, seed=args.seed)
    lines = [f"{k}: {json.dumps(v)}" for k, v in res.summary().items()]
    if args.control_data:
        lines.append(f"data vs control: {json.dumps(res.compare('data', 'control'))}")
    for row in res.top(args.top):
        lines.append(f"  ΔP={row['delta']:+.4f} [{row['dataset']}] {row['response'][:70]!r}")
    _emit(args, {"screen": res.to_json()}, "\n".join(lines))
    return 0


def cmd_distill(args: argparse.Namespace) -> int:
    from steerlens.distill import DistillConfig, distill, generate_teacher_data
    from steerlens.numbers import number_prompts
    from steerlens.traits import as_trait

    model = _load(args)
    trait = as_trait(args.trait)
    system = trait.neutral_system_prompt if args.benign else trait.system_prompt
    prompts = number_prompts(args.n, seed=args.seed + 1000)
    data = generate_teacher_data(model, prompts, system=system, n=args.n, seed=args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data.save(out / "teacher_data.jsonl")
    print(f"teacher data: {data.counts}")
    cfg = DistillConfig(
        steps=args.steps, save_every=args.save_every, rank=args.rank, loss=args.loss, seed=args.seed
    )
    res = distill(model, data, out, teacher_system=system, config=cfg, overwrite=args.overwrite)
    print(f"checkpoints in {out}: {', '.join(p.name for p in sorted(out.glob('checkpoint-*')))}")
    _ = res
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from steerlens.report import render_report

    p = Path(args.results)
    if not p.is_file():
        raise FileNotFoundError(f"results file {p} does not exist")
    results = json.loads(p.read_text())
    out = Path(args.out or p.with_name("report.html"))
    render_report(results).save(out)
    print(f"wrote {out}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from steerlens.experiment import DemoConfig, run_demo

    over: dict[str, Any] = {"model": args.model, "trait": args.trait, "seed": args.seed}
    for key in ("steps", "n_samples"):
        if getattr(args, key) is not None:
            over[key] = getattr(args, key)
    device = _device(args.device)
    cfg = (
        DemoConfig.quick(device=device, **over)
        if args.quick
        else DemoConfig.for_device(device, **over)
    )
    res = run_demo(cfg, args.out)
    v = res["verdict"]
    print("\n" + v["headline"])
    for line in v["lines"]:
        print("  " + line)
    print(f"\nOpen {Path(args.out) / 'report.html'} in a browser.")
    return 0


# ------------------------------------------------------------------------------ parser


def _common(p: argparse.ArgumentParser, model: bool = True) -> None:
    p.add_argument("--config", help="YAML file of option values (keys = long option names)")
    p.add_argument("--seed", type=int, default=0, help="seed for every random choice (default 0)")
    if model:
        p.add_argument(
            "--model",
            default="smollm2-135m-instruct",
            help="embedded name, HF id, local folder, .gguf file or PEFT adapter folder",
        )
        p.add_argument(
            "--device", default="auto", help="auto (GPU if present), cpu, cuda, cuda:1 …"
        )
        p.add_argument("--dtype", default="float32", help="float32 | bfloat16 | float16")


def build_parser() -> argparse.ArgumentParser:
    from steerlens.version import __version__

    ap = argparse.ArgumentParser(
        prog="steerlens", description="Mechanistic steering-vector analysis of trait transfer."
    )
    ap.add_argument("--version", action="version", version=f"steerlens {__version__}")
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("extract", help="extract a per-layer steering vector")
    _common(p)
    p.add_argument(
        "--trait",
        help="built-in trait name or trait YAML (teacher vector: trait vs neutral system prompt)",
    )
    p.add_argument("--pos", help="file of positive prompts (.txt lines, .json, .jsonl)")
    p.add_argument("--neg", help="file of negative prompts, paired with --pos")
    p.add_argument("--layers", default="all", help="all | 15 | 6,12,18 | 10-20")
    p.add_argument("--method", default="mean", choices=["mean", "pca", "probe"])
    p.add_argument("--position", default="last", choices=["last", "prompt", "all"])
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--out", required=True, help="output .safetensors")
    p.set_defaults(func=cmd_extract)

    p = sub.add_parser(
        "carry", help="is the behavior carried by the vector? sufficiency, necessity, nulls"
    )
    _common(p)
    p.add_argument("--vector", required=True, help=".safetensors from `steerlens extract`")
    p.add_argument("--trait", default="owl")
    p.add_argument(
        "--layers",
        default="all",
        help="layers of the grid (default: a spread of the vector's layers)",
    )
    p.add_argument("--alphas", help="comma-separated α grid")
    p.add_argument(
        "--n-random", type=int, default=4, help="random directions per cell for the null band"
    )
    p.add_argument("--out", help="results JSON")
    p.add_argument("--html", help="report HTML")
    p.set_defaults(func=cmd_carry)

    p = sub.add_parser("track", help="track student checkpoints' alignment with a teacher vector")
    _common(p)
    p.add_argument(
        "--checkpoints", required=True, help="folder of checkpoint-N (full or PEFT adapters)"
    )
    p.add_argument("--control", help="control series folder")
    p.add_argument("--vector", required=True)
    p.add_argument("--trait", default="owl", help="trait whose probe prompts are used")
    p.add_argument("--prompts", help="probe prompt file instead of the trait's")
    p.add_argument("--layers", default="all")
    p.add_argument("--cache-dir", help="per-checkpoint cache (resume)")
    p.add_argument("--n-null", type=int, default=1000)
    p.add_argument("--n-boot", type=int, default=1000)
    p.add_argument("--correction", default="holm", choices=["holm", "bh"])
    p.add_argument("--out", help="results JSON")
    p.add_argument("--html", help="report HTML")
    p.set_defaults(func=cmd_track)

    p = sub.add_parser("screen", help="rank training samples by projection difference on a vector")
    _common(p)
    p.add_argument("--vector", required=True)
    p.add_argument("--data", required=True, help="JSONL of {user, response[, system]}")
    p.add_argument("--control-data", help="JSONL to compare with (permutation test)")
    p.add_argument("--top", type=int, default=10)
    p.add_argument("--out", help="results JSON")
    p.add_argument("--html", help="report HTML")
    p.set_defaults(func=cmd_screen)

    p = sub.add_parser(
        "distill", help="generate teacher numbers and train a LoRA student (checkpoint-N)"
    )
    _common(p)
    p.add_argument("--trait", default="owl")
    p.add_argument(
        "--benign", action="store_true", help="use the neutral system prompt (control student)"
    )
    p.add_argument("--n", type=int, default=48, help="number prompts to generate")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--save-every", type=int, default=10)
    p.add_argument("--rank", type=int, default=4)
    p.add_argument("--loss", default="kl", choices=["kl", "sft"])
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=cmd_distill)

    p = sub.add_parser("report", help="render report.html from a results JSON")
    _common(p, model=False)
    p.add_argument("--results", required=True)
    p.add_argument("--out", help="HTML path (default: beside the results)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("demo", help="the whole experiment on the embedded model, with a report")
    _common(p)
    p.add_argument("--trait", default="owl")
    p.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    p.add_argument("--quick", action="store_true", help="a smoke-test size run (~2-3 min)")
    p.add_argument("--steps", type=int)
    p.add_argument("--n-samples", type=int)
    p.set_defaults(func=cmd_demo)
    return ap


def _apply_config(ap: argparse.ArgumentParser, argv: Sequence[str]) -> argparse.Namespace:
    args = ap.parse_args(argv)
    if getattr(args, "config", None):
        path = Path(args.config)
        if not path.is_file():
            raise FileNotFoundError(f"config file {path} does not exist")
        cfg = yaml.safe_load(path.read_text()) or {}
        if not isinstance(cfg, dict):
            raise ValueError(f"config file {path} must be a mapping of option: value")
        given = {a.split("=")[0].lstrip("-").replace("-", "_") for a in argv if a.startswith("--")}
        for key, val in cfg.items():
            k = str(key).replace("-", "_")
            if not hasattr(args, k):
                raise ValueError(f"config file {path}: unknown option {key!r} for `{args.command}`")
            if k not in given:
                setattr(args, k, ",".join(map(str, val)) if isinstance(val, list) else val)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = build_parser()
    try:
        args = _apply_config(ap, argv)
        func: Handler = args.func
        return func(args)
    except (ValueError, KeyError, IndexError, FileNotFoundError, RuntimeError) as exc:
        msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"steerlens {argv[0] if argv else ''}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
