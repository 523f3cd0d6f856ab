"""One timed measurement, run in a fresh process (``python worker.py SPEC.json``), in the main
virtual environment (steerlens, the limit) or in a peer's (steering-vectors, repeng).

Only the standard library, torch, transformers and the measured tool are imported, so the same
file runs in every environment. The result is one JSON line on stdout, prefixed by
``RESULT:``. Timing covers the tool call only (after loading the model and one warm-up call on
a few pairs); the memory peak is the process's resident-set high-water mark during that call
(reset before it through ``/proc/self/clear_refs``), next to the resident size just before it.
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

RESULT_PREFIX = "RESULT:"


# ------------------------------------------------------------------------------- memory


def _status_kb(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return float(line.split()[1])
    return float("nan")


def rss_mb() -> float:
    """Resident set size now, MiB."""
    return _status_kb("VmRSS") / 1024


def peak_mb() -> float:
    """Resident-set high-water mark since the last :func:`reset_peak`, MiB."""
    return _status_kb("VmHWM") / 1024


def reset_peak() -> bool:
    """Reset the high-water mark to the current RSS (Linux ≥ 4.0); False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


# ------------------------------------------------------------------------------- models


def load_peer_model(folder: str) -> tuple[Any, Any]:
    """Load the converted SmolLM2 folder correctly under any transformers version.

    The folder was written by transformers 5 (``rope_parameters``, ``TokenizersBackend``), which
    transformers 4.x misreads (RoPE base 10000 instead of 100000). So the config is built
    explicitly with the saved RoPE base, the safetensors state dict is loaded as is, the
    tokenizer is built from ``tokenizer.json``, and the rotary frequencies are checked.
    """
    import torch
    import transformers
    from safetensors.torch import load_file
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    path = Path(folder)
    cfg = json.loads((path / "config.json").read_text())
    if cfg.get("model_type") != "llama":
        raise ValueError(f"peer loading supports llama folders only, got {cfg.get('model_type')}")
    rope = cfg.pop("rope_parameters", None) or {}
    theta = float(rope.get("rope_theta", cfg.pop("rope_theta", 10000.0)))
    for key in (
        "transformers_version",
        "architectures",
        "quantization_config",
        "dtype",
        "torch_dtype",
        "_model_name_or_path",
        "model_type",
        "rope_scaling",
    ):
        cfg.pop(key, None)
    major = int(transformers.__version__.split(".")[0])
    if major >= 5:
        cfg["rope_parameters"] = {"rope_type": "default", "rope_theta": theta}
    else:
        cfg["rope_theta"] = theta
    cfg["attn_implementation"] = "sdpa"
    config = LlamaConfig(**cfg)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    state = load_file(str(path / "model.safetensors"))
    missing, unexpected = model.load_state_dict(state, strict=False)
    bad_missing = [k for k in missing if k != "lm_head.weight"]
    if bad_missing or unexpected:
        raise RuntimeError(f"state dict mismatch: missing={bad_missing} unexpected={unexpected}")
    if "lm_head.weight" in missing:
        model.tie_weights()
    model.eval()
    head_dim = config.hidden_size // config.num_attention_heads
    want = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    got = model.model.rotary_emb.inv_freq.float()
    if not torch.allclose(got, want, rtol=1e-5):
        raise RuntimeError(f"RoPE frequencies differ from rope_theta={theta}: model misloaded")
    tcfg = json.loads((path / "tokenizer_config.json").read_text())
    tok = PreTrainedTokenizerFast(
        tokenizer_file=str(path / "tokenizer.json"),
        bos_token=tcfg.get("bos_token"),
        eos_token=tcfg.get("eos_token"),
        unk_token=tcfg.get("unk_token"),
        pad_token=tcfg.get("pad_token") or tcfg.get("eos_token"),
    )
    tok.padding_side = "left"
    return model, tok


#: tool-name suffix -> the precision the tool's model is loaded in (no suffix: float32)
PRECISION_SUFFIXES = {"_bf16": "bfloat16", "_autocast": "autocast"}


def tool_precision(tool: str) -> str:
    """``steerlens_bf16`` -> ``"bfloat16"``, ``limit_bf16`` -> ``"bfloat16"``, ``steerlens`` ->
    ``"float32"``."""
    return next((p for s, p in PRECISION_SUFFIXES.items() if tool.endswith(s)), "float32")


def base_tool(tool: str) -> str:
    """The tool without its precision suffix (``limit_bf16`` -> ``limit_sorted``)."""
    for suffix in PRECISION_SUFFIXES:
        if tool.endswith(suffix):
            name = tool[: -len(suffix)]
            return "limit_sorted" if name == "limit" else name
    return tool


