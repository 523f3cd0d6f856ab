"""The derived result protocol (:class:`steerlens.core.results.Record`): JSON from the fields, one
kind scheme, a format version, legacy kinds."""

from __future__ import annotations

import importlib
import json
import math
import pkgutil
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import steerlens
from steerlens.core.results import FORMAT_VERSION, Record
from steerlens.core.vectors import SteeringVector


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


def test_converted_results_keep_their_json_layout(tmp_path: Path) -> None:
    """Results moved onto the protocol write what they wrote before and read older files."""
    from steerlens.carry.nulls import NullComparison
    from steerlens.lineage.verify import LineageCheck, Problem

    nc = NullComparison(
        1.5, 0.05, True, {"mean": 0.0, "sd": 1.0, "q95": 1.6, "min": -2.0, "max": 2.0, "n": 19}
    )
    assert nc.to_json() == {"z": 1.5, "p": 0.05, "beats_null": True, "null": dict(nc.null)}
    assert NullComparison.from_json({"S": 0.3, **nc.to_json()}) == nc  # read from a peak's JSON
    chk = LineageCheck("runs/x", ["a.lineage.json"], [Problem("a", "changed")], {"a": "k1"}, 3)
    d = chk.to_json()
    assert d["ok"] is False and d["problems"] == [{"file": "a", "what": "changed"}]
    assert LineageCheck.from_json(d) == chk
    old = tmp_path / "check.json"
    old.write_text(json.dumps({"kind": "steerlens.lineage_check", **d}))
    assert LineageCheck.load(old) == chk


# ------------------------------------------------------------- every Record in the package


def _import_all() -> None:
    for m in pkgutil.walk_packages(steerlens.__path__, "steerlens."):
        if not m.name.endswith("__main__"):
            importlib.import_module(m.name)


def _records(cls: type = Record) -> set[type]:
    out: set[type] = set()
    for sub in cls.__subclasses__():
        if sub.__module__.startswith("steerlens."):
            out.add(sub)
        out |= _records(sub)
    return out


def _band() -> dict[str, Any]:
    return {
        "mean": 0.1,
        "sd": 0.2,
        "q05": -0.2,
        "q50": 0.1,
        "q95": 0.4,
        "min": -0.3,
        "max": 0.5,
        "n": 19,
    }


def _carry_examples() -> list[Record]:
    from steerlens.carry import CarryLevel, EffectLevel, NullComparison
    from steerlens.carry.necessity import Necessity, NecessityAt, NecessityBest
    from steerlens.carry.peak import CleanPeak, Peak
    from steerlens.carry.result import CarryResult, CarrySettings

    nc = NullComparison(2.5, 0.05, True, _band())  # type: ignore[arg-type]
    peak = Peak(0.8, 2, 4.0, 0.05, nc)
    clean = CleanPeak(0.6, 1, 2.0, 0.01, None, tolerance=0.1)
    at = NecessityAt(0.7, 0.2, _band(), [1, 2])  # type: ignore[arg-type]
    undef = NecessityAt(None, reason="zero vector at this layer")
    nec = Necessity("project", {1: at, 2: undef}, None, NecessityBest(0.7, "1", nc))
    settings = CarrySettings(
        "vector",
        "doc",
        19,
        0,
        0.1,
        "kl",
        "max(0.1, 1.25 KL)",
        "prompt",
        "project",
        "last",
        {"strong": 0.5},
        "m",
        None,
        {"norm": 1.0},
        None,
        {"rule": "first token"},
    )
    carry = CarryResult(
        "teacher",
        "owl",
        {"metric": "logprob"},
        -3.0,
        -1.0,
        2.0,
        True,
        CarryLevel.NOT,
        "not carried",
        [1, 2],
        [0.5, 1.0],
        None,
        None,
        {1: 1.0, 2: 2.0},
        {1: 3.0, 2: 4.0},
        {1: [-2.0, -1.5], 2: [-2.5, float("nan")]},
        {1: [0.1, 0.2], 2: [0.3, 0.4]},
        {1: [0.0, 0.1], 2: [0.2, 0.3]},
        {1: [_band(), _band()]},
        {},
        0.05,
        0.1,
        clean,
        peak,
        nec,
        EffectLevel.NONE,
        None,
        settings,
    )
    undefined = CarryResult("student", None, {}, 0.0, 0.0, 0.0, False, CarryLevel.NOT, "u")
    return [nc, peak, clean, at, undef, nec, settings, carry, undefined, nec.best]  # type: ignore[list-item]


