"""Teacher data as Hugging Face ``datasets`` of chat rows (``messages`` ending with the
assistant's response, as TRL's ``SFTTrainer`` reads them), through
:mod:`steerlens.integrations.hf_datasets`: a ``datasets`` folder, a ``.parquet`` or a ``.jsonl``
file, with the settings, counts and sha256 beside the rows."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from steerlens.distill.chats import chat_sample
from steerlens.distill.data import TeacherData
from steerlens.integrations.hf_datasets import load_rows, save_rows

__all__ = ["load_teacher_dataset", "save_teacher_dataset", "teacher_data_from_rows", "teacher_rows"]


def teacher_rows(data: TeacherData) -> list[dict[str, Any]]:
    """The samples as chat rows, with ``finished`` and ``kind`` ("pair": a user/response sample,
    "chat": a multi-turn sample) so :func:`teacher_data_from_rows` restores them exactly."""
    rows = []
    for s in data.samples:
        answer = {"role": "assistant", "content": str(s["response"])}
        chat = "messages" in s
        msgs = (
            [dict(m) for m in s["messages"]] if chat else [{"role": "user", "content": s["user"]}]
        )
        rows.append(
            {
                "messages": [*msgs, answer],
                "finished": bool(s.get("finished", True)),
                "kind": "chat" if chat else "pair",
            }
        )
    return rows


def teacher_data_from_rows(
    rows: Sequence[dict[str, Any]], settings: dict[str, Any] | None = None
) -> TeacherData:
    """Samples from chat rows (:func:`teacher_rows`, or any ``messages`` rows whose last message
    is the assistant's: a single user turn becomes a user/response sample)."""
    samples = []
    for i, r in enumerate(rows):
        msgs = [{"role": str(m["role"]), "content": str(m["content"])} for m in r["messages"]]
        if len(msgs) < 2 or msgs[-1]["role"] != "assistant":
            raise ValueError(f"row {i}: the last message must be the assistant's response")
        pair = r.get("kind", "pair" if len(msgs) == 2 else "chat") == "pair"
        if pair and (len(msgs) != 2 or msgs[0]["role"] != "user"):
            raise ValueError(f"row {i}: a 'pair' row is one user and one assistant message")
        if pair:
            s = {"user": msgs[0]["content"], "response": msgs[1]["content"]}
        else:
            s = chat_sample(msgs[:-1], msgs[-1]["content"])
        samples.append({**s, "finished": bool(r.get("finished", True))})
    return TeacherData(samples, dict(settings or {"mode": "given"}))


def save_teacher_dataset(data: TeacherData, path: str | Path) -> Path:
    """Write ``data`` as a ``datasets`` folder, ``.parquet`` or ``.jsonl`` of chat rows
    (:func:`teacher_rows`), its settings, counts, hash and rejected samples beside them."""
    meta = {**data.meta(), "rejected": data.rejected, "kind": "steerlens.TeacherData"}
    return save_rows(teacher_rows(data), path, meta)


def load_teacher_dataset(path: str | Path) -> TeacherData:
    """Read :func:`save_teacher_dataset`'s output, or any ``datasets`` folder / parquet / JSONL
    of chat rows; the recorded hash, if any, must match."""
    rows, meta = load_rows(path)
    data = teacher_data_from_rows(rows, meta.get("settings"))
    data.rejected = list(meta.get("rejected", []))
    if "sha256" in meta and meta["sha256"] != data.sha256:
        raise ValueError(f"{path} does not match its recorded hash (edited after saving?)")
    return data