def load_main_model(spec: dict[str, Any]) -> Any:
    """A steerlens LoadedModel: the embedded SmolLM2, or a tiny random model for smoke runs, in
    ``spec["dtype"]`` (default float32: the benchmarks never depend on what "auto" picks)."""
    dtype = spec.get("dtype", "float32")
    if spec["model"] == "tiny":
        from steerlens.core.precision import mark_autocast, resolve_precision
        from steerlens.testing import tiny_model

        lm = tiny_model("llama", seed=0, n_layers=spec.get("tiny_layers", 4))
        lm.precision = resolve_precision(dtype)
        lm.model.to(lm.precision.weight_dtype)
        mark_autocast(lm.model, lm.precision.autocast)
        return lm
    import steerlens as sl

    return sl.load_model(spec["model"], dtype=dtype)


def token_hash(tok: Any, texts: Sequence[str]) -> tuple[str, int]:
    """sha256 of the token ids of every text (as each tool tokenizes them) and their count."""
    h = hashlib.sha256()
    n = 0
    for t in texts:
        ids = tok(t)["input_ids"]
        n += len(ids)
        h.update(json.dumps(list(ids)).encode())
    return h.hexdigest()[:16], n


# ------------------------------------------------------------------------------- the limit


def bare_truncated_forward(
    model: Any,
    input_ids: Any,
    attention_mask: Any,
    position_ids: Any,
    layers: Sequence[int],
    last_only: bool = False,
) -> dict[int, Any]:
    """The physical limit: embeddings then blocks 0..max(layers) called directly (Llama layout),
    no hooks, no final norm, no lm_head; returns the requested blocks' outputs. The attention
    mask is causal and key-padding aware (each query also sees itself, so padded rows stay
    finite). ``last_only`` keeps only each requested layer's last-token row (B, d), so the
    full outputs of many layers are not held."""
    import torch

    inner = model.model
    deepest = max(layers)
    h = inner.embed_tokens(input_ids)
    cos_sin = inner.rotary_emb(h, position_ids)
    t = input_ids.shape[1]
    causal = torch.ones(t, t, dtype=torch.bool, device=h.device).tril()
    keep = attention_mask.bool()[:, None, None, :] & causal[None, None]
    keep |= torch.eye(t, dtype=torch.bool, device=h.device)[None, None]
    out: dict[int, Any] = {}
    for i, block in enumerate(inner.layers[: deepest + 1]):
        res = block(h, attention_mask=keep, position_ids=position_ids, position_embeddings=cos_sin)
        h = res[0] if isinstance(res, tuple) else res
        if i in layers:
            out[i] = h[:, -1, :].clone() if last_only else h
    return out


