"""The benchmark code runs end to end on a tiny model (no peer environments), its physical-limit
forward computes the same activations as the HF model, and the peer loader reads a saved folder
exactly. These check the benchmark machinery, not speed."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

import steerlens as sl
from steerlens.inputs.prompts import encode, pad_batch
from steerlens.testing import tiny_model

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def bench() -> Any:
    sys.path.insert(0, str(BENCH))
    try:
        yield importlib.import_module("run")
    finally:
        sys.path.remove(str(BENCH))


@pytest.fixture(scope="module")
def lm() -> sl.LoadedModel:
    return tiny_model("llama", seed=0)


def test_bare_truncated_forward_matches_hf_hidden_states(bench: Any, lm: sl.LoadedModel) -> None:
    texts = ["hello there, owl", "a much longer prompt with several more tokens in it", "hi"]
    encs = [encode(lm.tokenizer, t) for t in texts]
    ids, mask, pos = pad_batch(encs, lm.tokenizer.pad_token_id)
    with torch.inference_mode():
        out = bench.worker.bare_truncated_forward(lm.model, ids, mask, pos, [1, 2])
        ref = lm.model(
            input_ids=ids, attention_mask=mask, position_ids=pos, output_hidden_states=True
        ).hidden_states
    assert sorted(out) == [1, 2]
    real = mask.bool()
    for layer in (1, 2):
        # hidden_states[ℓ + 1] is block ℓ's output; compare only real (non-pad) tokens
        torch.testing.assert_close(out[layer][real], ref[layer + 1][real], atol=1e-5, rtol=1e-4)


def test_peer_loader_reads_saved_folder_exactly(
    bench: Any, lm: sl.LoadedModel, tmp_path: Path
) -> None:
    hf: Any = lm.model
    hf.save_pretrained(tmp_path)
    lm.tokenizer.save_pretrained(tmp_path)
    model, tok = bench.worker.load_peer_model(str(tmp_path))
    text = "<|im_start|>user\n12, 7, 3<|im_end|>\n"
    assert tok(text)["input_ids"] == lm.tokenizer(text)["input_ids"]
    ids = torch.tensor([lm.tokenizer(text)["input_ids"]])
    with torch.inference_mode():
        torch.testing.assert_close(model(ids).logits, lm.model(ids).logits)


def test_extraction_tiny_runs_and_agrees(bench: Any, tmp_path: Path) -> None:
    paths = bench.main(["extraction", "--tiny", "--layers-only", "layer2", "--out", str(tmp_path)])
    rec = json.loads(paths["extraction"].read_text())
    assert rec["mode"] == "tiny" and len(rec["loadavg_start"]) == 3
    assert rec["agreement"]["same_tokens"] is True
    for tool in ("steerlens", "limit", "limit_sorted"):
        assert rec["agreement"]["layer2"][tool]["min"] > 0.9999, tool
        row = rec["summary"]["layer2"][tool]
        assert row["tokens_per_s"] > 0 and row["peak_mb"] > 0
    n_tokens = {r["n_tokens"] for r in rec["runs"]}
    assert len(n_tokens) == 1 and n_tokens.pop() > 6 * 2 * 20  # 12 chat prompts, > 20 tokens each
    s = rec["summary"]["layer2"]
    ratio = s["steerlens"]["tokens_per_s"] / s["limit"]["tokens_per_s"]
    assert s["steerlens"]["vs_limit"] == pytest.approx(ratio)
    # bfloat16 rows: the vectors agree with float32 at bf16 tolerance (never float32's), and
    # their ratios against both limits are recorded
    for tool in ("steerlens_bf16", "steerlens_autocast", "limit_bf16"):
        assert {r["precision"] for r in rec["runs"] if r["tool"] == tool} != {"float32"}
        assert rec["agreement"]["layer2"][tool]["min"] > 0.98, tool
    bf = s["steerlens_bf16"]
    assert bf["vs_limit_bf16"] == pytest.approx(
        bf["tokens_per_s"] / s["limit_bf16"]["tokens_per_s"]
    )
    assert bf["vs_limit"] > 0 and s["steerlens_autocast"]["vs_limit_sorted"] > 0
    # the README tables render from these results
    readme = tmp_path / "README.md"
    readme.write_text("# B\n\n<!-- results:start -->\nold\n<!-- results:end -->\n\ntail\n")
    bench.update_readme(tmp_path, readme)
    text = readme.read_text()
    assert "old" not in text and "| layer2 | limit_sorted |" in text and text.endswith("tail\n")


def test_tracking_and_loading_tiny(bench: Any, tmp_path: Path) -> None:
    paths = bench.main(["tracking", "--tiny", "--out", str(tmp_path)])
    rec = json.loads(paths["tracking"].read_text())
    assert "skipped" not in rec, rec.get("skipped")
    kinds = {r["kind"]: r for r in rec["runs"]}
    assert set(kinds) == {"adapter", "full"}
    for r in kinds.values():
        assert len(r["per_checkpoint_all_s"]) == r["n_checkpoints"] == 2
        assert r["limit_s"] > 0 and r["per_checkpoint_s"] > 0
        assert len(r["rss_after_checkpoints_mb"]) == 2
    paths = bench.main(["loading", "--tiny", "--out", str(tmp_path)])
    rec = json.loads(paths["loading"].read_text())
    assert rec["runs"][0]["n_layers"] == 4 and rec["summary"]["load-tiny"]["seconds"] > 0