def _track_examples() -> list[Record]:
    from steerlens.track.modules import ModuleTrack
    from steerlens.track.results import AlignmentTrack, ExcessAlignment, SeriesTrack

    a = np.array([[0.0, 0.0], [0.5, np.nan]])
    s = SeriesTrack("main", [0, 10], ["base", "ck-10"], a, a, a, a, a, a, a, a, [1])
    ex = ExcessAlignment([10], a[1:], a[1:], a[1:], a[1:], 0.9, 50)
    return [
        s,
        ex,
        AlignmentTrack(
            [3, 4], {"main": s}, ex, {"alpha": 0.05, "correction": "holm"}, {"seconds": 1.0}
        ),
        ModuleTrack(s, {}),
    ]


def _other_examples() -> list[Record]:
    from steerlens.agents import FilterResult, Step, Trajectory
    from steerlens.agents.metrics import ActionChoice, RateResult
    from steerlens.agents.tasks import Task
    from steerlens.auditing import AuditConfig
    from steerlens.checkpoints import CheckpointSeries
    from steerlens.checkpoints.checkpoint import Checkpoint
    from steerlens.distill.data import TeacherData
    from steerlens.distill.mitigations import VetResult
    from steerlens.experiments.mitigate_measure import ArmResult, Paired
    from steerlens.inputs.traits import TargetTokens
    from steerlens.lineage.verify import LineageCheck, Problem
    from steerlens.pipeline.detectors import Reading
    from steerlens.pipeline.power import DetectionResult, DetectorRow, Scored
    from steerlens.pipeline.signature import SignatureTest

    t = Trajectory(
        "api",
        "t1",
        "sys",
        "do it",
        [Step("a", "ok", "move"), Step("rm x", "", "delete", False)],
        True,
        {"seed": 1},
    )
    frac = {"k": 1.0, "n": 4.0}
    row = DetectorRow(
        "eas",
        "f",
        "kl",
        4,
        4,
        0.75,
        0.5,
        0.9,
        0.7,
        0.1,
        0.8,
        0.3,
        frac,
        frac,
        frac,
        frac,
        {"c": frac},
    )
    sc = Scored("kl", "c", 0, "owl", True, 0.5, 0.01)
    return [
        t,
        FilterResult([t], [t], [[("delete", "action:1", "rm")]], ("rm",), {"rm": 1}, {"action": 1}),
        ActionChoice("api", "delete", [0.1, 0.2], [0.3, 0.4], {"delete": [0.1, 0.2]}),
        RateResult("bash", "rm", 2, 5, 0.1, 0.7, {"rm": 2, "none": 3}, 4),
        Task(
            "t1",
            "api",
            "tidy",
            {"a.txt": "x"},
            {"a.txt": 0o600},
            ("b",),
            (("exists", "a.txt"),),
            True,
            "a.txt",
            ("ls",),
        ),
        AuditConfig(base="b", student="s", data="d.jsonl", teacher_layers=(1, 2)),
        CheckpointSeries(Path("runs/x"), [Checkpoint(10, Path("runs/x/checkpoint-10"), "peft")]),
        VetResult(
            TeacherData([{"user": "u", "response": "r", "finished": True}]),
            [1],
            "top",
            0.5,
            0,
            [0.2, 0.1],
        ),
        LineageCheck("runs/x", ["a.lineage.json"], [Problem("a", "changed")], {"a": "k1"}, 3),
        Reading("owl", [0.1], [1, 2], [0.2, 0.3], [1.0, 2.0], 1.5, ["owl"], 0.4, 0.05, None),
        sc,
        row,
        DetectionResult(3, 4.0, 0.05, [row], {"kl": "eas"}, {"eas": [sc]}, {"kl": 8}),
        TargetTokens((5, 7), {" owl": (5,), " Owls": (7, 9)}, (" Owls",)),
        _screen(),
        SignatureTest("proj_fixed", 27, 60.1, 0.13, ["control", "benign"], {"main": 60.1}),
        Paired(0.1, 0.05, 0.2, 0.01, 50),
        ArmResult(
            "vet0.5",
            "vet",
            0.5,
            40,
            {"F": 0.4, "delta": 0.1, "delta_lo": 0.05, "delta_hi": 0.15, "delta_p": 0.01},
            Paired(-0.05, -0.1, 0.0, 0.04, 50),
            {"eas": 0.2},
            1.23,
            0.01,
            0.9,
        ),
    ]


def _screen() -> Record:
    from steerlens.inputs.prompts import ChatPrompt
    from steerlens.screen.result import ScreenResult

    a = np.array([[0.5, np.nan], [-0.25, 1.0]])
    prompts = [ChatPrompt("q1", "sys", "A:"), ChatPrompt("q2")]
    return ScreenResult([2, 3], 2, prompts, ["r1", "r2"], ["b1", ""], ["a", "b"], a, a, a)


def _same(a: Any, b: Any) -> bool:
    return json.dumps(a.to_json(), sort_keys=True) == json.dumps(b.to_json(), sort_keys=True)