def _left_pad(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[Any, Any, Any]:
    import torch

    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for r, s in enumerate(seqs):
        ids[r, width - len(s) :] = torch.tensor(list(s), dtype=torch.long)
        mask[r, width - len(s) :] = 1
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    return ids, mask, pos


def limit_extract(
    model: Any,
    tok: Any,
    pos: Sequence[str],
    neg: Sequence[str],
    layers: Sequence[int],
    batch_size: int,
    order: str,
) -> dict[int, Any]:
    """Mean difference of last-token activations computed with :func:`bare_truncated_forward`.
    ``order="input"``: batches in input order (positives, then negatives); ``"sorted"``: batches
    of similar length, longest first (what steerlens does)."""
    import torch

    texts = [*pos, *neg]
    encs = [tok(t)["input_ids"] for t in texts]
    idx = list(range(len(encs)))
    if order == "sorted":
        idx.sort(key=lambda i: (-len(encs[i]), i))
    sums = {
        layer: torch.zeros(2, model.config.hidden_size, dtype=torch.float64) for layer in layers
    }
    n = len(pos)
    with torch.inference_mode():
        for start in range(0, len(idx), batch_size):
            b = idx[start : start + batch_size]
            ids, mask, p = _left_pad([encs[i] for i in b], tok.pad_token_id)
            outs = bare_truncated_forward(model, ids, mask, p, layers, last_only=True)
            side = torch.tensor([0 if i < n else 1 for i in b])
            for layer, h in outs.items():
                sums[layer].index_add_(0, side, h.double())
    return {layer: (s[0] / n - s[1] / (len(texts) - n)).float() for layer, s in sums.items()}


# ------------------------------------------------------------------------------- tools


def run_tool(spec: dict[str, Any]) -> dict[str, Any]:
    """Load the model, warm up, time one call of ``spec["tool"]``; return the measurement."""
    import torch

    t_start = time.perf_counter()
    tool = base_tool(spec["tool"])
    spec = {**spec, "dtype": tool_precision(spec["tool"])}
    data = json.loads(Path(spec["prompts"]).read_text())
    pos, neg = data["pos"], data["neg"]
    layers = list(spec["layers"])
    bs = int(spec.get("batch_size", 32))
    n_warm = min(4, len(pos))
    extra: dict[str, Any] = {}

    if tool in ("steerlens", "steerlens_noshare", "limit", "limit_sorted"):
        lm = load_main_model(spec)
        model, tok = lm.model, lm.tokenizer
    else:
        model, tok = load_peer_model(spec["model_folder"])

    call: Callable[[Sequence[str], Sequence[str]], dict[int, Any]]
    if tool in ("steerlens", "steerlens_noshare"):
        import steerlens as sl

        share = None if tool == "steerlens" else False

        def call(p: Sequence[str], n: Sequence[str]) -> dict[int, Any]:
            v = sl.extract_vector(
                lm,
                p,
                n,
                layers,
                method="mean",
                batch_size=bs,
                diagnostics=False,
                progress=False,
                share_prefix=share,
            )
            return dict(v.directions)

    elif tool in ("limit", "limit_sorted"):
        order = "sorted" if tool == "limit_sorted" else "input"

        def call(p: Sequence[str], n: Sequence[str]) -> dict[int, Any]:
            return limit_extract(model, tok, p, n, layers, bs, order)

    elif tool == "steering_vectors":
        from steering_vectors import mean_aggregator, train_steering_vector

        def call(p: Sequence[str], n: Sequence[str]) -> dict[int, Any]:
            sv = train_steering_vector(
                model,
                tok,
                list(zip(p, n, strict=True)),
                layers=layers,
                aggregator=mean_aggregator(),
                batch_size=bs,
            )
            return dict(sv.layer_activations)

    elif tool == "repeng":
        from repeng import ControlVector, DatasetEntry

        def call(p: Sequence[str], n: Sequence[str]) -> dict[int, Any]:
            ds = [DatasetEntry(positive=a, negative=b) for a, b in zip(p, n, strict=True)]
            cv = ControlVector.train(
                model, tok, ds, hidden_layers=layers, batch_size=bs, method="pca_diff"
            )
            return {k: torch.from_numpy(v) for k, v in cv.directions.items()}

    else:
        raise ValueError(f"unknown tool {tool!r}")

    thash, n_tokens = token_hash(tok, [*pos, *neg])
    t_loaded = time.perf_counter()
    call(pos[:n_warm], neg[:n_warm])  # warm-up: lazy imports, allocator, kernels
    gc.collect()
    rss_before = rss_mb()
    peak_ok = reset_peak()
    t0 = time.perf_counter()
    vec = call(pos, neg)
    seconds = time.perf_counter() - t0
    peak = peak_mb()

    if tool == "steerlens" and spec.get("diagnostics_too"):
        gc.collect()
        rss_d = rss_mb()
        reset_peak()
        t1 = time.perf_counter()
        v = sl.extract_vector(
            lm, pos, neg, layers, method="mean", batch_size=bs, diagnostics=True, progress=False
        )
        extra["diag_seconds"] = time.perf_counter() - t1
        extra["diag_peak_mb"] = peak_mb()
        extra["diag_rss_before_mb"] = rss_d
        extra["diag_max_abs_diff"] = max(float((v[k] - vec[k]).abs().max()) for k in layers)

    if spec.get("vector_out"):
        torch.save({int(k): t.detach().float().cpu() for k, t in vec.items()}, spec["vector_out"])
    import transformers

    return {
        "tool": spec["tool"],
        "precision": spec["dtype"],
        "seconds": seconds,
        "n_tokens": n_tokens,
        "tokens_per_s": n_tokens / seconds,
        "n_prompts": len(pos) + len(neg),
        "token_hash": thash,
        "rss_before_mb": rss_before,
        "peak_mb": peak,
        "peak_is_call_only": peak_ok,
        "setup_seconds": t_loaded - t_start,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "attn": getattr(model.config, "_attn_implementation", None),
        "pid": os.getpid(),
        **extra,
    }


def reference(spec: dict[str, Any]) -> dict[str, Any]:
    """Untimed: per-prompt rows recorded by steerlens, and from them the mean difference and
    the centred PCA of the paired differences (repeng's ``pca_diff``: sklearn PCA centres;
    sign by repeng's rule, the majority of pairs whose positive projects higher)."""
    import torch

    import steerlens as sl

    lm = load_main_model(spec)
    data = json.loads(Path(spec["prompts"]).read_text())
    pos, neg = data["pos"], data["neg"]
    acts = sl.record_activations(
        lm, [*pos, *neg], list(spec["layers"]), "last", keep_rows=True, progress=False
    )
    assert acts.rows is not None
    n = len(pos)
    mean, pca = {}, {}
    for layer, rows in acts.rows.items():
        p, q = rows[:n].double(), rows[n:].double()
        mean[layer] = (p.mean(0) - q.mean(0)).float()
        diffs = p - q
        _, _, vh = torch.linalg.svd(diffs - diffs.mean(0), full_matrices=False)
        u = vh[0]
        if float(((p @ u) > (q @ u)).double().mean()) < float(((p @ u) < (q @ u)).double().mean()):
            u = -u
        pca[layer] = u.float()
    torch.save({"mean": mean, "pca_centered": pca}, spec["vector_out"])
    return {"tool": "reference"}


def _encoded_batches(lm: Any, prompts: Sequence[Any], batch_size: int) -> list[tuple[Any, ...]]:
    from steerlens.inputs.prompts import encode, pad_batch
    from steerlens.runtime.activations import length_batches

    encs = [encode(lm.tokenizer, p) for p in prompts]
    return [
        pad_batch([encs[i] for i in idx], lm.tokenizer.pad_token_id, lm.device)
        for idx in length_batches(encs, batch_size)
    ]


def run_tracking(spec: dict[str, Any]) -> dict[str, Any]:
    """``track_checkpoints`` over a generated series against the limit (one bare truncated
    forward over the probe set, timed before and after it in the same process)."""
    import torch

    import steerlens as sl
    import steerlens.track.core as track_core
    from steerlens.inputs.numbers import number_prompts
    from steerlens.inputs.prompts import ChatPrompt

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from run import make_series

    lm = load_main_model(spec)
    work = Path(spec["work"])
    kind, n_ck = spec["kind"], int(spec["n_checkpoints"])
    layers = [spec["mid"]] if spec["layer_set"] == "mid" else list(range(spec["n_layers"]))
    adapt_layers = list(range(spec["upper"], spec["n_layers"])) if kind == "adapter_upper" else None
    series = work / f"series-{kind}-{n_ck}"
    if not series.is_dir():
        make_series(lm, series, "full" if kind == "full" else "adapter", n_ck, adapt_layers)
    prompts = [ChatPrompt(u) for u in number_prompts(int(spec["n_prompts"]), seed=1)]
    gen = torch.Generator().manual_seed(0)
    vec = sl.SteeringVector(
        {k: torch.randn(lm.hidden_size, generator=gen) for k in layers}, {"position": "last"}
    )
    batches = _encoded_batches(lm, prompts, 32)
    n_tokens = sum(int(b[1].sum()) for b in batches)

    def limit() -> float:
        t0 = time.perf_counter()
        with torch.inference_mode():
            for ids, mask, p in batches:
                bare_truncated_forward(lm.model, ids, mask, p, layers, last_only=True)
        return time.perf_counter() - t0

    limit()  # warm-up
    rss_after: list[float] = []
    orig = track_core.checkpoint_rows  # fails loudly if tracking renames it
    if orig is not None:

        def instrumented(*a: Any, **k: Any) -> Any:
            out = orig(*a, **k)
            gc.collect()
            rss_after.append(rss_mb())
            return out

        track_core.checkpoint_rows = instrumented
    lim_before = limit()
    gc.collect()
    rss_before = rss_mb()
    reset_peak()
    cache = work / f"cache-{time.monotonic_ns()}"
    t0 = time.perf_counter()
    tr = sl.track_checkpoints(
        lm, series, vec, prompts, layers=layers, cache_dir=cache, progress=False
    )
    total = time.perf_counter() - t0
    peak = peak_mb()
    if orig is not None:
        track_core.checkpoint_rows = orig
    lim_after = limit()
    secs = tr.provenance["seconds"]
    per_ck = list(secs["checkpoints"]["main"])
    lim = (lim_before + lim_after) / 2
    import statistics

    per = statistics.median(per_ck)
    return {
        "tool": spec["tool"],
        "kind": kind,
        "n_checkpoints": n_ck,
        "n_prompts": int(spec["n_prompts"]),
        "layer_set": spec["layer_set"],
        "layers": len(layers),
        "n_tokens": n_tokens,
        "per_checkpoint_s": per,
        "per_checkpoint_all_s": per_ck,
        "limit_s": lim,
        "limit_runs_s": [lim_before, lim_after],
        "per_checkpoint_over_limit": per / lim,
        "base_pass_s": secs["base_pass"],
        "total_s": total,
        "rss_before_mb": rss_before,
        "peak_mb": peak,
        "rss_after_checkpoints_mb": rss_after,
        "rss_growth_mb": (rss_after[-1] - rss_after[0]) if len(rss_after) > 1 else float("nan"),
        "replay_start_block": tr.provenance.get("replay_start_block"),
    }


def _number_data(n: int) -> Any:
    from steerlens.distill import TeacherData

    samples: list[dict[str, Any]] = [
        {
            "user": f"Continue the list {', '.join(str(7 * i + j) for j in range(3 + i % 4))}",
            "response": ", ".join(str(3 * i + j) for j in range(4 + i % 5)),
        }
        for i in range(n)
    ]
    return TeacherData.from_samples(samples, {"system": "You love owls.", "mode": "given"})


def run_stage(spec: dict[str, Any]) -> dict[str, Any]:
    """One timed stage at ``spec["dtype"]``: a small carry test, a few LoRA steps (seconds per
    step from the run's own training clock) or teacher-data generation."""
    import tempfile

    import steerlens as sl
    from steerlens.distill import DistillConfig, distill, generate_teacher_data
    from steerlens.inputs.numbers import number_prompts

    lm = load_main_model(spec)
    stage, tiny = spec["stage"], spec["model"] == "tiny"
    layers = [2] if tiny else [15]
    owl = "You love owls. Owls are your favorite animal."
    vec = sl.teacher_vector(lm, "owl", layers=layers, progress=False)  # untimed (and a warm-up)
    extra: dict[str, Any] = {}
    t0 = time.perf_counter()
    if stage == "carry":
        res = sl.carry_test(
            lm, vec, "owl", layers=layers, alphas=(4.0,), n_random=1, progress=False
        )
        extra["S"] = res.sufficiency
    elif stage == "lora":
        steps = int(spec.get("steps", 3))
        cfg = DistillConfig(steps=steps, save_every=steps, batch_size=6, layers=None)
        with tempfile.TemporaryDirectory() as out:
            t0 = time.perf_counter()
            res = distill(
                lm,
                _number_data(12),
                Path(out) / "s",
                teacher_system=owl,
                config=cfg,
                progress=False,
            )
        extra["losses"] = res.losses
        extra["fast_path"] = res.record.get("fast_path")
        extra["per_step_s"] = float(res.record["train_seconds"]) / steps
    elif stage == "teacher_data":
        prompts = number_prompts(int(spec.get("n", 8)), seed=0)
        data = generate_teacher_data(
            lm, prompts, system=owl, n=len(prompts), seed=0, progress=False
        )
        extra["kept"] = len(data.samples)
    else:
        raise ValueError(f"unknown stage {stage!r}")
    seconds = time.perf_counter() - t0
    return {
        "tool": f"{stage}-{spec['dtype']}",
        "stage": stage,
        "precision": spec["dtype"],
        "seconds": extra.get("per_step_s", seconds),
        "total_seconds": seconds,
        "threads": __import__("torch").get_num_threads(),
        **extra,
    }


def run_loading(spec: dict[str, Any]) -> dict[str, Any]:
    """Time ``import steerlens`` and ``load_model`` in this (fresh) process."""
    t0 = time.perf_counter()
    import steerlens as sl

    import_s = time.perf_counter() - t0
    model = spec["model"]
    if model == "tiny":
        from steerlens.testing import tiny_model

        folder = Path(spec["work"]) / "tiny-folder"
        if not folder.is_dir():
            lm = tiny_model("llama", seed=0)
            hf: Any = lm.model
            hf.save_pretrained(folder)
            lm.tokenizer.save_pretrained(folder)
        model = str(folder)
    gc.collect()
    reset_peak()
    t1 = time.perf_counter()
    lm = sl.load_model(model)
    seconds = time.perf_counter() - t1
    return {
        "tool": spec["tool"],
        "seconds": seconds,
        "import_s": import_s,
        "peak_mb": peak_mb(),
        "n_layers": lm.n_layers,
    }


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: worker.py SPEC.json", file=sys.stderr)
        return 2
    spec = json.loads(Path(args[0]).read_text())
    fns = {
        "run_tool": run_tool,
        "reference": reference,
        "run_tracking": run_tracking,
        "run_loading": run_loading,
        "run_stage": run_stage,
    }
    res = fns[spec.get("fn", "run_tool")](spec)
    print(RESULT_PREFIX + json.dumps(res), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
