"""The mitigate experiment's saved JSON read through its Records (parsed once, read by
attribute) gives back the same JSON, key order included, for real runs of both settings on a
tiny model (the quick runs of ``test_mitigate_experiment``), and an older file still reads."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from steerlens.core.common import read_json
from steerlens.experiments import MitigateConfig, get
from steerlens.experiments.mitigate_agentic_data import MitigateAgenticVetScores
from steerlens.experiments.mitigate_measure import (
    ArmResult,
    MitigateAgentMetrics,
    MitigateAlignment,
    MitigateBehavior,
    MitigateSection,
    MitigateVerdict,
)
from steerlens.report.mitigate import mitigate_table
from steerlens.testing import tiny_model


def _model(tmp: Path) -> Path:
    lm = tiny_model("llama", seed=3)
    d = tmp / "model"
    lm.model.config.max_position_embeddings = 2048  # chats with a tiny char-level tokenizer
    lm.model.save_pretrained(d)
    lm.tokenizer.save_pretrained(d)
    return d


def _same_text(rec: Any, d: Any) -> None:
    """The record's JSON is the saved JSON, to the character (key order included)."""
    assert json.dumps(rec.to_json()) == json.dumps(d)


@pytest.fixture(scope="module")
def owl(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("owl")
    cfg = MitigateConfig.quick(
        model=str(_model(tmp)),
        device="cpu",
        n_samples=8,
        steps=2,
        save_every=2,
        carry_layers=(2,),
        lora_layers=(0, 1),
        n_null=50,
        n_boot=50,
        heldout_n=3,
        reg_lambdas=(10.0,),
    )
    get("mitigate").execute(cfg, tmp / "mit", progress=False, log=lambda s: None)
    return tmp / "mit"


def test_owl_results_and_stage_caches_round_trip(owl: Path) -> None:
    saved = json.loads((owl / "results.json").read_text())
    m, v = saved["mitigate"], saved["verdict"]
    sec = MitigateSection.from_json(m)
    _same_text(sec, m)
    _same_text(MitigateVerdict.from_json(v), v)
    assert [a.arm for a in sec.arms] == [a["arm"] for a in m["arms"]]
    reg = sec.arms[4]
    assert reg.kind == "reg" and reg.transfer.delta == m["arms"][4]["transfer"]["delta"]
    assert reg.alignment is not None and reg.alignment.layer == 2
    assert reg.excess.excess_p == m["arms"][4]["alignment"]["excess_p"]
    assert reg.beyond_noise is not None and reg.beyond_noise.k == 2
    assert sec.vet_vs_random.test is not None and sec.vet_vs_random.vetted == "vet_25pct"
    assert sec.unit == m["metric"]["metric"] and sec.filter is None
    beh = json.loads((owl / "mitigate" / "behavior.json").read_text())
    _same_text(MitigateBehavior.from_json(beh), beh)
    al = json.loads((owl / "mitigate" / "alignment.json").read_text())
    for d in al.values():
        _same_text(MitigateAlignment.from_json(d), d)


def test_an_arm_of_an_older_file_reads_its_kind() -> None:
    """Files before 2026-12-07 wrote the arm's kind as ``kind``; a missing alignment as {}."""
    old = {"arm": "vet_10pct", "kind": "vet", "param": 0.1, "n_train": 7, "alignment": {}}
    arm = ArmResult.from_json(old)
    assert arm.kind == "vet" and arm.alignment is None and arm.to_json()["arm_kind"] == "vet"
    row = mitigate_table([old])[0]
    assert row["kind"] == "vet" and row["EAS @ℓ*"] is None and row["p (Δ)"] is None


def test_agentic_results_and_metrics_round_trip(tmp_path: Path) -> None:
    small = {"n_eval": 1, "n_pref": 3, "n_train": 4, "steps": 1, "save_every": 1}
    cfg = MitigateConfig.quick(
        setting="agentic-api",
        model=str(_model(tmp_path)),
        device="cpu",
        carry_layers=(2,),
        vet_fracs=(0.25,),
        reg_lambdas=(10.0,),
        n_null=50,
        n_boot=50,
        extra={"agentic": small},
    )
    out = tmp_path / "ag"
    get("mitigate").execute(cfg, out, progress=False, log=lambda s: None)
    saved = json.loads((out / "results.json").read_text())
    m = saved["mitigate"]
    sec = MitigateSection.from_json(m)
    _same_text(sec, m)
    _same_text(MitigateVerdict.from_json(saved["verdict"]), saved["verdict"])
    assert sec.setting == "agentic-api" and sec.filter == m["filter"]
    none = sec.arms[0]
    assert none.rate is not None and none.rate.n == 1 and none.reduction is None
    metrics = json.loads((out / "mitigate" / "metrics.json").read_text())
    for d in metrics.values():
        _same_text(MitigateAgentMetrics.from_json(d), d)
    assert MitigateAgentMetrics.from_json(metrics["none_r1"]).rate is None
    # the vetting-score cache, read through its record, is written back key for key
    raw = read_json(out / "mitigate" / "vet_scores.json")
    v = MitigateAgenticVetScores.from_json(raw)
    assert v.layer == m["layer"] == 2 and len(v.scores) == 4
    assert all(x is None or math.isfinite(x) for x in v.scores)
    assert json.dumps(v.to_json()) == json.dumps(raw)
    # the lineage-free mitigate results still carry the keyword filter of the teacher
    assert m["filter"]["total"] == 4
