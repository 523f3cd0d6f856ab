"""The command line's error contract and the checks ``resolve`` runs before anything loads.

A failure the user can cause (a bad value, a missing or unreadable file, a model that cannot be
loaded, a run folder holding another run) ends the command with one line naming the problem
and the fix, and exit status 2. Such failures are the exceptions steerlens raises on purpose
(a ``raise`` statement in the steerlens package) and file-system errors; anything else (an
exception from inside torch, a ``KeyError`` of a dictionary lookup) is a bug in steerlens and
keeps its traceback (exit status 1).
"""

from __future__ import annotations

import linecache
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from steerlens.cli.options import Option
from steerlens.cli.settings import parse_layers

__all__ = ["check_device", "check_outputs", "check_values", "is_user_error", "one_line"]

_PACKAGE = str(Path(__file__).resolve().parents[1])
_DELIBERATE = (ValueError, LookupError, RuntimeError, TypeError, ArithmeticError)


def _innermost(exc: BaseException) -> Any:
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb


def is_user_error(exc: BaseException) -> bool:
    """Whether ``exc`` is a failure the user caused: an ``OSError`` (files, network), or one of
    the usual exception types raised by a ``raise`` statement in steerlens itself."""
    if isinstance(exc, (OSError, MemoryError)) or type(exc).__name__ == "OutOfMemoryError":
        return True  # files, network, and memory (a smaller --batch-size is the user's fix)
    if not isinstance(exc, _DELIBERATE):
        return False
    tb = _innermost(exc)
    if tb is None:
        return False
    fname = str(Path(tb.tb_frame.f_code.co_filename).resolve())
    if not fname.startswith(_PACKAGE + os.sep):
        return False
    return linecache.getline(fname, tb.tb_lineno).strip().startswith("raise ")


def one_line(exc: BaseException) -> str:
    """The exception's message on one line (a KeyError's own text, not its repr)."""
    msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
    return " ".join(str(msg).split()) or type(exc).__name__


def check_device(name: str) -> None:
    """Refuse a device torch does not know, or a GPU this machine does not have."""
    if name == "auto":
        return
    import torch

    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError):
        raise ValueError(
            f"--device {name!r} is not a device: use auto, cpu, cuda or cuda:1"
        ) from None
    if dev.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise ValueError(
                f"--device {name}: this machine has no CUDA GPU torch can use; pass --device cpu "
                "(or auto)"
            )
        if dev.index is not None and dev.index >= n:
            raise ValueError(f"--device {name}: there are {n} GPU(s), cuda:0..cuda:{n - 1}")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"--device {name}: MPS is not available here; pass --device cpu")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"--device {name}: steerlens runs on cpu, cuda or mps")


def _nearest_existing(p: Path) -> Path:
    for q in (p, *p.parents):
        if q.exists():
            return q
    return Path(".")


def check_outputs(options: Sequence[Option], values: Mapping[str, Any]) -> None:
    """Refuse an output path that cannot be written (checked before any model loads): a file
    path that is a folder, a folder path that is a file, a path under a file, or a folder the
    user may not write to."""
    for opt in options:
        val = values.get(opt.name)
        if opt.output is None or val is None:
            continue
        p = Path(str(val)).expanduser()
        if opt.output == "file" and p.is_dir():
            raise ValueError(f"{opt.flag} {val} is a folder: give the path of a file to write")
        if opt.output == "dir" and p.exists() and not p.is_dir():
            raise ValueError(f"{opt.flag} {val} is a file: give the path of a folder to write into")
        anc = _nearest_existing(p if opt.output == "dir" else p.parent)
        if not anc.is_dir():
            raise ValueError(
                f"{opt.flag} {val}: {anc} is a file, so nothing can be written below it"
            )
        if not os.access(anc, os.W_OK | os.X_OK):
            raise ValueError(
                f"{opt.flag} {val}: the folder {anc} is not writable; choose another place"
            )


def check_values(options: Sequence[Option], values: Mapping[str, Any]) -> None:
    """The checks of ``resolve`` beyond types and choices: layer specs, the device, outputs."""
    by_name = {o.name: o for o in options}
    layers = values.get("layers")
    if isinstance(layers, str) and by_name["layers"].hint is str:
        parse_layers(layers)
    if "device" in values:
        check_device(str(values["device"]))
    check_outputs(options, values)
