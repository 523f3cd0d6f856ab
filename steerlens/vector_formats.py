"""Steering vectors in the formats other tools deploy: llama.cpp control-vector GGUF, repeng's
``ControlVector``, steering-vectors' ``SteeringVector``, and a hub-style folder.

Layer numbering. steerlens layer ℓ is the residual stream after decoder block ℓ (0-based,
``blocks.{ℓ}.hook_resid_post``). llama.cpp adds tensor ``direction.{N}`` to the output of its
0-based block N (``build_cvec`` after each layer; ``llama-adapter.cpp``: "there's never a tensor
for layer 0", and the loader rejects ``direction.0``), repeng keys ``ControlVector.directions``
by the 0-based block whose output it reads and controls (``hidden_states[layer + 1]``), and
steering-vectors keys ``layer_activations`` by the 0-based decoder block it patches. So the index
is the same in all four; only llama.cpp cannot hold layer 0.

GGUF layout (llama.cpp ``--control-vector``, repeng ``export_gguf``): ``general.architecture =
"controlvector"``, ``controlvector.model_hint`` (the HF ``model_type``, as repeng writes),
``controlvector.layer_count`` (uint32, the number of directions, as repeng writes), one F32
tensor ``direction.{ℓ}`` of shape (d,) per layer. steerlens adds ``steerlens.meta`` (JSON:
provenance and diagnostics), which llama.cpp and repeng ignore, so a GGUF loads back with its
record. This module works on plain ``{layer: tensor}`` and meta dicts; ``SteeringVector``
wraps it.
"""

from __future__ import annotations

import importlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from steerlens.core.common import jsonable

ARCH = "controlvector"
META_KEY = "steerlens.meta"

Parts = tuple[dict[int, torch.Tensor], dict[str, Any], dict[str, Any]]


def model_hint(meta: Mapping[str, Any]) -> str:
    """The ``controlvector.model_hint``: the HF ``model_type`` if known, else the model name."""
    return str(meta.get("model_type") or meta.get("model") or "unknown")


def write_gguf(
    path: str | os.PathLike[str],
    directions: Mapping[int, torch.Tensor],
    meta: Mapping[str, Any],
    diagnostics: Mapping[str, Any],
) -> Path:
    """Write a llama.cpp control-vector GGUF (see the module doc for the layout)."""
    import gguf

    if 0 in directions:
        raise ValueError(
            "llama.cpp control vectors have no direction for layer 0 (it rejects direction.0): "
            "drop it with vec.select([l for l in vec.layers if l > 0]) before saving as .gguf"
        )
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    writer = gguf.GGUFWriter(str(tmp), ARCH)
    writer.add_string(f"{ARCH}.model_hint", model_hint(meta))
    writer.add_uint32(f"{ARCH}.layer_count", len(directions))
    blob = {"meta": dict(meta), "diagnostics": dict(diagnostics)}
    writer.add_string(META_KEY, json.dumps(jsonable(blob)))
    for layer, v in sorted(directions.items()):
        writer.add_tensor(f"direction.{int(layer)}", v.detach().cpu().float().numpy())
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    os.replace(tmp, p)
    return p


def _field(reader: Any, key: str) -> Any:
    f = reader.fields.get(key)
    return None if f is None else f.contents()


def read_gguf(path: str | os.PathLike[str]) -> Parts:
    """(directions, meta, diagnostics) of a control-vector GGUF (steerlens' or any other)."""
    import gguf

    p = Path(path)
    try:
        reader = gguf.GGUFReader(str(p))
    except Exception as exc:
        raise ValueError(f"{p} is not a readable GGUF file: {exc}") from exc
    arch = _field(reader, "general.architecture")
    if arch != ARCH:
        raise ValueError(
            f"{p}: GGUF architecture {arch!r} is not {ARCH!r}: this is a model, not a control vector"
        )
    dirs: dict[int, torch.Tensor] = {}
    for t in reader.tensors:
        head, _, num = t.name.partition(".")
        if head != "direction" or not num.isdigit():
            raise ValueError(f"{p}: unexpected tensor {t.name!r}; a control vector has direction.N")
        dirs[int(num)] = torch.from_numpy(np.array(t.data, dtype=np.float32).reshape(-1))
    if not dirs:
        raise ValueError(f"{p}: the control vector has no direction.N tensors")
    raw = _field(reader, META_KEY)
    blob = json.loads(raw) if raw else {}
    meta = dict(blob.get("meta") or {})
    if not blob:  # written by another tool: what the file says, and where it came from
        meta = {"model_type": _field(reader, f"{ARCH}.model_hint"), "source_format": "gguf"}
    return dirs, meta, dict(blob.get("diagnostics") or {})


# ------------------------------------------------------------------- other libraries


def _import(module: str, name: str, pip: str) -> Any:
    try:
        return getattr(importlib.import_module(module), name)
    except ImportError as exc:
        raise ImportError(
            f"{module} is not installed: `pip install {pip}`, or pass cls= (any class with the "
            f"same constructor)"
        ) from exc


