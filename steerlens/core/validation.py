"""Checks of a run's settings that need no model: called on every command's configs before
anything loads or is written, so a bad value fails in the first second, not after a stage.

:func:`check_config` walks a config dataclass (or a mapping of settings) by field name and
type:

- every float, and every float of a tuple, is finite (``alphas: [4, .nan]`` is refused);
- ``alpha`` as a float is a significance level: in (0, 1); above 0.2 a warning;
- counts (``steps``, ``batch_size``, ``n_samples`` …) are at least 1, other non-negative ints
  (``n_random``, ``benign_replicates`` …) at least 0; seeds, layers and offsets are free;
- a learning rate (``lr``) is above 0.

A refusal names the setting as the caller spells it (``flag``: the command line gives
``--teacher-alpha``, the library the field name) and shows the bad value.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["ALPHA_WARN", "check_config", "cli_flag"]

ALPHA_WARN = 0.2
"""A significance level above this is accepted with a warning (the usual one is 0.05)."""

POSITIVE = frozenset(
    {
        "max_steps",
        "batch_size",
        "eval_batch_size",
        "n",
        "n_samples",
        "save_every",
        "rank",
        "n_boot",
        "n_null",
        "n_perm",
        "screen_max",
        "probe_n",
        "carry_eval_n",
        "max_new_tokens",
        "epochs",
        "top",
    }
)
"""Integer settings that count something that must exist: at least 1."""

FREE_INTS = ("seed", "layer", "offset", "start", "first", "capture")
"""Integer settings whose name contains one of these may be any integer (a negative layer
counts from the end)."""


def cli_flag(name: str) -> str:
    """``teacher_alpha`` → ``--teacher-alpha``."""
    return "--" + name.replace("_", "-")


def _items(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _show(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return str(value)


def _fields(config: Any) -> dict[str, tuple[Any, str]]:
    """name → (value, declared type as text: ``"float"``; a mapping's: its value's type)."""
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        return {
            f.name: (getattr(config, f.name), str(getattr(f.type, "__name__", f.type)))
            for f in dataclasses.fields(config)
            if f.init
        }
    if isinstance(config, Mapping):
        return {k: (v, type(v).__name__) for k, v in config.items()}
    raise TypeError(f"check_config takes a config dataclass or a mapping, not {type(config)}")


def check_config(config: Any, *, flag: Callable[[str], str] | None = None) -> list[str]:
    """Refuse (``ValueError`` naming the setting, the bad value and the fix) a setting no run
    can use; return the warnings for settings that are allowed but unusual (the caller shows
    them: the command line on stderr, the library through :mod:`warnings`)."""
    name_of = flag or (lambda n: n)
    warnings: list[str] = []
    for name, (value, hint) in _fields(config).items():
        opt = name_of(name)
        items = _items(value)
        floats = [x for x in items if isinstance(x, float)]
        if any(not math.isfinite(x) for x in floats):
            raise ValueError(
                f"{opt} {_show(value)}: {'every value' if len(items) > 1 else 'the value'} must "
                "be a finite number (NaN and inf are not); give a number such as 4"
            )
        is_level = hint.startswith("float") and isinstance(value, (int, float))
        if name == "alpha" and is_level and not isinstance(value, bool):
            if not 0.0 < value < 1.0:
                raise ValueError(
                    f"{opt} {value:g}: a significance level is a probability in (0, 1); give "
                    "one such as 0.05 (the default) or 0.01"
                )
            if value > ALPHA_WARN:
                warnings.append(
                    f"{opt} {value:g}: a significance level above {ALPHA_WARN:g} calls weak "
                    "evidence significant (the usual level is 0.05)"
                )
        if name == "lr" and isinstance(value, float) and value <= 0:
            raise ValueError(f"{opt} {value:g}: the learning rate must be above 0, e.g. 1e-4")
        ints = [x for x in items if isinstance(x, int) and not isinstance(x, bool)]
        if not ints or any(word in name for word in FREE_INTS):
            continue
        least = 1 if name in POSITIVE else 0
        bad = [x for x in ints if x < least]
        if bad:
            need, fix = ("at least 1", "a positive") if least else ("0 or more", "a non-negative")
            raise ValueError(
                f"{opt} {_show(value)}: must be {need} (got {bad[0]}); give {fix} whole number"
            )
    return warnings
