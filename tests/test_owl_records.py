"""A real ``results.json`` of the owl experiment (the quick demo on a
tiny model) is parsed once into :class:`OwlResults` (the library's own typed track, carry,
screen and signature; typed behavior and verdict records), its JSON round-trips, and the
verdict and the report read it by attribute with the same outcome as from the dict."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from steerlens.carry.result import CarryResult
from steerlens.experiments.agentic_records import AgenticSummary
from steerlens.experiments.mitigate_measure import MitigateSection
from steerlens.experiments.owl_records import (
    OwlBehavior,
    OwlNamedDeltas,
    OwlPower,
    OwlResults,
    OwlVerdict,
)
from steerlens.experiments.result import ExperimentResult, ExperimentVerdictText
from steerlens.experiments.svd import SvdSection
from steerlens.experiments.verdict import verdict
from steerlens.pipeline.signature import SignatureTest
from steerlens.report import render_report
from steerlens.report.sections import _Parts
from steerlens.screen.result import ScreenResult
from steerlens.testing import tiny_model
from steerlens.track.results import AlignmentTrack


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from steerlens.experiment import DemoConfig, run_demo

    root = tmp_path_factory.mktemp("owl")
    lm = tiny_model("llama", seed=3)
    lm.model.save_pretrained(root / "model")
    lm.tokenizer.save_pretrained(root / "model")
    cfg = DemoConfig.quick(
        model=str(root / "model"), n_samples=6, steps=2, save_every=1, carry_layers=(1,)
    )
    run_demo(cfg, root / "demo", progress=False, log=lambda _: None)
    out: dict[str, Any] = json.loads((root / "demo" / "results.json").read_text())
    return out


def _plain(x: Any) -> Any:
    """JSON as written (NaN as null), so two layouts compare."""
    return json.loads(json.dumps(x, default=str).replace("NaN", "null"))


def test_the_results_json_round_trips_through_owl_results(results: dict[str, Any]) -> None:
    r = OwlResults.parse(results)
    for name, cls in (
        ("track", AlignmentTrack),
        ("track_benign", AlignmentTrack),
        ("carry", CarryResult),
        ("screen", ScreenResult),
        ("signature", SignatureTest),
        ("behavior", OwlBehavior),
        ("verdict", OwlVerdict),
    ):
        assert isinstance(getattr(r, name), cls), name
    back = _plain(r.to_json())
    want = _plain({k: v for k, v in results.items() if k != "kind"})  # the file's own kind
    # the behavior's series sit at their own keys beside the rest: gathered under .series
    beh = want["behavior"]
    series = {k: beh.pop(k) for k in list(beh) if isinstance(beh[k], dict) and "scores" in beh[k]}
    assert set(series) >= {"main", "control", "benign", "benign2"}
    assert back == want
    assert {k: _plain(v.to_json()) for k, v in r.behavior.series.items()} == series  # type: ignore[union-attr]
    assert list(r.behavior.series)[:2] == ["main", "control"]  # type: ignore[union-attr]


def test_the_verdict_from_the_typed_results_is_the_saved_one(results: dict[str, Any]) -> None:
    r = OwlResults.parse(results)
    assert _plain(verdict(r)) == _plain(results["verdict"])
    assert _plain(verdict(results)) == _plain(results["verdict"])
    v = r.verdict
    assert v is not None and v.numbers.alignment is not None
    assert v.claim in ("inherited", "activation signature without behavior change", "no evidence")
    assert r.track is not None and r.carry is not None
    assert v.numbers.alignment.layer in r.track.layers
    assert v.numbers.carry_level == r.carry.level.value
    assert math.isfinite(v.numbers.alpha)


def test_experiment_result_and_report_read_the_same_parse(results: dict[str, Any]) -> None:
    res = ExperimentResult(results)
    assert set(res.typed.parts()) == {"track", "carry", "screen"}
    assert "track" in res._html_details() and res.main_figure() is not None
    assert res.summary().splitlines()[0] == results["verdict"]["headline"]
    page = render_report(results).html()
    for anchor in ("headline", "track", "carry", "vector", "screen", "lineage"):
        assert f"<section id='{anchor}'>" in page, anchor
    assert "Evidence: student and controls side by side" in page


def test_partial_parts_read_as_none_or_empty() -> None:
    r = OwlResults.parse(
        {
            "track": {"layers": [0], "series": {"main": {"steps": [0], "eas": "bad"}}},
            "carry": {"sufficiency": {"x": [1.0]}},
            "behavior": {"main": {"steps": [0, 1], "scores": [None, 1.0]}},
            "screen": {"layers": [1], "layer": 3},
            "config": {"alpha": 0.01},
        }
    )
    assert r.track is None and r.carry is None and r.screen is None and r.verdict is None
    assert r.behavior is not None and math.isnan(r.behavior.series["main"].scores[0])
    assert r.alpha == 0.01 and r.loss == "kl"
    partial = OwlResults.parse({"carry": {"level": "weakly_carried", "verdict": "v"}})
    assert partial.carry is not None and partial.carry.level.value == "weakly carried"
    assert OwlResults.parse({}) == OwlResults()


def test_the_named_deltas_and_series_are_the_dicts_entries(results: dict[str, Any]) -> None:
    beh = OwlResults.parse(results).behavior
    assert beh is not None and beh.main is not None and beh.control is not None
    assert beh.main.scores == pytest.approx(results["behavior"]["main"]["scores"])
    assert beh.control.steps == results["behavior"]["control"]["steps"]
    named = OwlNamedDeltas.of(beh.deltas)
    for k in ("main_vs_base", "main_vs_control", "main_vs_benign_replicates"):
        want = results["behavior"]["deltas"].get(k)
        got = getattr(named, k)
        assert (got is None) == (want is None), k
        if got is not None:
            assert _plain(got.to_json()) == _plain(want), k


def test_the_verdict_power_round_trips_without_its_short(results: dict[str, Any]) -> None:
    pw = results["verdict"]["power"]
    p = OwlPower.from_json(pw)
    assert p.to_json() == pw and "short" not in p.to_json()
    assert OwlPower.from_json({**pw, "short": "x"}).short == "x"
    assert verdict(results) == results["verdict"]  # the verdict, from the file, is the same
    assert ExperimentVerdictText.from_json(results["verdict"]).power_text == pw["text"].strip()


def test_render_report_parses_each_part_once_with_its_own_record() -> None:
    parts = _Parts.of(
        {
            "verdict": {"headline": "h"},
            "agentic": AgenticSummary().to_json(),
            "svd": SvdSection().to_json(),
            "mitigate": MitigateSection().to_json(),
            "detection": "not a part",  # malformed: left out
        }
    )
    assert isinstance(parts.agentic, AgenticSummary)
    assert isinstance(parts.svd, SvdSection)
    assert isinstance(parts.mitigate, MitigateSection)
    assert parts.detection is None and parts.words.headline == "h"
    assert _Parts.of({}) == _Parts()