def to_repeng(
    directions: Mapping[int, torch.Tensor], meta: Mapping[str, Any], cls: Any = None
) -> Any:
    """A repeng ``ControlVector(model_type, directions={layer: float32 ndarray})``."""
    cls = cls or _import("repeng", "ControlVector", "repeng")
    dirs = {int(k): v.detach().cpu().float().numpy().copy() for k, v in directions.items()}
    return cls(model_type=model_hint(meta), directions=dirs)


def from_repeng(obj: Any) -> Parts:
    """Parts from a repeng ``ControlVector`` (or anything with ``model_type`` and
    ``directions``). repeng's directions are unit PCA components that ``set_control`` scales by
    its coefficient, so their norm carries no activation units."""
    if not hasattr(obj, "directions") or not isinstance(obj.directions, Mapping):
        raise TypeError(f"{type(obj).__name__} is not a repeng ControlVector (no .directions dict)")
    dirs = {
        int(k): torch.as_tensor(np.asarray(v), dtype=torch.float32)
        for k, v in obj.directions.items()
    }
    meta = {"model_type": getattr(obj, "model_type", None), "source_format": "repeng"}
    return dirs, meta, {}


def to_steering_vectors(directions: Mapping[int, torch.Tensor], cls: Any = None) -> Any:
    """A steering-vectors ``SteeringVector(layer_activations, layer_type="decoder_block")``."""
    cls = cls or _import("steering_vectors", "SteeringVector", "steering-vectors")
    acts = {int(k): v.detach().cpu().float().clone() for k, v in directions.items()}
    return cls(layer_activations=acts, layer_type="decoder_block")


def from_steering_vectors(obj: Any) -> Parts:
    """Parts from a steering-vectors ``SteeringVector``; only ``decoder_block`` vectors (the
    residual stream after each block) are steerlens' site."""
    acts = getattr(obj, "layer_activations", None)
    if not isinstance(acts, Mapping):
        raise TypeError(f"{type(obj).__name__} is not a steering-vectors SteeringVector")
    kind = getattr(obj, "layer_type", "decoder_block")
    if kind != "decoder_block":
        raise ValueError(
            f"this steering-vectors vector patches {kind!r} outputs; steerlens steers the "
            "residual stream after each decoder block (layer_type='decoder_block')"
        )
    dirs = {int(k): torch.as_tensor(v, dtype=torch.float32).detach().cpu() for k, v in acts.items()}
    return dirs, {"source_format": "steering-vectors"}, {}


# ------------------------------------------------------------------------ hub folder

WEIGHTS_NAME = "steering_vector.safetensors"
GGUF_NAME = "control_vector.gguf"
CONFIG_NAME = "config.json"


def folder_config(
    directions: Mapping[int, torch.Tensor], meta: Mapping[str, Any], files: list[str]
) -> dict[str, Any]:
    """config.json of a :meth:`SteeringVector.save_pretrained` folder."""
    d = int(next(iter(directions.values())).shape[0])
    return {
        "library_name": "steerlens",
        "kind": "steering-vector",
        "layers": sorted(int(k) for k in directions),
        "hidden_size": d,
        "site": meta.get("site"),
        "files": files,
        "meta": jsonable(dict(meta)),
    }


def model_card(meta: Mapping[str, Any], norms: Mapping[int, float], files: list[str]) -> str:
    """README.md: hub front matter and the vector's provenance in words and a table."""
    base = meta.get("model_source") or meta.get("model")
    lines = ["---", "library_name: steerlens", "tags:", "- steering-vector", "- steerlens"]
    if isinstance(base, str) and base.count("/") == 1 and not base.startswith((".", "/")):
        lines.append(f"base_model: {base}")
    title = meta.get("name") or meta.get("trait") or "steering vector"
    lines += ["---", "", f"# {title}", ""]
    lines.append(
        f"A steerlens steering vector ({meta.get('method') or 'unknown method'}, "
        f"{meta.get('kind') or 'contrast'}) of `{meta.get('model')}`, read at "
        f"`{meta.get('site')}`, position `{meta.get('position')}`, {len(norms)} layer(s)."
    )
    lines += ["", "## Provenance", "", "| field | value |", "| --- | --- |"]
    for key in sorted(meta):
        val = meta[key]
        if isinstance(val, (str, int, float, bool)) or val is None:
            lines.append(f"| {key} | {json.dumps(jsonable(val))} |")
    lines += ["", "## Layers", "", "| layer | norm |", "| --- | --- |"]
    lines += [f"| {k} | {n:.4g} |" for k, n in norms.items()]
    lines += ["", "## Files", ""] + [f"- `{f}`" for f in files]
    lines += [
        "",
        "## Use",
        "",
        "```python",
        "import steerlens as sl",
        'vec = sl.SteeringVector.from_pretrained("this-folder")',
        "```",
    ]
    if GGUF_NAME in files:
        lines += [
            "",
            f"llama.cpp: `--control-vector {GGUF_NAME}` (layer numbers: see steerlens docs).",
        ]
    return "\n".join(lines) + "\n"
