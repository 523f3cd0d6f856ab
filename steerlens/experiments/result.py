"""The result of an experiment run: the ``results.json`` dict behind the result protocol."""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from steerlens.core.common import read_json, write_json
from steerlens.core.results import OMIT, Record, ResultMixin, html_table
from steerlens.experiments.owl_records import OwlPower, OwlResults

__all__ = ["ExperimentResult", "ExperimentVerdictText"]


@dataclass
class ExperimentVerdictText(Record):
    """The words of any experiment's verdict: its headline, the lines it rests on, its
    strength (the colour of its box) and its measured power (a text, or ``{"text": …}``)."""

    headline: str | None = None
    lines: list[str] = field(default_factory=list)
    strength: str | None = None
    power: Any = None

    json_none: ClassVar[Mapping[str, Any]] = {"strength": OMIT, "power": OMIT}

    @property
    def power_text(self) -> str:
        pw = OwlPower.from_json(self.power).text if isinstance(self.power, Mapping) else self.power
        return pw.strip() if isinstance(pw, str) else ""

    def summary(self) -> str:
        return "\n".join([str(self.headline), *(f"  {line}" for line in self.lines)])


class ExperimentResult(ResultMixin, Mapping[str, Any]):
    """What an experiment returns and writes as ``results.json``.

    It is also a read-only mapping of that JSON (``res["verdict"]["headline"]``), so code that
    used the dict the demo returned keeps working. ``kind`` in the JSON names the experiment
    (``"steerlens.demo"`` for the owl experiment); :attr:`typed` is the same JSON parsed once
    (:class:`~steerlens.experiments.owl_records.OwlResults`: its track, carry and screen as
    the library's typed results).
    """

    result_kind = "steerlens.experiment"

    def __init__(self, data: Mapping[str, Any]) -> None:
        self._data: dict[str, Any] = dict(data)

    @functools.cached_property
    def typed(self) -> OwlResults:
        return OwlResults.parse(self._data)

    # Mapping -------------------------------------------------------------------------
    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    # result protocol -----------------------------------------------------------------
    @property
    def kind(self) -> str:
        return str(self._data.get("kind", self.result_kind))

    def summary(self) -> str:
        v = self._data.get("verdict")
        if not isinstance(v, Mapping):
            return f"{self.kind}: no verdict"
        text = ExperimentVerdictText.from_json(v)
        if text.headline is None:
            text.headline = f"{self.kind}: no verdict"
        return text.summary()

    def to_json(self) -> dict[str, Any]:
        return self._data

    def _html_details(self) -> str:
        """One row per part of the run: its headline."""
        rows = [[k, r.summary().splitlines()[0]] for k, r in self.typed.parts().items()]
        return html_table(["part", "result"], rows) if rows else ""

    def main_figure(self) -> Any:
        """The alignment track's figure, else the carry test's."""
        for part in self.typed.parts().values():
            fig = part.main_figure()
            if fig is not None:
                return fig
        return None

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> ExperimentResult:
        return cls(d)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the results JSON (its own ``kind`` names the experiment)."""
        return write_json(path, self._data)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ExperimentResult:
        """Read a ``results.json`` an experiment wrote."""
        d = read_json(path)
        if not isinstance(d, dict) or not str(d.get("kind", "")).startswith("steerlens."):
            raise ValueError(
                f"{path} is not a steerlens experiment's results.json (no 'kind' "
                "'steerlens.…'): give the results.json from the experiment's output folder"
            )
        return cls(d)

    def __repr__(self) -> str:
        return f"ExperimentResult(kind={self.kind!r}, keys={list(self._data)})"
