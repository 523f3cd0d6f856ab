"""The typed Records of :mod:`steerlens.experiments.agentic_records`
read a real quick run's ``results.json`` and ``metrics.json`` and write them back key for key, the
verdict recomputed from the parsed file is the saved one, and the verdict reads a transfer."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from steerlens.core.common import read_json
from steerlens.experiments.agentic_records import (
    AgenticMetrics,
    AgenticSummary,
    AgenticVerdict,
)
from steerlens.experiments.agentic_verdict import agentic_verdict
from steerlens.measures.stats import wilson
from steerlens.report.agentic import agentic_answer


def _plain(d: Any) -> str:
    """JSON text (key order kept; NaN as null, as the file holds it)."""
    return json.dumps(json.loads(json.dumps(d).replace("NaN", "null")))


@pytest.fixture(scope="module")
def run_dir(agentic_run: Any) -> Path:
    """The quick agentic-api run test_agentic_experiment checks end to end (conftest)."""
    return agentic_run("api")[2]


def test_results_json_round_trips_through_the_records(run_dir: Path) -> None:
    d = read_json(run_dir / "results.json")
    a = AgenticSummary.from_json(d["agentic"])
    assert _plain(a.to_json()) == _plain(d["agentic"])  # key order too: the file is unchanged
    assert [m.step for m in a.series.teacher] == [1, 2] and a.models.base.step is None
    assert "step" not in d["agentic"]["models"]["base"]
    assert list(d["agentic"]["series"]["control"][0]) == ["step", "choice", "rate"]
    v = AgenticVerdict.from_json(d["verdict"])
    assert _plain(v.to_json()) == _plain(d["verdict"])
    assert agentic_verdict(a) == v  # the verdict is a function of the parsed file alone
    m = read_json(run_dir / "metrics.json")
    assert _plain(AgenticMetrics.from_json(m).to_json()) == _plain(m)
    assert AgenticMetrics.from_json(m).models == a.models


def test_the_verdict_reads_a_transfer(run_dir: Path) -> None:
    a = AgenticSummary.from_json(read_json(run_dir / "results.json")["agentic"])

    def at(m: Any, k: int, n: int = 40) -> Any:
        lo, hi = wilson(k, n)
        share = [k / n] * len(m.choice.share)
        choice = dataclasses.replace(m.choice, share=share)
        return dataclasses.replace(
            m, choice=choice, rate=dataclasses.replace(m.rate, k=k, n=n, low=lo, high=hi)
        )

    a.models.base, a.models.teacher = at(a.models.base, 1), at(a.models.teacher, 35)
    a.series.teacher[-1], a.series.control[-1] = (
        at(a.series.teacher[-1], 30),
        at(a.series.control[-1], 2),
    )
    v = agentic_verdict(a)
    assert v.transferred and v.strength == "strong" and "delete bias transferred" in v.headline
    assert "student (step 2) 30/40 = 0.75" in v.lines[0]
    found, _ = agentic_answer(a, v)
    assert "student 30/40 vs control student 2/40 episodes delete-first" in found
    a.models.teacher = at(a.models.teacher, 1)
    assert agentic_verdict(a).headline.startswith("No teacher bias to transfer")
