"""One checkpoint of a series (an HF ``checkpoint-N`` folder, full weights or a PEFT adapter):
:class:`Checkpoint`, recognised and validated before anything loads."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from safetensors import safe_open

from steerlens.core.common import sha256_file
from steerlens.loading.models import ModelLoadError

CheckpointKind = Literal["full", "adapter", "base"]
CHECKPOINT_DIR_RE = re.compile(r"^checkpoint-(\d+)$")
_FULL_WEIGHTS = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
_ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
# Config keys that do not change the computation (ignored when deciding to reuse a model copy).
VOLATILE_CONFIG_KEYS = ("transformers_version", "_name_or_path", "torch_dtype", "dtype")


def fix_hint(path: Path) -> str:
    return (
        f"Re-save it (trainer.save_model / model.save_pretrained), or move {path} out of the "
        "series folder to skip it (CheckpointSeries.discover(..., on_error='skip') skips it "
        "with a warning)"
    )


@dataclass(frozen=True)
class Checkpoint:
    """One member of a series: its training step, folder and kind."""

    step: int
    path: Path
    kind: CheckpointKind

    @property
    def name(self) -> str:
        return "base" if self.kind == "base" else f"checkpoint-{self.step}"

    def weight_files(self) -> list[Path]:
        """The files holding this checkpoint's weights (shards resolved from an index)."""
        if self.kind == "base":
            return []
        names = _ADAPTER_WEIGHTS if self.kind == "adapter" else _FULL_WEIGHTS
        for name in names:
            f = self.path / name
            if not f.is_file():
                continue
            if name.endswith(".index.json"):
                index = read_json(f)
                shards = sorted(set(index.get("weight_map", {}).values()))
                if not shards:
                    raise ModelLoadError(f"{f} lists no weight shards. {fix_hint(self.path)}")
                return [self.path / s for s in shards]
            return [f]
        raise ModelLoadError(
            f"checkpoint {self.path} has no weights file (looked for {', '.join(names)}). "
            f"{fix_hint(self.path)}"
        )

    def signature(self) -> str:
        """A content key: sha256 over each config/weight file's name and bytes, so a moved or
        copied run keeps its key and a re-saved checkpoint with other weights gets a new one
        (file hashes are remembered per path, size and modification time within a process)."""
        if self.kind == "base":
            return "base"
        h = hashlib.sha256()
        cfg = "adapter_config.json" if self.kind == "adapter" else "config.json"
        for f in [self.path / cfg, *self.weight_files()]:
            h.update(f"{f.name}:{file_sha256(f)}".encode())
        return h.hexdigest()[:16]


_HASHES: dict[tuple[str, int, int], str] = {}


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes, remembered per (resolved path, size, mtime) in this process."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _HASHES:
        _HASHES[key] = sha256_file(path)
    return _HASHES[key]


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelLoadError(
            f"unreadable {path.name} in {path.parent}: {exc}. {fix_hint(path.parent)}"
        ) from exc
    if not isinstance(data, dict):
        raise ModelLoadError(f"{path} is not a JSON object. {fix_hint(path.parent)}")
    return data


def check_safetensors_header(path: Path) -> list[str]:
    """Read only the header of a safetensors file (detects truncation); return tensor names."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return list(f.keys())
    except Exception as exc:
        raise ModelLoadError(
            f"corrupt or truncated weights file {path} ({type(exc).__name__}: {exc}). "
            f"{fix_hint(path.parent)}"
        ) from exc


def classify(path: Path) -> CheckpointKind | None:
    """``adapter`` if ``path`` holds adapter_config.json, ``full`` if config.json, else None."""
    if (path / "adapter_config.json").is_file():
        return "adapter"
    if (path / "config.json").is_file():
        return "full"
    return None


def validate(ckpt: Checkpoint) -> None:
    """Cheap integrity check: configs parse, weight files exist, safetensors headers are whole.
    Raises :class:`ModelLoadError` naming the folder and the fix."""
    if ckpt.kind == "base":
        return
    read_json(ckpt.path / ("adapter_config.json" if ckpt.kind == "adapter" else "config.json"))
    for f in ckpt.weight_files():
        if not f.is_file():
            raise ModelLoadError(f"missing weight shard {f}. {fix_hint(ckpt.path)}")
        if f.suffix == ".safetensors":
            check_safetensors_header(f)
        elif f.stat().st_size == 0:
            raise ModelLoadError(f"empty weights file {f}. {fix_hint(ckpt.path)}")


def step_of_single(path: Path) -> int:
    m = CHECKPOINT_DIR_RE.match(path.name)
    if m:
        return int(m.group(1))
    state = path / "trainer_state.json"
    if state.is_file():
        try:
            return int(json.loads(state.read_text()).get("global_step", 1))
        except (OSError, ValueError, TypeError):
            pass
    return 1
