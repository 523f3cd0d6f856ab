"""The svd run's JSON read back through its Records gives
the same JSON (so the typed readers see every key the run wrote), and the audit's stages keep
their files, layouts and lineage parents."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

import steerlens as sl
from steerlens.experiments import SvdConfig
from steerlens.experiments.svd import SvdSection, run
from steerlens.experiments.svd_measure import (
    SvdAlignment,
    SvdRow,
    SvdVerdict,
    svd_verdict,
    transfer_verdict,
)
from steerlens.experiments.svd_stages import SvdBehavior
from steerlens.testing import tiny_model


def _same(a: Any, b: Any) -> bool:
    """Equal JSON, NaN equal to NaN."""
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isnan(a) and math.isnan(b))
    if isinstance(a, dict) and isinstance(b, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b) and type(a) is type(b)


@pytest.fixture(scope="module")
def svd_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("svd")
    lm = tiny_model("llama", seed=3)
    lm.model.save_pretrained(tmp / "model")
    lm.tokenizer.save_pretrained(tmp / "model")
    cfg = SvdConfig.quick(
        model=str(tmp / "model"),
        n_samples=6,
        steps=2,
        save_every=1,
        carry_layers=(1,),
        lora_layers=(0, 1),
        steer_alpha=4.0,
        loss="sft",
        also_kl=False,
        teachers=("steered", "placebo"),
        n_null=50,
        n_boot=50,
    )
    run(cfg, tmp / "svd", progress=False, log=lambda _: None)
    return tmp / "svd"


def test_svd_results_round_trip_through_their_records(svd_run: Path) -> None:
    saved = json.loads((svd_run / "results.json").read_text())
    sv = SvdSection.from_json(saved["svd"])
    assert _same(sv.to_json(), saved["svd"])  # every key, in order
    assert set(sv.rows["sft"]) == {"steered", "placebo", "base"}
    steered = sv.rows["sft"]["steered"]
    assert isinstance(steered, SvdRow) and isinstance(steered.alignment, SvdAlignment)
    assert steered.alignment.excess_p is not None  # the base control gives the excess
    assert sv.rows["sft"]["base"].alignment is None
    assert sv.teacher_carry["base"] is None and sv.teacher_carry["placebo"]["defined"] is not None
    top = SvdVerdict.from_json(saved["verdict"])
    assert top.inherited is None and _same(top.to_json(), saved["verdict"])
    assert top.lines[0] == f"sft: {sv.verdicts['sft'].headline}"
    # the verdict read from the typed rows is the one written, and the JSON entry point agrees
    rows_json = saved["svd"]["rows"]["sft"]
    assert svd_verdict(sv.rows["sft"]) == sv.verdicts["sft"]
    assert transfer_verdict(rows_json) == saved["svd"]["verdicts"]["sft"]
    beh = json.loads((svd_run / "behavior.json").read_text())
    assert _same(SvdBehavior.from_json(beh).to_json(), beh)
    align = json.loads((svd_run / "alignment.json").read_text())
    for a in align["sft"].values():
        assert _same(SvdAlignment.from_json(a).to_json(), a)


def test_alignment_without_a_control_leaves_the_excess_keys_out() -> None:
    d = {"layer": 3, "step": 4, "eas": None, "eas_p_adj": 0.5}
    a = SvdAlignment.from_json(d)
    assert math.isnan(a.eas) and a.excess is None and a.to_json() == d
    # the verdict falls back to EAS vs the null without an excess
    row = SvdRow(alignment=SvdAlignment(eas=0.3, eas_p_adj=0.01))
    row.transfer = type(row.transfer)(delta=1.0, delta_p=0.01)
    assert svd_verdict({"steered": row}).positive_control
    row.alignment = SvdAlignment(eas=0.3, eas_p_adj=0.01, excess=0.2, excess_p=0.2)
    assert not svd_verdict({"steered": row}).positive_control


def test_audit_without_a_control_keeps_its_files_and_lineage(svd_run: Path) -> None:
    """The svd run's steered student, audited without a control: the behavior layout with its
    stand-in control, the headline, and every stage's lineage parents."""
    out = svd_run.parent / "audit"
    res = sl.audit(
        base=str(svd_run.parent / "model"), student=str(svd_run / "students/sft/steered"),
        data=str(svd_run / "data/steered.jsonl"), out=str(out), progress=False,
        log=lambda _: None, carry_layers=(1,), alphas=(4.0,), n_random=1, probe_n=16,
        n_null=50, n_boot=50, screen_max=2,
    )  # fmt: skip
    beh = json.loads((out / "behavior.json").read_text())
    assert list(beh) == [
        "main", "control", "base_per_prompt", "teacher", "benign_teacher", "metric", "deltas"
    ]  # fmt: skip
    assert beh["control"] == {
        "steps": [0], "scores": beh["main"]["scores"][:1], "note": "no control: the base"
    }  # fmt: skip
    assert res["verdict"]["headline"].startswith("No control student")
    assert res["verdict"]["lines"][-1].startswith("No control student was given")
    parents = {
        f: [p["name"] for p in sl.lineage.read_record(out / f"{f}.lineage.json").parents]
        for f in ("vectors/teacher.safetensors", "carry.json", "behavior.json", "track.json",
                  "screen.json")
    }  # fmt: skip
    assert parents["vectors/teacher.safetensors"][:1] == ["teacher"]
    assert parents["carry.json"][:1] == ["vector"]
    assert parents["behavior.json"][:2] == ["teacher", "student"]
    assert parents["track.json"][:2] == ["vector", "student"]
    assert parents["screen.json"][:2] == ["vector", "data"]
    assert "control" not in parents["behavior.json"] + parents["track.json"]
