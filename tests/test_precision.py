"""Precision: detection of native bfloat16, "auto", bfloat16 weights and bfloat16 autocast end
to end on tiny models. bf16 results are compared with float32 at bf16 tolerances only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

import steerlens as sl
from steerlens.core.precision import (
    PRECISION_ENV,
    compute_context,
    cpu_bf16_features,
    native_bf16,
    resolve_precision,
)
from steerlens.distill import DistillConfig, TeacherData, distill
from steerlens.loading.models import describe
from steerlens.testing import tiny_model

PROMPTS = [f"count {i} {i + 1} {i + 2} and then some more" for i in range(6)]
NEG = [f"tell me about {w} please" for w in ("cats", "rain", "maps", "ink", "salt", "wood")]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    lm = tiny_model("llama", seed=3)
    out = tmp_path_factory.mktemp("tiny") / "m"
    lm.model.save_pretrained(out)
    lm.tokenizer.save_pretrained(out)
    return out


def _cos(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.double(), b.double(), dim=0))


def test_cpu_flags_and_native_detection() -> None:
    amx = "processor : 0\nflags : fpu sse avx2 avx512f amx_bf16 amx_tile avx512_bf16\n"
    assert cpu_bf16_features(amx) == ["amx_bf16", "avx512_bf16"]
    assert cpu_bf16_features("flags : fpu sse avx2 fma\n") == []
    ok, why = native_bf16("cpu", cpuinfo=amx)
    assert ok and "amx_bf16" in why
    cap = torch.backends.cpu.get_cpu_capability().upper()
    ok, why = native_bf16("cpu", cpuinfo="flags : avx2\n")
    assert ok == ("AMX" in cap or "BF16" in cap)
    assert why


def test_auto_follows_hardware_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(PRECISION_ENV, raising=False)
    p = resolve_precision("auto", "cpu")
    ok, why = native_bf16("cpu")
    assert p.name == ("bfloat16" if ok else "float32") and p.reason == why
    assert p.requested == "auto"
    monkeypatch.setenv(PRECISION_ENV, "autocast")
    p = resolve_precision(None, "cpu")
    assert (p.name, p.weight_dtype, p.autocast) == ("autocast", torch.float32, True)
    assert PRECISION_ENV in p.reason
    assert resolve_precision("bfloat16").weight_dtype == torch.bfloat16  # explicit wins
    assert resolve_precision(torch.float32).name == "float32"
    monkeypatch.setenv(PRECISION_ENV, "fp8")
    with pytest.raises(ValueError, match=PRECISION_ENV):
        resolve_precision("auto")
    with pytest.raises(ValueError, match="unknown precision 'half'"):
        resolve_precision("half")


def _vector(lm: sl.LoadedModel) -> sl.SteeringVector:
    return sl.extract_vector(lm, PROMPTS, NEG, "all", method="mean", progress=False)


def test_bf16_and_autocast_record_in_float32_near_float32(folder: Path) -> None:
    ref = sl.load_model(folder, dtype="float32")
    v32 = _vector(ref)
    assert v32.meta["precision"]["name"] == "float32"
    for name, wdtype in (("bfloat16", torch.bfloat16), ("autocast", torch.float32)):
        lm = sl.load_model(folder, dtype=name)
        assert lm.dtype == wdtype and describe(lm)["precision"]["name"] == name
        assert lm.fingerprint != ref.fingerprint  # caches never mix precisions
        acts = sl.record_activations(lm, PROMPTS, "all", keep_rows=True, progress=False)
        assert all(m.dtype == torch.float32 for m in acts.means.values())
        assert acts.rows is not None and acts.rows[0].dtype == torch.float32
        v = _vector(lm)
        assert sl.Provenance.from_meta(v.meta).precision == lm.compute_precision.to_dict()
        for layer in v32.layers:
            a, b = v[layer], v32[layer]
            assert not torch.equal(a, b)  # bf16 really ran
            assert _cos(a, b) > 0.98  # bf16 tolerance, never float32's


def test_autocast_applies_to_forwards(folder: Path) -> None:
    lm = sl.load_model(folder, dtype="autocast")
    seen: list[torch.dtype] = []
    proj = lm.layout.blocks[0].self_attn.q_proj  # type: ignore[union-attr]
    h = proj.register_forward_hook(lambda _m, _a, out: seen.append(out.dtype))
    try:
        sl.record_activations(lm, PROMPTS[:2], [1], progress=False)
        lm.generate(PROMPTS[:1], max_new_tokens=2)
        with compute_context(sl.load_model(folder, dtype="float32").model):
            assert not torch.is_autocast_enabled("cpu")
    finally:
        h.remove()
    assert seen and all(d == torch.bfloat16 for d in seen)


def test_adapter_on_loaded_base_keeps_its_precision(tmp_path: Path, folder: Path) -> None:
    from peft import LoraConfig, get_peft_model

    base = sl.load_model(folder, dtype="autocast")
    pm = get_peft_model(
        tiny_model("llama", seed=3).model,
        LoraConfig(r=2, target_modules=["q_proj"], init_lora_weights=False),
    )
    pm.save_pretrained(tmp_path / "ad")
    loaded = sl.load_model(tmp_path / "ad", base=base)
    assert loaded.compute_precision.name == "autocast"


def _data() -> TeacherData:
    samples: list[dict[str, Any]] = [
        {"user": f"Continue {i}, {i + 1}", "response": f"{i + 2}, {i + 3}, {i + 4}"}
        for i in range(6)
    ]
    return TeacherData.from_samples(samples, {"system": "You love owls.", "mode": "given"})


@pytest.mark.parametrize("name", ["bfloat16", "autocast"])
def test_distill_bf16_keeps_float32_master_weights(tmp_path: Path, folder: Path, name: str) -> None:
    lm = sl.load_model(folder, dtype=name)
    cfg = DistillConfig(layers=(2,), steps=3, save_every=3, lr=1e-2)
    res = distill(lm, _data(), tmp_path / name, config=cfg, progress=False)
    rec = res.record
    assert rec["precision"]["name"] == name and rec["precision"]["student_autocast"]
    assert rec["lineage"]["precision"] == name
    assert all(torch.isfinite(torch.tensor(rec["losses"])))
    from safetensors.torch import load_file

    w = load_file(str(res.checkpoints[-1] / "adapter_model.safetensors"))
    assert w and all(t.dtype == torch.float32 for t in w.values())
    assert any(float(t.abs().max()) > 0 for k, t in w.items() if "lora_B" in k)  # it trained
    ref = distill(
        sl.load_model(folder, dtype="float32"),
        _data(),
        tmp_path / "f32",
        config=cfg,
        progress=False,
    )
    assert "precision" not in ref.record["lineage"]  # float32 lineages are as before
    # bf16 tolerance on the first loss (same batch, same init), never float32's
    assert abs(rec["losses"][0] - ref.record["losses"][0]) < 0.05 * abs(ref.record["losses"][0])
