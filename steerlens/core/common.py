"""Small helpers every layer uses: progress bars, hashing, JSON and atomic file writes.

A leaf module (imports nothing from steerlens), so any module may use it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "atomic_write_bytes",
    "atomic_write_text",
    "in_notebook",
    "jsonable",
    "read_json",
    "sha256_bytes",
    "sha256_file",
    "tqdm_disable",
    "write_json",
]


def tqdm_disable(progress: bool | None) -> bool | None:
    """tqdm's ``disable`` for a ``progress`` argument: None shows bars on a terminal and in a
    Jupyter kernel (where stderr is no TTY, so tqdm's own None would hide them), not in logs.
    Callers use ``tqdm.auto``: widget bars in notebooks with ipywidgets, text bars otherwise."""
    if progress is not None:
        return not progress
    return False if in_notebook() else None


def in_notebook() -> bool:
    """Whether this runs in a Jupyter (IPython kernel) process."""
    ipython = sys.modules.get("IPython")
    shell = getattr(ipython, "get_ipython", lambda: None)() if ipython else None
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sha256_bytes(data: bytes | str) -> str:
    """Hex sha256 of bytes (a str is UTF-8 encoded)."""
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def jsonable(obj: Any) -> Any:
    """``obj`` as plain JSON values: non-finite floats become None, tensors and arrays lists,
    paths strings, mappings get string keys, dataclass-like objects their public fields."""
    if isinstance(obj, bool) or obj is None or isinstance(obj, (int, str)):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    to_json = getattr(obj, "to_json", None)
    if callable(to_json):
        return jsonable(to_json())
    tolist = getattr(obj, "tolist", None)  # torch tensors, numpy arrays and scalars
    if callable(tolist):
        return jsonable(tolist())
    if hasattr(obj, "__dict__"):
        return {k: jsonable(v) for k, v in vars(obj).items() if not k.startswith("_")}
    return str(obj)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename, so
    a reader never sees half a file and an interrupted write leaves the old one."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f"{p.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, p)
    return p


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """:func:`atomic_write_bytes` of UTF-8 text."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Write ``obj`` as indented JSON (through :func:`jsonable`), atomically."""
    return atomic_write_text(path, json.dumps(jsonable(obj), indent=2) + "\n")


def read_json(path: str | os.PathLike[str]) -> Any:
    """Read a JSON file, naming the file and the fix when it is missing or corrupt."""
    p = Path(path)
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"{p} does not exist: check the path") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(
            f"{p} is not valid JSON ({exc}): the file is corrupt or truncated; delete it and "
            "re-run the step that wrote it"
        ) from None
