"""One protocol for every result steerlens returns (vector, carry, track, screen, experiment).

Every result class has:

- ``summary() -> str``: a few plain-words lines with the numbers they rest on;
- ``to_json() -> dict`` and ``from_json(d)``: a JSON round trip (``from_json(r.to_json())``
  gives an equal result);
- ``save(path)`` / ``load(path)``: the JSON (or safetensors + JSON) file a person can open;
- ``_repr_html_()``: how it shows in Jupyter: its headline, a compact table
  (``_html_details``), its main figure (``main_figure()``, a plotly figure drawn with
  :mod:`steerlens.core.plots`) and the full summary folded under "summary"; never a dict dump.

:class:`ResultMixin` gives ``save``/``load``/``_repr_html_``/``__str__`` from the first three, so
a result class writes only what is its own. Imports only :mod:`steerlens.core.common` and (to draw)
:mod:`steerlens.core.plots`.
"""

from __future__ import annotations

import dataclasses
import enum
import html
import math
import os
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePath
from typing import Any, ClassVar, Protocol, TypeVar, runtime_checkable

import numpy as np

from steerlens.core.common import jsonable, read_json, write_json

R = TypeVar("R", bound="ResultMixin")

__all__ = [
    "FORMAT_VERSION",
    "OMIT",
    "Record",
    "Result",
    "ResultMixin",
    "from_jsonable",
    "html_table",
    "result_html",
    "to_jsonable",
]

FORMAT_VERSION = 1
"""The version :meth:`Record.save` writes; a file of a newer version is refused with it named."""


@runtime_checkable
class Result(Protocol):
    """What every steerlens result offers (see the module doc)."""

    def summary(self) -> str: ...

    def to_json(self) -> dict[str, Any]: ...

    def save(self, path: str | os.PathLike[str]) -> Path: ...

    def _repr_html_(self) -> str: ...


class ResultMixin:
    """``save`` / ``load`` as JSON, ``_repr_html_`` and ``__str__`` from ``summary``,
    ``to_json`` and ``from_json`` (which a subclass defines)."""

    #: the ``kind`` recorded in the saved JSON, checked on load
    result_kind: str = "result"

    def summary(self) -> str:  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def to_json(self) -> dict[str, Any]:  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    @classmethod
    def from_json(cls: type[R], d: Mapping[str, Any]) -> R:  # pragma: no cover
        raise NotImplementedError

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write ``{"kind": ..., **to_json()}`` as JSON (atomically)."""
        return write_json(path, {"kind": self.result_kind, **self.to_json()})

    @classmethod
    def load(cls: type[R], path: str | os.PathLike[str]) -> R:
        """Read a file written by :meth:`save`, refusing one of another kind."""
        d = read_json(path)
        if not isinstance(d, dict):
            raise ValueError(f"{path} holds no {cls.__name__}: expected a JSON object")
        kind = d.pop("kind", cls.result_kind)
        if kind != cls.result_kind:
            raise ValueError(
                f"{path} holds a {kind!r} result, not {cls.result_kind!r}: load it with the "
                f"class that wrote it"
            )
        return cls.from_json(d)

    def _repr_html_(self) -> str:
        return result_html(
            type(self).__name__, self.summary(), self._html_details(), self.main_figure()
        )

    def _html_details(self) -> str:
        """The compact table under the headline; none by default."""
        return ""

    def main_figure(self) -> Any:
        """The result's main figure (a plotly ``go.Figure``), or None; shown by ``_repr_html_``."""
        return None

    def __str__(self) -> str:
        return self.summary()


def result_html(title: str, summary: str, table: str = "", figure: Any = None) -> str:
    """A result's notebook HTML: the title and the summary's first line, the table, the figure
    (:func:`steerlens.core.plots.figure_html`) and the rest of the summary folded away."""
    lines = summary.splitlines()
    head = html.escape(lines[0]) if lines else ""
    rest = "\n".join(lines[1:])
    fig = ""
    if figure is not None:
        from steerlens.core.plots import figure_html

        fig = figure_html(figure)
    more = (
        f"<details><summary>summary</summary><pre>{html.escape(rest)}</pre></details>"
        if rest
        else ""
    )
    return (
        f"<div class='steerlens-result'><div><b>{html.escape(title)}</b>: {head}</div>"
        f"{table}{fig}{more}</div>"
    )


