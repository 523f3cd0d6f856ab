"""Issue 27, round 2 (owl verdict and report): a real ``results.json`` of the owl experiment (the
quick demo on a tiny model) is read by attribute: the student's named deltas
(:class:`OwlNamedDeltas`), its series (``OwlBehavior.main`` / ``.control``), the verdict's power
(:class:`OwlPower`, whose ``short`` is not saved); and ``render_report`` parses every other
experiment's part once with that experiment's own record."""

from __future__ import annotations

import json
from typing import Any

import pytest

from steerlens.experiments.agentic_records import AgenticSummary
from steerlens.experiments.mitigate_measure import MitigateSection
from steerlens.experiments.owl_records import OwlNamedDeltas, OwlPower, OwlResults
from steerlens.experiments.result import ExperimentVerdictText
from steerlens.experiments.svd import SvdSection
from steerlens.experiments.verdict import verdict
from steerlens.report.sections import _Parts
from steerlens.testing import tiny_model


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
    return json.loads(json.dumps(x).replace("NaN", "null"))


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