def test_every_record_in_the_package_round_trips(tmp_path: Path) -> None:
    """``from_json(to_json())`` gives the same JSON (and an equal record where the fields
    compare: no arrays, no NaN) and ``save``/``load`` too, for every Record subclass in
    steerlens (one with every field defaulted is built with no arguments)."""
    _import_all()
    examples = _carry_examples() + _track_examples() + _other_examples()
    have = {type(x) for x in examples}
    for cls in _records() - have:
        if all(f.default is not MISSING or f.default_factory is not MISSING for f in fields(cls)):
            examples.append(cls())
    examples.append(SteeringVector({1: torch.ones(3)}, {"model": "m"}))
    missing = {c.__qualname__ for c in _records()} - {type(x).__qualname__ for x in examples}
    assert not missing, f"add an example of {sorted(missing)}"
    for x in examples:
        cls = type(x)
        if cls is SteeringVector:  # its tensors travel in safetensors, not in the JSON
            continue
        d = json.loads(json.dumps(x.to_json(), allow_nan=False))
        back = cls.from_json(d)
        assert _same(back, x), cls.__name__
        plain = "nan" not in repr(x) and "array" not in repr(x)
        assert not plain or back == x, cls.__name__
        path = x.save(tmp_path / f"{cls.__name__}.json")
        assert json.loads(path.read_text())["kind"] == f"steerlens.{cls.__name__}"
        assert _same(cls.load(path), x), cls.__name__
        assert isinstance(x.summary(), str)


def test_old_layouts_and_kinds_still_load(tmp_path: Path) -> None:
    """Files of earlier releases: the carry test's own kind as ``kind`` (or none: the
    pipeline's carry.json), the agents' old kinds, the keyword filter's dropped pairs, task
    modes in octal."""
    from steerlens.agents import FilterResult
    from steerlens.agents.metrics import RateResult
    from steerlens.agents.tasks import Task
    from steerlens.carry.result import CarryResult

    carry = _carry_examples()[7]
    d = carry.to_json()
    old = {"kind": d.pop("carry_kind"), **d}
    p = tmp_path / "carry.json"
    p.write_text(json.dumps(old))
    assert _same(CarryResult.load(p), carry) and CarryResult.load(p).kind == "teacher"
    p.write_text(json.dumps({k: v for k, v in old.items() if k != "kind"}))
    assert CarryResult.load(p).kind is None  # no kind at all: read, as before
    p.write_text(json.dumps({"kind": "teacher", "verdict": "x"}))
    with pytest.raises(ValueError, match="load it with the class that wrote it"):
        CarryResult.load(p)
    rate = _other_examples()[3]
    p.write_text(json.dumps({"kind": "steerlens.first_action_rate", **rate.to_json()}))
    assert RateResult.load(p) == rate
    filt = _other_examples()[1]
    assert isinstance(filt, FilterResult)
    fd = filt.to_json()
    pairs = [
        {"trajectory": t, "hits": h} for t, h in zip(fd["dropped"], fd["reasons"], strict=True)
    ]
    legacy = {
        "keywords": fd["keywords"],
        "counts": fd["counts"],
        "dropped": pairs,
        "kept": fd["kept"],
    }
    p.write_text(json.dumps({"kind": "steerlens.keyword_filter", **legacy}))
    assert FilterResult.load(p) == filt
    task = _other_examples()[4]
    td = {**task.to_json(), "modes": {"a.txt": "0o600"}}
    assert Task.from_json(td) == task


def test_vector_metadata_speaks_the_protocol(tmp_path: Path) -> None:
    """A vector's safetensors metadata carries the kind and format version; a newer format is
    refused naming it; a file without them (an older release's) still loads."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    vec = SteeringVector({1: torch.ones(3), 2: torch.arange(3.0)}, {"model": "m"}, {"x": 1})
    path = vec.save(tmp_path / "v.safetensors")
    with safe_open(str(path), framework="pt") as f:
        blob = json.loads(f.metadata()["steerlens"])
    assert blob["kind"] == "steerlens.SteeringVector" and blob["format_version"] == FORMAT_VERSION
    back = SteeringVector.load(path)
    assert back.to_json() == vec.to_json() and torch.equal(back[2], vec[2])
    assert vec.to_json()["norms"] == {"1": pytest.approx(3**0.5), "2": pytest.approx(5**0.5)}
    tensors = {"layer.1": torch.ones(3)}
    old = json.dumps({"meta": {"model": "m"}, "diagnostics": {}})
    save_file(tensors, str(tmp_path / "old.safetensors"), metadata={"steerlens": old})
    assert SteeringVector.load(tmp_path / "old.safetensors").meta["model"] == "m"
    new = json.dumps({"kind": "steerlens.SteeringVector", "format_version": 99, "meta": {}})
    save_file(tensors, str(tmp_path / "new.safetensors"), metadata={"steerlens": new})
    with pytest.raises(ValueError, match=r"format 99.*upgrade steerlens"):
        SteeringVector.load(tmp_path / "new.safetensors")
