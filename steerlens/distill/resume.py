"""What a distillation output folder holds, and whether it may be trusted: its checkpoint
folders (each checked against the adapter sha256 in ``distill.json``), whether it holds this
run or another, and the checks the command line runs before any model loads."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from steerlens.checkpoints.checkpoint import check_safetensors_header
from steerlens.core.common import read_json, sha256_file
from steerlens.distill.config import OPTIMIZER_NAME, RECORD_NAME, DistillConfig, DistillError

__all__ = [
    "adapter_intact",
    "check_record",
    "ckpt_dirs",
    "intact_steps",
    "lineage_diff",
    "same_run",
]


def ckpt_dirs(out: Path) -> dict[int, Path]:
    res = {}
    for p in out.glob("checkpoint-*"):
        tail = p.name.split("-", 1)[1]
        if p.is_dir() and tail.isdigit() and (p / "adapter_model.safetensors").is_file():
            res[int(tail)] = p
    return dict(sorted(res.items()))


def lineage_diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Names of the lineage entries (config fields as ``config.<name>``) that differ."""
    prev = old.get("lineage") or {}
    out = []
    for key, val in new.items():
        if key == "config" and isinstance(prev.get(key), dict):
            out += [f"config.{k}" for k, v in val.items() if prev[key].get(k) != v]
        elif prev.get(key) != val:
            out.append(key)
    return out or ["format"]


def adapter_intact(path: Path, sha: str | None) -> bool:
    """Whether checkpoint folder ``path`` can be trusted: adapter, config and optimizer state
    present, the adapter's sha256 the one recorded (or, for a record without hashes, its
    safetensors header whole)."""
    adapter = path / "adapter_model.safetensors"
    if not all(f.is_file() for f in (adapter, path / "adapter_config.json", path / OPTIMIZER_NAME)):
        return False
    if sha is not None:
        return sha256_file(adapter) == sha
    try:
        check_safetensors_header(adapter)
    except Exception:  # noqa: BLE001 - any unreadable adapter is recomputed
        return False
    return True


def intact_steps(out: Path, old: dict[str, Any], steps: int) -> list[int]:
    """The steps (<= ``steps``) of the checkpoints in ``out`` that can be trusted, up to the
    first recorded checkpoint that is missing or broken (training resumes before it)."""
    recorded = {
        int(c["step"]): c.get("adapter_sha256")
        for c in old.get("checkpoints", [])
        if isinstance(c, dict) and "step" in c
    }
    dirs = ckpt_dirs(out)
    ok: list[int] = []
    for s in sorted(set(recorded) | set(dirs)):
        if s > steps:
            break
        if adapter_intact(out / f"checkpoint-{s}", recorded.get(s)):
            ok.append(s)
        elif s in recorded:
            break
    return ok


def same_run(
    out: Path, lineage: dict[str, Any], lineage_hash: str, overwrite: bool
) -> dict[str, Any] | None:
    """The record of the run in ``out`` when it is this run; None when ``out`` holds no run
    (or, with ``overwrite``, another one). A different run is an error unless ``overwrite``."""
    rec_path = out / RECORD_NAME
    if out.exists() and not out.is_dir():
        raise DistillError(f"{out} is a file, not a folder: pass a folder for the checkpoints")
    if not (rec_path.is_file() or ckpt_dirs(out)):
        return None
    try:
        old = read_json(rec_path) if rec_path.is_file() else None
    except ValueError:
        raise DistillError(
            f"{rec_path} is corrupt or truncated: delete it (its checkpoints cannot be trusted "
            "without it) or pass overwrite=True"
        ) from None
    if old is not None and not isinstance(old, dict):
        raise DistillError(f"{rec_path} is not a distill record: delete it or pass overwrite=True")
    if old is not None and old.get("lineage_hash") == lineage_hash:
        return old
    if not overwrite:
        what = (
            f"a different run (differing: {', '.join(lineage_diff(old, lineage))})"
            if old is not None
            else "checkpoints with no distill.json"
        )
        raise DistillError(
            f"{out} already holds {what}. Use another out_dir, or pass overwrite=True to "
            "delete its checkpoints and record."
        )
    return None


def check_record(
    out_dir: str | Path,
    *,
    teacher_system: str | None,
    config: DistillConfig | None = None,
    overwrite: bool = False,
) -> None:
    """What can be checked of ``out_dir`` before any model loads: raise :class:`DistillError`
    if it is a file, its record is corrupt, or its run has another config or teacher prompt
    (and ``overwrite`` is False). Writes nothing; :func:`check_out_dir` checks the rest."""
    out = Path(out_dir).expanduser()
    cfg = config or DistillConfig()
    if out.exists() and not out.is_dir():
        raise DistillError(f"{out} is a file, not a folder: pass a folder for the checkpoints")
    rec_path = out / RECORD_NAME
    if overwrite or not rec_path.is_file():
        return
    try:
        old = read_json(rec_path)
    except ValueError:
        old = None
    prev = old.get("lineage") if isinstance(old, dict) else None
    if not isinstance(prev, dict):
        raise DistillError(
            f"{rec_path} is corrupt or truncated: delete it (its checkpoints cannot be trusted "
            "without it) or pass overwrite=True"
        )
    system = teacher_system if cfg.loss == "kl" else None
    new = {"teacher_system": system, "config": cfg.lineage()}
    differ = [k for k in lineage_diff(old, new) if k != "format"]
    if differ:
        raise DistillError(
            f"{out} already holds a different run (differing: {', '.join(differ)}). Use another "
            "out_dir, or pass overwrite=True to delete its checkpoints and record."
        )
