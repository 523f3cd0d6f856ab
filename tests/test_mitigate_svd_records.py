"""Mitigate, svd, mlp-aux and audit records: the mitigate arms' transfer and alignment
are the svd experiment's records (one layout, one class), an excess measured as NaN stays
null, and the mlp-aux run's config reads back as its :class:`MlpAuxConfig`."""

from __future__ import annotations

import json
from pathlib import Path

from steerlens.core.common import read_json
from steerlens.experiments.mitigate import MitigateConfig, arm_plan
from steerlens.experiments.mitigate_measure import ArmResult, MitigateAlignment, MitigateVetScores
from steerlens.experiments.mlp_aux import MlpAuxConfig, run
from steerlens.experiments.mlp_records import KIND, MlpAuxResults
from steerlens.experiments.svd_measure import SvdAlignment, Transfer

TINY = MlpAuxConfig.quick(
    n_seeds=1, teacher_epochs=2, student_epochs=2, n_noise=256, n_probe=32, n_null=20, n_boot=20
)


def test_mlp_aux_config_reads_back_as_the_config(tmp_path: Path) -> None:
    run(TINY, tmp_path, progress=False, log=lambda _: None)
    d = read_json(tmp_path / "results.json")
    assert d.pop("kind") == KIND
    res = MlpAuxResults.from_json(d)
    assert json.dumps(res.to_json()) == json.dumps(d)  # every key, in order
    assert isinstance(res.config, MlpAuxConfig) and res.config == TINY
    assert d["config"]["loss"] == res.config.loss and d["config"]["n_aux"] == res.config.n_aux


def test_an_arm_reads_the_svd_records() -> None:
    arm = ArmResult.from_json({"arm": "steer", "arm_kind": "steer", "transfer": {"delta": 0.2}})
    assert MitigateAlignment is SvdAlignment and type(arm.transfer) is Transfer
    assert arm.transfer.b_teacher is None and arm.excess.excess_p is None
    assert "excess EAS n/a (p=n/a)" in arm.summary()


def test_an_excess_measured_as_nan_stays_null() -> None:
    """Keys present as null (a NaN excess) are written back; absent keys (no control) stay out."""
    d = {"layer": 2, "step": 4, "eas": 0.1, "eas_p_adj": 0.5, "excess": None}
    d |= {"excess_lo": None, "excess_hi": None, "excess_p": None}
    assert SvdAlignment.from_json(d).to_json() == d
    arm = ArmResult.from_json({"arm": "vet", "alignment": d})
    assert arm.to_json()["alignment"] == d
    no_control = {k: d[k] for k in ("layer", "step", "eas", "eas_p_adj")}
    assert SvdAlignment.from_json(no_control).to_json() == no_control


def test_vet_scores_and_the_arm_plan() -> None:
    v = {"layer": 3, "scores": [0.5, -0.25, None]}
    assert MitigateVetScores.from_json(v).to_json() == v
    cfg = MitigateConfig.quick(vet_fracs=(0.1, 0.25), reg_lambdas=(0.1,))
    arms = arm_plan(cfg, 6.0)
    assert list(arms) == ["none", "vet_10pct", "vet_25pct", "random_25pct", "reg_0.1", "steer"]
    assert arms["steer"].param == 6.0 and arm_plan(cfg)["steer"].param == cfg.steer_alpha
