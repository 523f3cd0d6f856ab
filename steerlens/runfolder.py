"""Claim an output folder for one run: a lock against a second concurrent run, and a refusal to
mix a run's files with those of a finished run made with other settings.

:func:`claim_run_folder` is called where every experiment starts (``run_experiment``, the
command line) before any model loads or any file is written, so a refusal leaves the folder
exactly as it was::

    with claim_run_folder(out, config_json(config), overwrite=False):
        ...  # run; the lock is released on exit, even on an error

The lock is the file ``.steerlens.lock`` (the holder's pid, host and start time), created with
``O_EXCL``: a second run into the same folder refuses at once, naming the holder; a lock whose
process is gone (a run killed with ``kill -9``) is taken over. The folder's recorded settings
are the ``config`` of its ``results.json`` (what every experiment writes when it finishes), or
for a run that did not finish, those its claim wrote to ``.steerlens.run.json``.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from steerlens.core.common import atomic_write_text

__all__ = [
    "LOCK_NAME",
    "RUN_NAME",
    "RunFolderError",
    "claim_run_folder",
    "config_differences",
    "recorded_config",
]

LOCK_NAME = ".steerlens.lock"
"""The lock file a running run keeps in its output folder."""


class RunFolderError(RuntimeError):
    """The output folder is in use by another run, or holds a finished run with other
    settings."""


RUN_NAME = ".steerlens.run.json"
"""The settings of the run that claimed the folder, written when it starts: an interrupted run
is compared with them (a finished one with its ``results.json``)."""


def recorded_config(out: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The settings the run in ``out`` was made with: ``results.json``'s ``config`` when it
    finished, else those its claim recorded (:data:`RUN_NAME`); None when there are none."""
    p = Path(out).expanduser() / "results.json"
    if not p.is_file():
        started = p.with_name(RUN_NAME)
        try:
            d = json.loads(started.read_text(encoding="utf-8")) if started.is_file() else None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return None  # a claim cut short: nothing to compare
        cfg = d.get("config") if isinstance(d, dict) else None
        return dict(cfg) if isinstance(cfg, Mapping) else None
    try:
        d = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        raise RunFolderError(
            f"{p} is unreadable (truncated or not JSON), so the settings of the run in "
            f"{p.parent} are unknown: use a new folder, or pass --overwrite to replace that run"
        ) from None
    cfg = d.get("config") if isinstance(d, dict) else None
    return dict(cfg) if isinstance(cfg, Mapping) else None


def config_differences(
    old: Mapping[str, Any], new: Mapping[str, Any]
) -> list[tuple[str, Any, Any]]:
    """``(key, old value, new value)`` for each setting of ``new`` that differs from ``old``
    (a key ``old`` lacks counts as differing; keys only ``old`` has, such as a config's derived
    parts recorded beside it, do not)."""
    missing = object()
    out = []
    for key in sorted(new):
        was = old.get(key, missing)
        if _norm(was) != _norm(new[key]):
            out.append((key, None if was is missing else was, new[key]))
    return out


def _norm(value: Any) -> Any:
    """A JSON-comparable form (tuples and lists alike)."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def _flag(key: str) -> str:
    return "--" + key.replace("_", "-")


def _show(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value)) if value else "none"
    return "none" if value is None else str(value)


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def _read_lock(lock: Path) -> dict[str, Any]:
    try:
        d = json.loads(lock.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return d if isinstance(d, dict) else {}


def _held_by_other(lock: Path) -> dict[str, Any] | None:
    """The holder of ``lock`` if it is a live run (this machine: its pid runs; another
    machine: assumed live), else None (no lock, or a stale one)."""
    if not lock.exists():
        return None
    info = _read_lock(lock)
    pid = info.get("pid")
    if not isinstance(pid, int):
        if time.time() - lock.stat().st_mtime < 5:
            return {"pid": "?"}  # being written this instant
        return None
    if info.get("host") not in (None, socket.gethostname()):
        return info
    return info if _alive(pid) else None


def _refuse_busy(out: Path, info: Mapping[str, Any]) -> RunFolderError:
    host = info.get("host")
    where = f" on {host}" if host and host != socket.gethostname() else ""
    started = info.get("started")
    since = f", started {started}" if started else ""
    return RunFolderError(
        f"{out} is in use by another steerlens run (pid {info.get('pid')}{where}{since}): wait "
        f"for it to finish or use a new folder; if that process is gone, delete "
        f"{out / LOCK_NAME}"
    )


def _acquire(out: Path) -> Path:
    lock = out / LOCK_NAME
    for _ in range(3):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _held_by_other(lock)
            if holder is not None:
                raise _refuse_busy(out, holder) from None
            lock.unlink(missing_ok=True)  # stale: its process is gone
            continue
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(info, f)
        return lock
    raise RunFolderError(f"could not take the lock {lock}: another run keeps taking it")


def _release(lock: Path) -> None:
    if _read_lock(lock).get("pid") == os.getpid():
        lock.unlink(missing_ok=True)


def _clear(out: Path, keep: Path) -> None:
    """Delete every entry of ``out`` but ``keep`` (the lock)."""
    for p in out.iterdir():
        if p == keep:
            continue
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()


def _refuse_other_run(out: Path, diff: list[tuple[str, Any, Any]]) -> RunFolderError:
    shown = "; ".join(f"{_flag(k)} was {_show(a)}, now {_show(b)}" for k, a, b in diff[:8])
    more = f" (and {len(diff) - 8} more)" if len(diff) > 8 else ""
    what = "a finished" if (out / "results.json").is_file() else "an unfinished"
    return RunFolderError(
        f"{out} holds {what} run made with other settings ({shown}{more}): use a new "
        "folder (--out), or pass --overwrite (overwrite=True) to delete that run and start "
        "afresh"
    )


@contextmanager
def claim_run_folder(
    out: str | os.PathLike[str],
    config_json: Mapping[str, Any] | None,
    overwrite: bool = False,
) -> Iterator[Path]:
    """Hold ``out`` for one run inside the ``with`` block; yields the folder (created).

    Refuses (:class:`RunFolderError`, nothing written) when another live run holds the folder,
    or when ``out`` holds a finished run whose recorded config differs from ``config_json``
    (naming each differing setting with its old and new value) unless ``overwrite``, which
    deletes that run's files first. ``config_json=None`` only takes the lock."""
    folder = Path(out).expanduser()
    if folder.exists() and not folder.is_dir():
        raise RunFolderError(f"{folder} is a file: give the path of a folder to write into")
    if folder.is_dir():
        holder = _held_by_other(folder / LOCK_NAME)
        if holder is not None:
            raise _refuse_busy(folder, holder)
        try:
            old = recorded_config(folder) if config_json is not None else None
        except RunFolderError:
            if not overwrite:
                raise
            old = {}  # an unreadable results.json: --overwrite replaces that run
        diff = config_differences(old, config_json) if old is not None and config_json else []
        if diff and not overwrite:
            raise _refuse_other_run(folder, diff)
    else:
        diff = []
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    lock = _acquire(folder)
    try:
        if diff:  # overwrite: the old run's files go before this run writes any
            _clear(folder, keep=lock)
        if config_json is not None:
            atomic_write_text(folder / RUN_NAME, json.dumps({"config": _norm(config_json)}))
        yield folder
    except BaseException:
        _release(lock)
        if created and {p.name for p in folder.iterdir()} <= {RUN_NAME}:
            (folder / RUN_NAME).unlink(missing_ok=True)
            folder.rmdir()  # a run that failed before writing anything leaves no folder
        raise
    _release(lock)
