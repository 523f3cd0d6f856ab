"""The stage helper every experiment runs its steps through: cached stages, stage timings, checkpoint behavior,
series records and the training-prompt seed rule.

A stage's result is written beside a ``.key`` stamp; a later run with the same key (the model
fingerprint and the config fields the stage depends on) reads it back instead of recomputing,
so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from steerlens.checkpoints import CheckpointSeries
from steerlens.core.common import read_json, sha256_bytes, sha256_file, write_json
from steerlens.inputs.numbers import number_prompts
from steerlens.lineage import ensure_record

T = TypeVar("T")

__all__ = [
    "DATA_SEED_OFFSET",
    "StageClock",
    "checkpoint_behavior",
    "json_load",
    "json_save",
    "last_checkpoint",
    "series_key",
    "series_record",
    "stage",
    "training_prompts",
    "write_stamp",
]

DATA_SEED_OFFSET = 1000
"""Training (teacher-data) number prompts are drawn with ``seed + DATA_SEED_OFFSET``, so they
differ from the probe prompts (drawn with ``seed``) that the teacher vector and tracking use.
The one place this offset is defined (the demo and ``steerlens distill`` both use it)."""


def training_prompts(n: int, seed: int) -> list[str]:
    """The ``n`` number prompts the teachers answer for distillation data (see
    :data:`DATA_SEED_OFFSET`)."""

    return number_prompts(n, seed=seed + DATA_SEED_OFFSET)


def _stage_files(path: Path) -> list[Path]:
    """The files a stage's result lives in: ``path`` and, where it exists, its
    ``<stem>.meta.json`` sidecar (teacher data)."""
    meta = path.with_name(path.stem + ".meta.json")
    return [path, meta] if meta.is_file() else [path]


def _digest(path: Path) -> str:
    """sha256 over the stage's files (:func:`_stage_files`), names and bytes."""

    h = hashlib.sha256()
    for f in _stage_files(path):
        h.update(f.name.encode())
        h.update(sha256_file(f).encode())
    return h.hexdigest()


def _stamp(path: Path) -> Path:
    return path.with_name(path.name + ".key")


def _read_stamp(path: Path) -> tuple[str, str | None] | None:
    """(key, sha256) of ``path``'s stamp; sha256 is None in a stamp from before the hash was
    recorded (a bare key); None without a stamp."""
    stamp = _stamp(path)
    if not stamp.is_file():
        return None
    text = stamp.read_text().strip()
    if text.startswith("{"):
        try:
            d = json.loads(text)
            return str(d["key"]), str(d["sha256"])
        except (ValueError, KeyError, TypeError):
            return None
    return text, None


def write_stamp(path: Path, key: str) -> None:
    """Stamp ``path`` as the result for ``key``, with the sha256 of its files."""
    _stamp(path).write_text(json.dumps({"key": key, "sha256": _digest(path)}))


def stage(
    path: Path,
    key: str,
    fn: Callable[[], T],
    save: Callable[[T, Path], object],
    load: Callable[[Path], T],
    log: Callable[[str], None],
    record: Callable[[Path], object] | None = None,
) -> T:
    """Run ``fn`` unless ``path`` holds a result written for the same ``key``, and unchanged
    since: the stamp ``<path>.key`` records the key and the sha256 of the result's files, and a
    file edited after it was written is named in the log and recomputed (a stale cache never
    reaches a later stage). ``record`` writes ``path``'s lineage record (after a fresh result;
    for a reused one only when its files still match, see :func:`steerlens.lineage.ensure_record`)."""

    stamp = _read_stamp(path) if path.exists() else None
    if stamp is not None and stamp[0] == key:
        try:
            if stamp[1] is not None and _digest(path) != stamp[1]:
                raise ValueError(
                    f"{path} changed after it was written (its sha256 no longer matches "
                    f"{_stamp(path).name}): a stale cache entry"
                )
            out = load(path)
            log(f"reusing {path.name}")
            if stamp[1] is None:
                write_stamp(path, key)  # an older stamp: record the hash from now on
            if record is not None:
                ensure_record(path, lambda: record(path))
            return out
        except Exception as exc:  # noqa: BLE001 - a broken or edited cache entry is recomputed
            log(f"cached {path.name} not reused ({exc}); recomputing")
    out = fn()
    save(out, path)
    write_stamp(path, key)
    if record is not None:
        record(path)
    return out


def json_save(obj: Any, path: Path) -> None:
    """``save`` for :func:`stage` of a JSON value."""
    write_json(path, obj)


def json_load(path: Path) -> Any:
    """``load`` for :func:`stage` of a JSON value."""
    return read_json(path)


class StageClock:
    """Seconds per stage: ``tick(name)`` records the time since the previous tick and logs it
    with the time since the start."""

    def __init__(self, log: Callable[[str], None]) -> None:
        self.log = log
        self.start = time.time()
        self.last = self.start
        self.timings: dict[str, float] = {}

    def tick(self, name: str) -> None:
        self.timings[name] = round(time.time() - self.last, 2)
        self.log(f"[{time.time() - self.start:6.1f}s] {name} done ({self.timings[name]:.1f}s)")
        self.last = time.time()

    def total(self) -> float:
        """Record and return the whole run's seconds (as ``timings['total']``)."""
        self.timings["total"] = round(time.time() - self.start, 1)
        return self.timings["total"]


def checkpoint_behavior(
    base: Any, series_dir: Path, behavior: Callable[[Any], float]
) -> dict[str, Any]:
    """The behavior score of the base (step 0) and every checkpoint of a series."""

    series = CheckpointSeries.discover(series_dir)
    steps, scores = [0], [float(behavior(base))]
    with series.open(base) as load:
        for ck in series:
            steps.append(ck.step)
            scores.append(float(behavior(load(ck))))
    return {"steps": steps, "scores": scores}


def last_checkpoint(series_dir: Path) -> Path:
    """The ``checkpoint-<step>`` folder of ``series_dir`` with the largest step."""
    cks = sorted(series_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    if not cks:
        raise FileNotFoundError(f"{series_dir} holds no checkpoint-<step> folder")
    return cks[-1]


def series_key(*series_dirs: Path) -> str:
    """A short key of the checkpoints' contents in ``series_dirs`` (their steps and content
    signatures, not their paths): a stage that reads checkpoints adds it to its cache key, so a
    recomputed or removed checkpoint invalidates it and a moved run folder does not."""

    parts = []
    for d in series_dirs:
        series = CheckpointSeries.discover(d)
        parts.append([[ck.step, ck.signature()] for ck in series])
    return sha256_bytes(json.dumps(parts))[:12]


_SERIES_KEYS = ("config", "data", "base", "teacher_system", "checkpoints", "losses", "lineage_hash")


def series_record(series_dir: Path) -> dict[str, Any]:
    """The lineage record of a distilled series: its folder, what ``distill.json`` says of its
    training, and its checkpoint names."""
    rec: dict[str, Any] = {"path": str(series_dir)}
    meta = series_dir / "distill.json"
    if meta.is_file():
        d = read_json(meta)
        rec.update({k: d[k] for k in _SERIES_KEYS if k in d})
    rec["checkpoints"] = sorted(p.name for p in series_dir.glob("checkpoint-*"))
    return rec
