"""The derived result protocol (:class:`steerlens.results.Record`): JSON from the fields, one
kind scheme, a format version, legacy kinds."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from steerlens.results import FORMAT_VERSION, Record


@dataclass(frozen=True)
class _Inner(Record):
    a: float
    b: tuple[int, ...] = ()

    def summary(self) -> str:
        return f"inner {self.a}"


@dataclass
class _Outer(Record):
    name: str
    inner: _Inner
    rows: list[_Inner] = field(default_factory=list)
    by: dict[str, _Inner] = field(default_factory=dict)
    p: float | None = None
    arr: list[float] = field(default_factory=list)

    legacy_kinds = ("outer_v0",)

    def summary(self) -> str:
        return self.name


def _outer() -> _Outer:
    i = _Inner(0.5, (1, 2))
    return _Outer("x", i, [i, _Inner(float("nan"))], {"k": i}, None, [1.0, 2.0])


def test_round_trip_is_derived_from_the_fields(tmp_path: Path) -> None:
    o = _outer()
    d = o.to_json()
    assert d["inner"] == {"a": 0.5, "b": [1, 2]}
    assert d["rows"][1]["a"] is None  # NaN is no JSON: None, and back to NaN for a float
    back = _Outer.from_json(json.loads(json.dumps(d)))
    assert back.inner == o.inner and back.by == o.by and back.arr == o.arr
    assert math.isnan(back.rows[1].a)
    path = o.save(tmp_path / "o.json")
    saved = json.loads(path.read_text())
    assert saved["kind"] == "steerlens._Outer" and saved["format_version"] == FORMAT_VERSION
    assert _Outer.load(path).inner == o.inner
    assert "<b>_Outer</b>" in o._repr_html_()


def test_numpy_fields_are_written_as_lists() -> None:
    assert _Inner(np.float64(0.25), tuple(np.arange(2).tolist())).to_json() == {
        "a": 0.25,
        "b": [0, 1],
    }


def test_load_checks_kind_version_and_reads_legacy_kinds(tmp_path: Path) -> None:
    d = _outer().to_json()
    p = tmp_path / "a.json"
    p.write_text(json.dumps({"kind": "outer_v0", **d}))
    assert _Outer.load(p).name == "x"
    p.write_text(json.dumps({"kind": "steerlens._Inner", **d}))
    with pytest.raises(ValueError, match="load it with the class that wrote it"):
        _Outer.load(p)
    p.write_text(json.dumps({"kind": "steerlens._Outer", "format_version": 99, **d}))
    with pytest.raises(ValueError, match=r"format 99.*upgrade steerlens"):
        _Outer.load(p)
