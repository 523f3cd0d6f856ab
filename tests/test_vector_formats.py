"""Vectors out and back in: llama.cpp control-vector GGUF, repeng / steering-vectors objects,
and the hub-style save_pretrained folder."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import steerlens as sl


def _vec(layers: tuple[int, ...] = (1, 3, 5), d: int = 16) -> sl.SteeringVector:
    g = torch.Generator().manual_seed(0)
    dirs = {k: torch.randn(d, generator=g) for k in layers}
    meta = {
        "model": "HuggingFaceTB/SmolLM2-135M-Instruct",
        "model_source": "HuggingFaceTB/SmolLM2-135M-Instruct",
        "model_type": "llama",
        "model_fingerprint": "abc123",
        "method": "mean",
        "position": "last",
        "seed": 0,
        "kind": "contrast",
    }
    diag = {"split_half": {"1": {"mean": 0.9, "lo": 0.8, "hi": 0.95}}, "n_pos": 8, "n_neg": 8}
    return sl.SteeringVector(dirs, meta, diag)


def _equal(a: sl.SteeringVector, b: sl.SteeringVector) -> None:
    assert a.layers == b.layers
    for k in a.layers:
        assert torch.equal(a[k], b[k]), k


def test_gguf_has_llama_cpp_keys_and_tensors_and_loads_back(tmp_path: Path) -> None:
    import gguf

    vec = _vec()
    path = vec.save(tmp_path / "v.gguf")
    reader = gguf.GGUFReader(str(path))
    assert reader.fields["general.architecture"].contents() == "controlvector"
    assert reader.fields["controlvector.model_hint"].contents() == "llama"
    count = reader.fields["controlvector.layer_count"]
    assert count.contents() == 3 and count.types == [gguf.GGUFValueType.UINT32]
    names = {t.name: t for t in reader.tensors}
    assert sorted(names) == ["direction.1", "direction.3", "direction.5"]
    for k in vec.layers:
        t = names[f"direction.{k}"]
        assert t.tensor_type == gguf.GGMLQuantizationType.F32 and list(t.shape) == [16]
        assert np.array_equal(np.asarray(t.data), vec[k].numpy())
    back = sl.SteeringVector.load(path)
    _equal(back, vec)
    assert back.meta == vec.meta and back.diagnostics == json.loads(json.dumps(vec.diagnostics))
    with pytest.raises(ValueError, match="no direction for layer 0"):
        _vec((0, 2)).save(tmp_path / "zero.gguf")


def test_foreign_gguf_control_vector_loads_and_a_model_gguf_is_refused(tmp_path: Path) -> None:
    import gguf

    dirs = {2: np.arange(8, dtype=np.float32), 4: -np.ones(8, dtype=np.float32)}
    path = tmp_path / "repeng.gguf"  # the layout repeng's export_gguf writes
    w = gguf.GGUFWriter(str(path), "controlvector")
    w.add_string("controlvector.model_hint", "mistral")
    w.add_uint32("controlvector.layer_count", len(dirs))
    for layer, v in dirs.items():
        w.add_tensor(f"direction.{layer}", v)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    vec = sl.SteeringVector.load(path)
    assert vec.layers == [2, 4] and vec.meta["model_type"] == "mistral"
    assert torch.equal(vec[2], torch.arange(8, dtype=torch.float32))
    model = tmp_path / "model.gguf"
    w = gguf.GGUFWriter(str(model), "llama")
    w.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(ValueError, match="not a control vector"):
        sl.SteeringVector.load(model)


@dataclasses.dataclass
class ControlVectorStandIn:
    """repeng 0.4.0's ``ControlVector`` fields (repeng needs numpy<2, so it is not installed)."""

    model_type: str
    directions: dict[int, np.ndarray]


@dataclasses.dataclass
class SteeringVectorStandIn:
    """steering-vectors 0.12.2's ``SteeringVector`` fields (it needs transformers<5)."""

    layer_activations: dict[int, torch.Tensor]
    layer_type: str = "decoder_block"


def _real(module: str, name: str) -> Any:
    return getattr(importlib.import_module(module), name)


@pytest.mark.parametrize(
    ("module", "name", "stand_in"),
    [
        ("repeng", "ControlVector", ControlVectorStandIn),
        ("steering_vectors", "SteeringVector", SteeringVectorStandIn),
    ],
)
def test_repeng_and_steering_vectors_round_trip(module: str, name: str, stand_in: Any) -> None:
    vec = _vec()
    to = vec.to_repeng if module == "repeng" else vec.to_steering_vectors
    back = (
        sl.SteeringVector.from_repeng
        if module == "repeng"
        else sl.SteeringVector.from_steering_vectors
    )
    installed = importlib.util.find_spec(module) is not None
    if installed:  # the real class, when the library is installed
        obj = to()
        assert isinstance(obj, _real(module, name))
    else:
        with pytest.raises(ImportError, match="pip install"):
            to()
    obj = to(cls=stand_in)
    if module == "repeng":
        assert obj.model_type == "llama" and sorted(obj.directions) == vec.layers
        assert all(
            isinstance(v, np.ndarray) and v.dtype == np.float32 for v in obj.directions.values()
        )
    else:
        assert obj.layer_type == "decoder_block" and sorted(obj.layer_activations) == vec.layers
    _equal(back(obj), vec)
    with pytest.raises(ValueError, match="decoder_block"):
        sl.SteeringVector.from_steering_vectors(SteeringVectorStandIn({1: torch.ones(4)}, "mlp"))
    with pytest.raises(TypeError, match="not a repeng"):
        sl.SteeringVector.from_repeng(object())


def test_save_pretrained_folder(tmp_path: Path) -> None:
    vec = _vec()
    d = vec.save_pretrained(tmp_path / "owl-vector")
    files = sorted(p.name for p in d.iterdir())
    assert files == [
        "README.md",
        "config.json",
        "control_vector.gguf",
        "steering_vector.safetensors",
    ]
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["layers"] == [1, 3, 5] and cfg["hidden_size"] == 16
    assert cfg["meta"]["model_fingerprint"] == "abc123"
    card = (d / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: steerlens\n")
    assert "base_model: HuggingFaceTB/SmolLM2-135M-Instruct" in card
    assert '| model_fingerprint | "abc123" |' in card and "| 3 |" in card
    for back in (sl.SteeringVector.from_pretrained(d), sl.SteeringVector.load(d)):
        _equal(back, vec)
        assert back.meta == vec.meta
    _equal(sl.SteeringVector.load(d / "control_vector.gguf"), vec)
    no_gguf = _vec((0, 1)).save_pretrained(tmp_path / "with-zero")
    assert not (no_gguf / "control_vector.gguf").exists()
    shared = torch.ones(4)  # one tensor at every layer (safetensors refuses shared memory)
    one = sl.SteeringVector({1: shared, 2: shared})
    _equal(sl.SteeringVector.load(one.save(tmp_path / "shared.safetensors")), one)
    with pytest.raises(FileNotFoundError, match="save_pretrained"):
        sl.SteeringVector.from_pretrained(tmp_path)
