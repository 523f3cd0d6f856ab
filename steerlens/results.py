"""One protocol for every result steerlens returns (vector, carry, track, screen, experiment).

Every result class has:

- ``summary() -> str``: a few plain-words lines with the numbers they rest on;
- ``to_json() -> dict`` and ``from_json(d)``: a JSON round trip (``from_json(r.to_json())``
  gives an equal result);
- ``save(path)`` / ``load(path)``: the JSON (or safetensors + JSON) file a person can open;
- ``_repr_html_()``: how it shows in Jupyter: its headline, a compact table
  (``_html_details``), its main figure (``main_figure()``, a plotly figure drawn with
  :mod:`steerlens.plots`) and the full summary folded under "summary"; never a dict dump.

:class:`ResultMixin` gives ``save``/``load``/``_repr_html_``/``__str__`` from the first three, so
a result class writes only what is its own. Imports only :mod:`steerlens.common` and (to draw)
:mod:`steerlens.plots`.
"""

from __future__ import annotations

import html
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar, runtime_checkable

from steerlens.common import jsonable, read_json, write_json

R = TypeVar("R", bound="ResultMixin")

__all__ = ["Result", "ResultMixin", "html_table", "result_html"]


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
    (:func:`steerlens.plots.figure_html`) and the rest of the summary folded away."""
    lines = summary.splitlines()
    head = html.escape(lines[0]) if lines else ""
    rest = "\n".join(lines[1:])
    fig = ""
    if figure is not None:
        from steerlens.plots import figure_html

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
