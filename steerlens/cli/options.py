"""Command-line options generated from config dataclasses.

Each dataclass field is one long option (``batch_size`` → ``--batch-size``) and one
``--config FILE.yaml`` key, with the field's default as the default and its type as the parser,
so the command line, config files and the library cannot disagree. A field's ``metadata`` may
give ``help``, ``choices``, ``exists`` (``"file"``/``"dir"``: checked before any model loads) and
``cli=False`` (no option: a field with no command-line form, such as a dict).

Options are parsed with default ``SUPPRESS``: the namespace holds only what was given, and a
config is built as ``cls(**given)``, so an option left out takes the library's default.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import MISSING, dataclass
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "Option",
    "add_options",
    "build",
    "convert",
    "merge_options",
    "options_of",
    "read_config_file",
]


@dataclass(frozen=True)
class Option:
    """One command-line option, from one dataclass field."""

    name: str
    hint: Any
    default: Any = MISSING
    help: str = ""
    choices: tuple[Any, ...] | None = None
    exists: str | None = None
    output: str | None = None  # "file" / "dir": a path the command writes (checked first)
    owner: str = ""
    shown: str | None = None  # the default as help shows it, when not the value itself
    positional: bool = False  # a required argument without a flag (``lineage show DIR``)

    @property
    def flag(self) -> str:
        return self.name.upper() if self.positional else "--" + self.name.replace("_", "-")

    @property
    def required(self) -> bool:
        return self.default is MISSING


def options_of(cls: type[Any], help: Mapping[str, str] | None = None) -> list[Option]:
    """The options of a config dataclass: one per field (``help`` fills in help text for
    fields whose metadata has none)."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        if not f.init or f.metadata.get("cli", True) is False:
            continue
        default: Any = f.default
        factory: Any = f.default_factory
        if default is MISSING and factory is not MISSING:
            default = factory()
        hint = hints[f.name]
        _check_supported(hint, f"{cls.__name__}.{f.name}")
        choices = tuple(f.metadata.get("choices") or ()) or None
        given = {k: f.metadata[k] for k in ("exists", "output", "positional") if k in f.metadata}
        text = f.metadata.get("help") or (help or {}).get(f.name) or f"{cls.__name__}.{f.name}"
        out.append(Option(f.name, hint, default, text, choices, owner=cls.__name__, **given))
    return out


def merge_options(groups: Iterable[Sequence[Option]]) -> list[Option]:
    """Options of several dataclasses, in order; a name seen before keeps its first option
    (the shared ``--seed``, ``--model`` … feed every config that has such a field)."""
    seen: dict[str, Option] = {}
    for group in groups:
        for opt in group:
            seen.setdefault(opt.name, opt)
    return list(seen.values())


# ------------------------------------------------------------------------------ types


def _args(hint: Any) -> tuple[Any, ...]:
    return typing.get_args(hint)


def _is_union(hint: Any) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType)


def _is_tuple(hint: Any) -> bool:
    return typing.get_origin(hint) is tuple


def _check_supported(hint: Any, where: str) -> None:
    if _is_union(hint):
        for h in _args(hint):
            if h is not type(None):
                _check_supported(h, where)
        return
    if _is_tuple(hint):
        _check_supported(_args(hint)[0], where)
        return
    if hint not in (bool, int, float, str):
        raise TypeError(
            f"{where}: type {hint} has no command-line form; give the field "
            "metadata={'cli': False} or a type of bool, int, float, str, tuple or | None"
        )


def _type_name(hint: Any) -> str:
    if _is_union(hint):
        return " | ".join(_type_name(h) for h in _args(hint))
    if _is_tuple(hint):
        return f"comma-separated {_type_name(_args(hint)[0])}s"
    return "none" if hint is type(None) else getattr(hint, "__name__", str(hint))


def _scalar(hint: Any, value: Any) -> Any:
    if hint is bool:
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{value!r} is not true or false")
    if hint is int:
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ValueError(f"{value!r} is not an integer")
        return int(value)
    if hint is float:
        if isinstance(value, bool):
            raise ValueError(f"{value!r} is not a number")
        return float(value)
    if isinstance(value, (list, tuple)):  # a YAML list for a spec string such as layers
        return ",".join(map(str, value))
    return str(value)


