"""The mlp-aux experiment: the same-init/different-init contrast differs only in the
initialisation (same noise, same batch order), the quick run end to end through the command
line, its report, and the t-interval."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from steerlens.cli import main
from steerlens.core.common import read_json
from steerlens.experiments import get, mlp_aux
from steerlens.experiments.mlp_aux import MlpAuxConfig, run_seed, t_interval, tracked_epochs
from steerlens.experiments.mlp_data import load_data, make_noise
from steerlens.report import render_report
from steerlens.report.shape import shape_problems
from steerlens.runtime.backends.module import inputs_hash

TINY = MlpAuxConfig.quick(
    n_seeds=1, teacher_epochs=3, student_epochs=2, n_noise=512, n_probe=64, n_null=50, n_boot=50
)


def test_contrast_uses_the_same_noise_and_differs_only_in_the_init(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = load_data("digits")
    out = run_seed(TINY, data, 0)
    noise = make_noise(512, data.d_in, TINY.seed + 2)
    assert out["same"]["noise_hash"] == out["diff"]["noise_hash"] == inputs_hash(noise)
    assert out["same"]["init_fingerprint"] != out["diff"]["init_fingerprint"]
    # with B₀ replaced by A₀ the two students are the same network: nothing else differs
    original = mlp_aux._Seed.init
    monkeypatch.setattr(mlp_aux._Seed, "init", lambda self, which: original(self, "A"))
    twin = run_seed(TINY, data, 0)
    assert twin["same"]["acc"] == twin["diff"]["acc"] == out["same"]["acc"]
    assert twin["same"]["track"]["eas"] == twin["diff"]["track"]["eas"]
    assert np.allclose(np.asarray(twin["excess"]["estimate"], dtype=float), 0.0)


def test_quick_run_through_the_command_line_writes_results_and_report(tmp_path: Path) -> None:
    assert "mlp-aux" in mlp_aux.MLP_AUX.name and get("mlp-aux").config is MlpAuxConfig
    argv = ["experiment", "mlp-aux", "--quick", "--n-seeds", "2", "--student-epochs", "2"]
    assert main([*argv, "--n-noise", "1024", "--out", str(tmp_path)]) == 0
    res = read_json(tmp_path / "results.json")
    assert res["kind"] == "steerlens.mlp_aux" and len(res["seeds"]) == 2
    s = res["summary"]
    assert s["epochs"] == [1, 2] and s["margin"]["n"] == 2
    margin = [p["same"]["acc"] - p["diff"]["acc"] for p in res["seeds"]]
    assert s["margin"]["per_seed"] == pytest.approx(margin)
    assert len(s["eas"]["same"]) == 2 and len(s["eas"]["same"][0]) == 2
    perm = res["seeds"][0]["same"]["perm_null"]
    assert len(perm["p"]) == 2 and len(perm["p"][0]) == 2  # [epoch][site]
    assert all(0 < p <= 1 for row in perm["p"] for p in row)
    assert set(s["frac_seeds_beating_permutation_null_last_epoch"]) == {"same", "diff"}
    assert res["resolved"] == {"teacher_epochs": 20, "student_epochs": 2, "n_noise": 1024}
    rep = render_report(res)
    assert rep.n_figures == 3 and "Accuracy beside the paper" in rep.html()
    assert shape_problems(rep.html()) == []  # the one report shape (steerlens.report.shape)
    assert (tmp_path / "report.html").stat().st_size > 100_000


def test_t_interval_and_tracked_epochs() -> None:
    ci = t_interval([0.1, 0.2, 0.3, 0.4, 0.5])
    half = 2.7764451051977987 * np.std([0.1, 0.2, 0.3, 0.4, 0.5], ddof=1) / np.sqrt(5)
    assert ci["mean"] == pytest.approx(0.3) and ci["hi"] - ci["mean"] == pytest.approx(half)
    assert t_interval([0.4]) == {"mean": 0.4, "lo": 0.4, "hi": 0.4, "n": 1}
    assert tracked_epochs(50, 10) == [5, 10, 15, 20, 25, 30, 35, 40, 45, 50]
    assert tracked_epochs(2, 10) == [1, 2]
    with pytest.raises(ValueError, match="unknown dataset"):
        load_data("mnist")
    assert torch.equal(make_noise(4, 3, 1), make_noise(4, 3, 1))
