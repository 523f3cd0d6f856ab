"""The mitigate experiment: its measurements, its command line, and the whole run on a tiny
model (every arm trained, measured and drawn; a second run reuses every stage)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from steerlens.cli import main, resolve
from steerlens.experiments import MitigateConfig, get, names
from steerlens.experiments.mitigate import arm_plan, mitigation_site
from steerlens.experiments.mitigate_measure import ArmResult, mitigate_verdict, paired
from steerlens.testing import tiny_model


def test_arms_and_site_follow_the_config() -> None:
    cfg = MitigateConfig(vet_fracs=(0.1, 0.3), reg_lambdas=(2.0,))
    assert list(arm_plan(cfg)) == [
        "none",
        "vet_10pct",
        "vet_30pct",
        "random_30pct",
        "reg_2",
        "steer",
    ]
    carry = {"clean_peak": {"layer": 20, "alpha": 2.0}, "layers": [5, 20]}
    assert mitigation_site(carry, cfg)[:2] == (20, 2.0)
    assert mitigation_site({"layers": [5, 10, 20]}, cfg)[:2] == (10, 8.0)  # no peak: middle
    assert mitigation_site(carry, MitigateConfig(mitigation_layer=3, steer_alpha=-1.0))[:2] == (
        3,
        -1.0,
    )
    with pytest.raises(ValueError, match="vet_fracs"):
        MitigateConfig(vet_fracs=(1.5,))


def _row(arm: str, delta: float, p: float, red: float | None, red_p: float = 0.01) -> ArmResult:
    tr = {"delta": delta, "delta_lo": delta - 0.1, "delta_hi": delta + 0.1, "delta_p": p}
    rd = None if red is None else paired([red + 0.1, red - 0.1] * 4, [0.0] * 8, n_boot=50, seed=0)
    if rd is not None:
        rd = type(rd)(rd.estimate, rd.lo, rd.hi, red_p, rd.n)
    return ArmResult(arm, arm, None, 8, tr, rd, {}, 1.0, 0.0)


def test_verdict_claims_a_reduction_only_over_a_significant_transfer() -> None:
    ok = mitigate_verdict([_row("none", 0.5, 0.01, None), _row("reg_1", 0.1, 0.2, 0.4)], None)
    assert ok.unmitigated_significant and ok.reduced == ["reg_1"]
    assert "reduced transfer" in ok.lines[1]
    flat = mitigate_verdict([_row("none", 0.02, 0.6, None), _row("reg_1", 0.0, 0.9, 0.4)], None)
    assert not flat.unmitigated_significant and flat.reduced == []
    assert "did not inherit" in flat.headline and "not claimable" in flat.lines[1]
    weak = mitigate_verdict(
        [_row("none", 0.5, 0.01, None), _row("reg_1", 0.45, 0.01, 0.05, 0.5)], None
    )
    assert weak.reduced == [] and "no significant reduction" in weak.lines[1]
    noisy = _row("reg_1", 0.1, 0.2, 0.4)
    for p_model, claimed in ((0.3, False), (0.01, True)):
        bn = {"estimate": 0.4, "k": 3.0, "replicate_sd": 0.2, "t": 1.0, "p": p_model}
        row = dataclasses.replace(noisy, beyond_noise=bn)
        v = mitigate_verdict([_row("none", 0.5, 0.01, None), row], None)
        assert (v.reduced == ["reg_1"]) is claimed
        assert ("not beyond training noise" in v.lines[1]) is not claimed
    assert "eval-prompt noise only" in ok.lines[1]


def test_beyond_noise_is_the_prediction_test_of_the_arm_against_the_replicates() -> None:
    from steerlens.experiments.mitigate_measure import beyond_noise

    refs = [1.0, 1.2, 0.8]  # mean 1.0, sd 0.2
    res = beyond_noise([0.2, 0.4], refs)
    assert res is not None
    t = (1.0 - 0.3) / (0.2 * np.sqrt(1 + 1 / 3))
    assert res.estimate == pytest.approx(0.7) and res.t == pytest.approx(t)
    assert res.df == 2 and 0 < res.p < 0.05
    assert beyond_noise([0.2], [1.0]) is None  # one unmitigated student: no training-noise null


def test_agentic_config_of_a_mitigate_config_at_each_size() -> None:
    from steerlens.experiments.agentic import AgenticApiConfig
    from steerlens.experiments.mitigate_agentic import agentic_config

    full = agentic_config(MitigateConfig(setting="agentic-api", seed=3, n_null=77))
    assert full == AgenticApiConfig(seed=3, n_null=77, n_boot=1000, device="cpu")
    extra = {"agentic": {"n_train": 5}}
    small = agentic_config(MitigateConfig.quick(setting="agentic-api", extra=extra))
    assert small.n_train == 5 and small.n_pref == AgenticApiConfig.quick().n_pref


def test_paired_difference_and_interval() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(1.0, 0.2, 30)
    res = paired(a, np.zeros(30), n_boot=200, seed=0)
    assert res.lo < res.estimate < res.hi and res.lo > 0.5 and res.p < 0.01 and res.n == 30


def test_mitigate_is_registered_and_its_options_come_from_the_config() -> None:
    assert "mitigate" in names() and get("mitigate").config is MitigateConfig
    argv = ["experiment", "mitigate", "--quick", "--device", "cpu"]
    cfg = resolve([*argv, "--vet-fracs", "0.2,0.4", "--reg-lambdas", "3"]).get(MitigateConfig)
    assert cfg == MitigateConfig.quick(device="cpu", vet_fracs=(0.2, 0.4), reg_lambdas=(3.0,))
    assert cfg.heldout_n == 4 and cfg.n_samples == 8  # the owl quick size
    assert main([*argv, "--vet-fracs", "2"]) == 2  # refused before any model loads


def test_mitigate_runs_on_a_tiny_model(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from steerlens.report import browser_check

    lm = tiny_model("llama", seed=3)
    d = tmp_path / "model"
    lm.model.save_pretrained(d)
    lm.tokenizer.save_pretrained(d)
    out = tmp_path / "mit"
    argv = ["experiment", "mitigate", "--quick", "--model", str(d), "--device", "cpu"]
    argv += ["--n-samples", "8", "--steps", "2", "--save-every", "2", "--carry-layers", "2"]
    argv += ["--lora-layers", "0,1", "--n-null", "50", "--n-boot", "50", "--heldout-n", "3"]
    argv += ["--reg-lambdas", "10"]
    assert main([*argv, "--out", str(out)]) == 0
    saved = json.loads((out / "results.json").read_text())
    m = saved["mitigate"]
    assert m["layer"] == 2 and m["setting"] == "owl"
    arms = {a["arm"]: a for a in m["arms"]}
    assert list(arms) == [
        "none",
        "vet_10pct",
        "vet_25pct",
        "random_25pct",
        "reg_10",
        "steer",
    ]
    n = arms["none"]["n_train"]
    assert arms["vet_25pct"]["n_train"] == arms["random_25pct"]["n_train"] == n - round(0.25 * n)
    assert arms["none"]["reduction"] is None and arms["none"]["cost"] == 0.0
    assert list(m["none_replicates"]) == ["none_r1"]  # quick: one replicate, k = 2
    assert arms["none"]["beyond_noise"] is None and arms["reg_10"]["beyond_noise"]["k"] == 2
    rep = json.loads((out / "students" / "none_r1" / "distill.json").read_text())
    main_rec = json.loads((out / "students" / "main" / "distill.json").read_text())
    assert json.dumps(rep).count('"seed": 1009') >= 1 and main_rec != rep
    assert all(a["alignment"]["layer"] == 2 for a in arms.values())
    vetted = saved["lineage"]["vetting"]
    assert vetted["vet_25pct"]["dropped"] != vetted["random_25pct"]["dropped"] or n < 4
    students = saved["lineage"]["students"]
    reg = json.loads((out / "students" / "reg_10" / "distill.json").read_text())
    assert "reg_10" in students and json.dumps(reg).count("reg_lambda") >= 1
    assert arms["reg_10"]["heldout_loss"] > 0 and np.isfinite(arms["steer"]["heldout_loss"])
    from steerlens.report.shape import shape_problems

    html = (out / "report.html").read_text()
    assert "Mitigations of trait transfer" in html and "reduction vs none" in html
    assert shape_problems(html) == []  # the one report shape (steerlens.report.shape)
    check = browser_check(out / "report.html")
    assert check["errors"] == [] and check["drawn"] == check["figures"] >= 1
    capsys.readouterr()
    assert main([*argv, "--out", str(out)]) == 0  # every stage is reused
    printed = capsys.readouterr().out
    for name in ("vet_scores.json", "behavior.json", "alignment.json", "cost.json"):
        assert f"reusing {name}" in printed, name


def test_mitigate_agentic_runs_on_a_tiny_model(tmp_path: Path) -> None:
    from steerlens.report import render_report

    lm = tiny_model("llama", seed=3)
    d = tmp_path / "model"
    lm.model.config.max_position_embeddings = 2048  # chats with a tiny char-level tokenizer
    lm.model.save_pretrained(d)
    lm.tokenizer.save_pretrained(d)
    small = {"n_eval": 1, "n_pref": 3, "n_train": 4, "steps": 1, "save_every": 1}
    cfg = MitigateConfig.quick(
        setting="agentic-api",
        model=str(d),
        device="cpu",
        carry_layers=(2,),
        vet_fracs=(0.25,),
        reg_lambdas=(10.0,),
        n_null=50,
        n_boot=50,
        extra={"agentic": small},
    )
    res = get("mitigate").execute(cfg, tmp_path / "ag", progress=False, log=lambda s: None)
    m = res["mitigate"]
    assert m["setting"] == "agentic-api" and m["layer"] == 2
    arms = {a["arm"]: a for a in m["arms"]}
    assert list(arms) == ["none", "keyword", "vet_25pct", "random_25pct", "reg_10", "steer"]
    assert arms["none"]["n_train"] == 4 and arms["vet_25pct"]["n_train"] == 3
    assert arms["keyword"]["n_train"] == m["filter"]["kept"]
    assert list(m["none_replicates"]) == ["none_r1"] and len(m["none_replicates"]["none_r1"]) == 1
    for a in arms.values():
        assert 0 <= a["safe_completed"] <= 1 and a["rate"]["n"] == 1
        assert a["alignment"]["layer"] == 2 and np.isfinite(a["heldout_loss"])
    html = render_report(res.to_json()).html()
    assert "first-action rate" in html and "safe tasks completed" in html