def html_table(header: Sequence[str], rows: Sequence[Sequence[Any]], *, digits: int = 3) -> str:
    """A small HTML table; floats rounded to ``digits``, None shown as an em dash."""

    def cell(x: Any) -> str:
        x = jsonable(x)
        if x is None:
            return "—"
        if isinstance(x, float):
            return f"{x:.{digits}f}"
        return html.escape(str(x))

    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(x)}</td>" for x in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


# --------------------------------------------------------------- the derived protocol


def to_jsonable(x: Any) -> Any:
    """A field value as JSON: dataclasses field by field (a :class:`Record` through its own
    ``to_json``), tuples as lists, numpy / torch arrays as nested lists, non-finite floats as
    None (JSON has no NaN)."""
    if isinstance(x, Record):
        return x.to_json()
    if isinstance(x, enum.Enum):
        return to_jsonable(x.value)
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return {f.name: to_jsonable(getattr(x, f.name)) for f in dataclasses.fields(x)}
    if isinstance(x, Mapping):
        return {str(k): to_jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [to_jsonable(v) for v in x]
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if hasattr(x, "tolist"):  # numpy / torch
        return to_jsonable(x.tolist())
    return jsonable(x)


def from_jsonable(tp: Any, v: Any) -> Any:
    """The inverse of :func:`to_jsonable` for a value of type ``tp`` (a field's annotation):
    Records and dataclasses from dicts, tuples (and NamedTuples) from lists, enums from their
    values, paths from strings, numpy arrays (None as NaN), int dict keys from strings, ``X | None`` and ``float`` (None as NaN
    only where the type is ``float``)."""
    if v is None:
        return float("nan") if tp is float else None
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return from_jsonable(inner[0], v) if len(inner) == 1 else v
    if isinstance(tp, type):
        if issubclass(tp, Record):
            return tp.from_json(v)
        if dataclasses.is_dataclass(tp):
            hints = typing.get_type_hints(tp)
            return tp(**{k: from_jsonable(hints.get(k, Any), x) for k, x in v.items()})
        if issubclass(tp, tuple) and hasattr(tp, "_fields"):  # a NamedTuple, saved as a row
            hints = typing.get_type_hints(tp)
            return tp(
                *(from_jsonable(hints.get(n, Any), x) for n, x in zip(tp._fields, v, strict=False))
            )
        if issubclass(tp, PurePath):
            return tp(v)
        if issubclass(tp, enum.Enum):
            return tp(v)
        if issubclass(tp, np.ndarray):
            return np.array(_none_to_nan(v), dtype=float)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(from_jsonable(args[0], x) for x in v)
        return tuple(from_jsonable(a, x) for a, x in zip(args, v, strict=True))
    if origin is list:
        return [from_jsonable(args[0] if args else Any, x) for x in v]
    if origin is dict:
        key = int if args and args[0] is int else (lambda k: k)
        return {key(k): from_jsonable(args[1] if args else Any, x) for k, x in v.items()}
    if tp is float:
        return float(v)
    return v


def _none_to_nan(v: Any) -> Any:
    if isinstance(v, list):
        return [_none_to_nan(x) for x in v]
    return math.nan if v is None else v


def _value(x: Any) -> Any:
    """A derived value: a property's, or a no-argument method's result."""
    return x() if callable(x) else x


OMIT: Any = type("Omit", (), {"__repr__": lambda self: "OMIT"})()
"""In :attr:`Record.json_none`: a None field is left out of the JSON."""


class Record(ResultMixin):
    """The one result protocol, derived from a dataclass's fields: ``to_json`` writes every
    field (:func:`to_jsonable`), ``from_json`` reads them back by their annotations
    (:func:`from_jsonable`), ``save`` writes ``{"kind": "steerlens.<Class>", "format_version":
    1, **to_json()}`` and ``load`` checks both (``legacy_kinds``: kinds older files carry).
    A subclass writes only ``summary`` (and, to draw, ``_html_details`` / ``main_figure``).

    A saved layout that differs from the fields is declared, never written by hand:
    ``json_keys`` (field → its JSON key), ``json_none`` (what a None field is written as:
    a value such as ``{}``, or :data:`OMIT`), ``json_inline`` (Record fields whose keys sit in
    this record's own JSON; read back when all of them are there), ``derived_json``
    (properties written beside the fields), ``kind_in_json`` (``to_json`` records the kind
    too) and :meth:`_upgrade` (an older layout read into the current one). A field with
    ``metadata={"json": False}`` is not written (in memory only, or rebuilt by
    :meth:`_upgrade` from derived keys); ``derived_json`` keys go through ``json_keys`` too."""

    legacy_kinds: ClassVar[tuple[str | None, ...]] = ()
    #: properties (or no-argument methods) written beside the fields (read by people and other
    #: tools; never read back)
    derived_json: ClassVar[tuple[str, ...]] = ()
    json_keys: ClassVar[Mapping[str, str]] = {}
    json_none: ClassVar[Mapping[str, Any]] = {}
    json_inline: ClassVar[tuple[str, ...]] = ()
    kind_in_json: ClassVar[bool] = False

    def __init_subclass__(cls, **kw: Any) -> None:
        super().__init_subclass__(**kw)
        cls.result_kind = f"steerlens.{cls.__name__}"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.result_kind} if self.kind_in_json else {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            if not f.metadata.get("json", True):
                continue
            v = getattr(self, f.name)
            if v is None and f.name in self.json_none:
                if self.json_none[f.name] is not OMIT:
                    out[self.json_keys.get(f.name, f.name)] = self.json_none[f.name]
            elif f.name in self.json_inline:
                out.update({} if v is None else to_jsonable(v))
            else:
                out[self.json_keys.get(f.name, f.name)] = to_jsonable(v)
        for k in self.derived_json:
            out[self.json_keys.get(k, k)] = to_jsonable(_value(getattr(self, k)))
        return out

    @classmethod
    def _is_legacy(cls, d: Mapping[str, Any]) -> bool:
        """Whether ``d``, of another kind than this class writes, is an older file of it: its
        kind is one of ``legacy_kinds``."""
        return d.get("kind") in cls.legacy_kinds

    @classmethod
    def _upgrade(cls, d: dict[str, Any]) -> dict[str, Any]:
        """An older saved layout as the current one (``d`` is a copy; identity here)."""
        return d

    @classmethod
    def from_json(cls: type[R], d: Mapping[str, Any]) -> R:
        rec = typing.cast(type[Record], cls)
        d = rec._upgrade(dict(d))
        hints = typing.get_type_hints(cls)
        kw: dict[str, Any] = {}
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            tp = hints.get(f.name, Any)
            if f.name in rec.json_inline:
                inner = [a for a in typing.get_args(tp) if a is not type(None)] or [tp]
                names = [g.name for g in dataclasses.fields(inner[0])]
                kw[f.name] = inner[0].from_json(d) if all(n in d for n in names) else None
                continue
            key = rec.json_keys.get(f.name, f.name)
            if key not in d:
                continue
            v = d[key]
            none_as = rec.json_none.get(f.name, OMIT)
            kw[f.name] = None if none_as is not OMIT and v == none_as else from_jsonable(tp, v)
        return cls(**kw)

    def save(self, path: str | os.PathLike[str]) -> Path:
        return write_json(
            path, {"kind": self.result_kind, "format_version": FORMAT_VERSION, **self.to_json()}
        )

    @classmethod
    def load(cls: type[R], path: str | os.PathLike[str]) -> R:
        """Read a file written by :meth:`save` (or by an older release: :meth:`_is_legacy`;
        then its kind stays in what :meth:`_upgrade` sees)."""
        d = read_json(path)
        if not isinstance(d, dict):
            raise ValueError(f"{path} holds no {cls.__name__}: expected a JSON object")
        kind = d.get("kind")
        version = d.pop("format_version", 1)
        if kind != cls.result_kind and not typing.cast(type[Record], cls)._is_legacy(d):
            raise ValueError(
                f"{path} holds a {kind!r} result, not {cls.result_kind!r}: load it with the "
                "class that wrote it"
            )
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise ValueError(
                f"{path} was written in result format {version!r}; this steerlens reads up to "
                f"{FORMAT_VERSION}: upgrade steerlens to read it"
            )
        if kind == cls.result_kind:
            d.pop("kind")
        return cls.from_json(d)
