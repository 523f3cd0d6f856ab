"""The numeric precision every stage computes in: float32, bfloat16 weights, or bfloat16
autocast over float32 weights; ``"auto"`` picks bfloat16 where the hardware multiplies it
natively and float32 elsewhere.

- ``"float32"``: float32 weights and compute (the exactness tests pin this).
- ``"bfloat16"``: bfloat16 weights; matmuls, activations and the residual stream in bfloat16.
- ``"autocast"``: float32 weights and residual stream; matmuls run in bfloat16 under
  :func:`torch.autocast` (normalisations and the residual adds stay float32).
- ``"auto"``: ``"bfloat16"`` on CPUs with AMX or AVX512-BF16 (``amx_bf16`` / ``avx512_bf16`` in
  ``/proc/cpuinfo``) and on GPUs for which ``torch.cuda.is_bf16_supported()``; ``"float32"``
  elsewhere (on a CPU without them bfloat16 is emulated and runs several times *slower*).
  ``$STEERLENS_PRECISION`` (float32 | bfloat16 | autocast) overrides what ``"auto"`` picks.

The choice and the reason are recorded in every result's provenance
(:func:`steerlens.loading.models.describe`, vectors' meta). Recording always accumulates in float32 or
better whatever the precision (:class:`steerlens.runtime.batching.Accumulator` sums in float64).

A leaf module: torch only.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

__all__ = [
    "AUTOCAST_ATTR",
    "PRECISION_CHOICES",
    "PRECISION_ENV",
    "Precision",
    "compute_context",
    "cpu_bf16_features",
    "mark_autocast",
    "native_bf16",
    "precision_of_dtype",
    "resolve_precision",
]

#: what ``load_model(dtype=...)`` and ``--dtype`` accept
PRECISION_CHOICES = ("auto", "float32", "bfloat16", "autocast", "float16")

#: environment variable that overrides what ``"auto"`` picks
PRECISION_ENV = "STEERLENS_PRECISION"

#: attribute set on an HF module whose forwards run under bfloat16 autocast
AUTOCAST_ATTR = "steerlens_autocast"

_WEIGHT_DTYPES = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
    "autocast": torch.float32,
}


@dataclass(frozen=True)
class Precision:
    """The resolved precision: ``name`` (float32 | bfloat16 | float16 | autocast), what was
    ``requested`` (e.g. ``"auto"``) and why this one was chosen."""

    name: str
    requested: str
    reason: str

    @property
    def weight_dtype(self) -> torch.dtype:
        return _WEIGHT_DTYPES[self.name]

    @property
    def autocast(self) -> bool:
        return self.name == "autocast"

    @property
    def low(self) -> bool:
        """True for any precision below float32 (bfloat16 weights, float16 or autocast)."""
        return self.name != "float32"

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "requested": self.requested, "reason": self.reason}


def cpu_bf16_features(cpuinfo: str | None = None) -> list[str]:
    """The native-bfloat16 CPU features named in ``/proc/cpuinfo`` (``amx_bf16``,
    ``avx512_bf16``); ``cpuinfo`` is that file's text (read here when None)."""
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo") as f:
                cpuinfo = f.read()
        except OSError:
            cpuinfo = ""
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        if line.startswith(("flags", "Features")):
            flags.update(line.split(":", 1)[-1].split())
    return [f for f in ("amx_bf16", "avx512_bf16") if f in flags]


def _cpu_capability() -> str:
    try:
        return str(torch.backends.cpu.get_cpu_capability())
    except (AttributeError, RuntimeError):
        return "unknown"


def native_bf16(device: str | torch.device = "cpu", cpuinfo: str | None = None) -> tuple[bool, str]:
    """Whether ``device`` multiplies bfloat16 natively, and why (the flags or the capability
    read)."""
    dev = torch.device(device)
    if dev.type == "cuda":
        ok = bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
        name = torch.cuda.get_device_name(dev) if torch.cuda.is_available() else "no CUDA device"
        return ok, f"{name}: torch.cuda.is_bf16_supported() is {ok}"
    if dev.type != "cpu":
        return False, f"{dev.type}: native bfloat16 is not detected for this device type"
    feats = cpu_bf16_features(cpuinfo)
    cap = _cpu_capability()
    if feats:
        return True, f"CPU has {', '.join(feats)} (torch CPU capability {cap})"
    if "AMX" in cap.upper() or "BF16" in cap.upper():
        return True, f"torch CPU capability {cap}"
    return False, (
        f"CPU has neither amx_bf16 nor avx512_bf16 (torch CPU capability {cap}): bfloat16 "
        "would be emulated, several times slower than float32"
    )


def precision_of_dtype(dtype: torch.dtype, requested: str, reason: str) -> Precision:
    """A :class:`Precision` for a model already in ``dtype`` (e.g. one the user wraps)."""
    name = {v: k for k, v in _WEIGHT_DTYPES.items() if k != "autocast"}.get(dtype, str(dtype))
    return Precision(name.replace("torch.", ""), requested, reason)


def resolve_precision(
    spec: str | torch.dtype | None, device: str | torch.device = "cpu"
) -> Precision:
    """The :class:`Precision` for ``spec`` (one of :data:`PRECISION_CHOICES`, a torch dtype,
    or None for ``"auto"``) on ``device``."""
    if isinstance(spec, torch.dtype):
        if spec not in _WEIGHT_DTYPES.values():
            raise ValueError(f"dtype {spec} is not supported: use one of {PRECISION_CHOICES}")
        return precision_of_dtype(spec, str(spec).replace("torch.", ""), "requested")
    req = "auto" if spec is None else str(spec).replace("torch.", "")
    if req not in PRECISION_CHOICES:
        raise ValueError(f"unknown precision {spec!r}: use one of {', '.join(PRECISION_CHOICES)}")
    if req != "auto":
        return Precision(req, req, "requested")
    env = os.environ.get(PRECISION_ENV, "").strip()
    if env and env != "auto":
        if env not in PRECISION_CHOICES:
            raise ValueError(
                f"${PRECISION_ENV}={env!r} is not a precision: use one of "
                f"{', '.join(PRECISION_CHOICES)} or unset it"
            )
        return Precision(env, "auto", f"${PRECISION_ENV}={env}")
    ok, why = native_bf16(device)
    return Precision("bfloat16" if ok else "float32", "auto", why)


def mark_autocast(module: torch.nn.Module, on: bool = True) -> None:
    """Make steerlens run ``module``'s forwards under bfloat16 autocast (or stop, ``on=False``)."""
    if on:
        setattr(module, AUTOCAST_ATTR, True)
    elif hasattr(module, AUTOCAST_ATTR):
        delattr(module, AUTOCAST_ATTR)


def _device_type(module: Any) -> str:
    try:
        return str(next(module.parameters()).device.type)
    except (StopIteration, AttributeError, TypeError):
        return "cpu"


@contextlib.contextmanager
def compute_context(module: Any) -> Iterator[None]:
    """bfloat16 autocast around a forward of ``module`` if it is marked
    (:func:`mark_autocast`), else nothing."""
    if not getattr(module, AUTOCAST_ATTR, False):
        yield
        return
    dev = _device_type(module)
    if dev == "meta":
        dev = "cpu"
    with torch.autocast(device_type=dev, dtype=torch.bfloat16):
        yield