def _items(hint: Any, value: Any) -> tuple[Any, ...]:
    item = _args(hint)[0]
    parts = list(value) if isinstance(value, (list, tuple)) else str(value).split(",")
    out: list[Any] = []
    for part in parts:
        if isinstance(part, str):
            part = part.strip()
            if not part:
                continue
            if item is int and "-" in part[1:]:  # a range such as 10-20
                a, b = part[0] + part[1:].split("-", 1)[0], part[1:].split("-", 1)[1]
                if int(b) < int(a):
                    raise ValueError(f"empty range {part!r}: the end is below the start")
                out.extend(range(int(a), int(b) + 1))
                continue
        out.append(_scalar(item, part))
    return tuple(out)


def _convert(hint: Any, value: Any) -> Any:
    if _is_union(hint):
        members = [h for h in _args(hint) if h is not type(None)]
        if len(members) < len(_args(hint)) and (
            value is None or str(value).strip().lower() in ("none", "null")
        ):
            return None
        seqs = [h for h in members if _is_tuple(h)]
        many = isinstance(value, (list, tuple)) or (isinstance(value, str) and "," in value)
        if seqs and (many or len(seqs) == len(members)):
            return _items(seqs[0], value)
        return _scalar(next(h for h in members if not _is_tuple(h)), value)
    if _is_tuple(hint):
        return _items(hint, value)
    return _scalar(hint, value)


def convert(opt: Option, value: Any) -> Any:
    """``value`` (command-line text or a YAML value) as the option's type, checked against its
    choices; a ValueError naming the option and what it takes otherwise."""
    try:
        out = _convert(opt.hint, value)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{opt.flag} {value!r}: expected {_type_name(opt.hint)} ({exc})") from None
    if opt.choices is not None and out not in opt.choices:
        raise ValueError(f"{opt.flag} {value!r}: choose one of {', '.join(map(str, opt.choices))}")
    return out


# ------------------------------------------------------------------------------ argparse


def _shown(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, tuple):
        return ",".join(map(str, value)) or "none"
    return str(value)


def add_options(parser: argparse.ArgumentParser, options: Sequence[Option]) -> None:
    """One ``--long-option`` per option; nothing lands in the namespace unless given."""
    for opt in options:
        text = opt.help
        if opt.choices:
            text += f" ({' | '.join(map(str, opt.choices))})"
        shown = opt.shown if opt.shown is not None else _shown(opt.default)
        text += " (required)" if opt.required else f" (default: {shown})"
        if opt.positional:
            parser.add_argument(opt.name, metavar=opt.name.upper(), help=opt.help)
            continue
        kw: dict[str, Any] = {"dest": opt.name, "default": argparse.SUPPRESS}
        if opt.hint is bool:
            kw["action"] = argparse.BooleanOptionalAction
        else:
            kw["metavar"] = opt.name.upper()
        parser.add_argument(opt.flag, help=text.strip().replace("%", "%%"), **kw)


def read_config_file(path: str | Path, options: Sequence[Option], command: str) -> dict[str, Any]:
    """The option values of a ``--config`` YAML file (keys: long option names, with ``-`` or
    ``_``); a clear error for a missing or malformed file or an unknown key."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"config file {p} does not exist: check the --config path")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ValueError(
            f"config file {p} is not valid YAML ({_yaml_problem(exc)}): fix it"
        ) from None
    if not isinstance(data, dict):
        raise ValueError(f"config file {p} must be a mapping of option: value, one per line")
    known = {o.name for o in options}
    out: dict[str, Any] = {}
    for key, val in data.items():
        name = str(key).replace("-", "_")
        if name not in known:
            valid = ", ".join(sorted(n.replace("_", "-") for n in known))
            raise ValueError(
                f"config file {p}: unknown option {key!r} for `{command}`; the keys it takes "
                f"are: {valid}"
            )
        out[name] = val
    return out


def _yaml_problem(exc: Exception) -> str:
    """A YAML error in one line: what is wrong and where."""
    mark = getattr(exc, "problem_mark", None)
    what = getattr(exc, "problem", None) or getattr(exc, "reason", None) or str(exc)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return " ".join(f"{what}{where}".split())


def build(cls: type[Any], values: Mapping[str, Any]) -> Any:
    """``cls`` from the given values of its fields (the rest keep the dataclass defaults)."""
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    return cls(**{k: v for k, v in values.items() if k in names})
