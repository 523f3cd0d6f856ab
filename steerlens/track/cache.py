"""The per-checkpoint row cache of :func:`steerlens.track.track_checkpoints`: resumable, and a
corrupt entry is detected and recomputed, never reused."""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from safetensors.torch import save as serialize_tensors

from steerlens.core.common import atomic_write_bytes, atomic_write_text, sha256_bytes, sha256_file

__all__ = ["CACHE_FORMAT", "RowCache", "tokenizer_key"]

CACHE_FORMAT = 1


class RowCache:
    """Per-checkpoint rows on disk: ``<key>.safetensors`` (``rows.{ℓ}``) and ``<key>.json``
    (the full key, shapes and the sha256 of the safetensors file). Written atomically, JSON
    last; an entry whose JSON is missing, unparsable, for another key, or whose checksum or
    shapes do not match is recomputed (with a warning), never reused. ``root=None``: no cache
    (every load misses, every save is skipped)."""

    def __init__(self, root: Path | None, common: Mapping[str, Any]) -> None:
        self.root = root
        self.common = dict(common)
        if root is not None:
            root.mkdir(parents=True, exist_ok=True)

    def fields(self, signature: str) -> dict[str, Any]:
        return dict(self.common, checkpoint=signature, format=CACHE_FORMAT)

    def key(self, signature: str) -> str:
        return sha256_bytes(json.dumps(self.fields(signature), sort_keys=True, default=str))[:24]

    def paths(self, signature: str) -> tuple[Path, Path]:
        assert self.root is not None
        k = self.key(signature)
        return self.root / f"{k}.safetensors", self.root / f"{k}.json"

    def _read(
        self, signature: str, layers: Sequence[int], n: int, d: int
    ) -> dict[int, torch.Tensor]:
        """The entry's rows; raises ValueError (or a read error) for any broken entry."""
        st_path, js_path = self.paths(signature)
        meta = json.loads(js_path.read_text())
        if meta.get("key") != json.loads(json.dumps(self.fields(signature), default=str)):
            raise ValueError("the entry was written for another key")
        if sha256_file(st_path) != meta.get("sha256"):
            raise ValueError("checksum mismatch (truncated or modified file)")
        tensors = load_file(str(st_path))
        rows = {layer: tensors[f"rows.{layer}"].float() for layer in layers}
        for layer, r in rows.items():
            if tuple(r.shape) != (n, d) or not torch.isfinite(r).all():
                raise ValueError(f"layer {layer} rows: shape {tuple(r.shape)}, want {(n, d)}")
        return rows

    def load(
        self, signature: str, layers: Sequence[int], n: int, d: int
    ) -> dict[int, torch.Tensor] | None:
        """The cached (n, d) rows per layer, or None (no cache, no entry, or a broken one)."""
        if self.root is None:
            return None
        st_path, js_path = self.paths(signature)
        if not js_path.is_file():
            return None
        try:
            return self._read(signature, layers, n, d)
        except Exception as exc:  # noqa: BLE001 - any broken entry is recomputed
            warnings.warn(
                f"ignoring corrupt cache entry {st_path.name} ({exc}); recomputing", stacklevel=3
            )
            return None

    def save(self, signature: str, rows: Mapping[int, torch.Tensor], dtype: torch.dtype) -> None:
        if self.root is None:
            return
        st_path, js_path = self.paths(signature)
        tensors = {f"rows.{k}": v.to(dtype).contiguous() for k, v in rows.items()}
        atomic_write_bytes(st_path, serialize_tensors(tensors))
        meta = {
            "key": self.fields(signature),
            "sha256": sha256_file(st_path),
            "written": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        atomic_write_text(js_path, json.dumps(meta, default=str))


def tokenizer_key(tok: Any) -> str:
    """A short hash of what makes a tokenizer's encodings (class, size, chat template, name)."""
    parts = [
        type(tok).__name__,
        str(len(tok)),
        str(getattr(tok, "chat_template", "")),
        str(getattr(tok, "name_or_path", "")),
    ]
    return sha256_bytes("|".join(parts))[:16]
