"""Chats as Hugging Face ``datasets``: the ecosystem's format for training data (a ``messages``
column of ``{"role", "content"}`` lists, what TRL's ``SFTTrainer`` takes).

- :func:`save_rows` / :func:`load_rows`: rows (dicts) to and from a ``datasets`` folder
  (``Dataset.save_to_disk``), a ``.parquet`` file or a ``.jsonl`` file, chosen by the path; a
  ``meta`` dict travels beside them (``steerlens_meta.json`` inside the folder, or
  ``<stem>.meta.json`` beside a file);
- :func:`save_trajectories` / :func:`load_trajectories`: agent trajectories
  (:class:`~steerlens.agents.trajectories.Trajectory`), one row each: the whole chat as
  ``messages`` plus the lossless record as JSON (``trajectory``);
- :func:`steerlens.distill.hf_data.save_teacher_dataset` / ``load_teacher_dataset`` (which
  build on these) for teacher data.

Needs the ``datasets`` package (the ``trl`` extra) for folders and parquet; JSONL needs nothing.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from steerlens.agents.trajectories import Trajectory
from steerlens.core.common import atomic_write_text, read_json

__all__ = [
    "META_NAME",
    "is_dataset_path",
    "load_rows",
    "load_trajectories",
    "save_rows",
    "save_trajectories",
]

META_NAME = "steerlens_meta.json"


def _kind(p: Path) -> str:
    if p.suffix == ".parquet":
        return "parquet"
    if p.suffix in (".jsonl", ".json"):
        return "jsonl"
    if p.is_dir() or not p.suffix:
        return "folder"
    raise ValueError(f"{p}: use a folder (datasets save_to_disk), a .parquet or a .jsonl path")


def _meta_path(p: Path, kind: str) -> Path:
    return p / META_NAME if kind == "folder" else p.with_name(p.stem + ".meta.json")


def is_dataset_path(path: str | os.PathLike[str]) -> bool:
    """True for a ``datasets`` folder (``save_to_disk``: ``dataset_info.json`` or
    ``state.json``) or a ``.parquet`` file."""
    p = Path(path).expanduser()
    if p.suffix == ".parquet":
        return p.is_file()
    return p.is_dir() and ((p / "state.json").is_file() or (p / "dataset_info.json").is_file())


def save_rows(
    rows: Sequence[Mapping[str, Any]],
    path: str | os.PathLike[str],
    meta: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``rows`` as a ``datasets`` folder, parquet or JSONL (by ``path``) and ``meta``
    beside them. Returns ``path``."""
    p = Path(path).expanduser()
    kind = _kind(p)
    if kind == "jsonl":
        p.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(p, "".join(json.dumps(dict(r), ensure_ascii=False) + "\n" for r in rows))
    else:
        from datasets import Dataset

        ds = Dataset.from_list([dict(r) for r in rows])
        if kind == "parquet":
            p.parent.mkdir(parents=True, exist_ok=True)
            ds.to_parquet(str(p))
        else:
            ds.save_to_disk(str(p))
    if meta is not None:
        atomic_write_text(_meta_path(p, kind), json.dumps(dict(meta), indent=2, ensure_ascii=False))
    return p


def load_rows(path: str | os.PathLike[str]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The rows and meta (``{}`` if none) of what :func:`save_rows` wrote, or of any
    ``datasets`` folder, parquet or JSONL file of chats."""
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"no data at {p}")
    kind = _kind(p)
    if kind == "jsonl":
        lines = p.read_text(encoding="utf-8").splitlines()
        rows = [json.loads(ln) for ln in lines if ln.strip()]
    else:
        from datasets import Dataset, load_from_disk

        if kind == "parquet":
            ds: Any = Dataset.from_parquet(str(p))
        else:
            ds = load_from_disk(str(p))
            if not isinstance(ds, Dataset):  # a DatasetDict: its "train" split
                if "train" not in ds:
                    raise ValueError(f"{p} holds splits {list(ds)}: none is 'train'")
                ds = ds["train"]
        rows = [dict(r) for r in ds]
    mp = _meta_path(p, kind)
    return rows, (read_json(mp) if mp.is_file() else {})


def save_trajectories(
    path: str | os.PathLike[str],
    trajs: Sequence[Trajectory],
    meta: Mapping[str, Any] | None = None,
) -> Path:
    """Trajectories as chat rows: ``messages`` (the whole chat, actions as assistant turns),
    ``trajectory`` (the record as JSON, read back by :func:`load_trajectories`)."""
    rows = [
        {"messages": t.messages(), "trajectory": json.dumps(t.to_json(), ensure_ascii=False)}
        for t in trajs
    ]
    return save_rows(rows, path, {"kind": "steerlens.trajectories", **dict(meta or {})})


def load_trajectories(path: str | os.PathLike[str]) -> list[Trajectory]:
    """What :func:`save_trajectories` wrote."""
    rows, _ = load_rows(path)
    missing = [i for i, r in enumerate(rows) if "trajectory" not in r]
    if missing:
        raise ValueError(
            f"rows {missing[:5]} of {path} have no 'trajectory' column: not written by "
            "save_trajectories (plain chats load with load_rows)"
        )
    return [Trajectory.from_json(json.loads(r["trajectory"])) for r in rows]
