"""mlp-aux: results.json is read through typed Records. A real quick run's results
round-trip through :class:`MlpAuxResults` to the same JSON text (int stays int, float float,
key order kept); an earlier run's layout (no permutation null) still loads and renders."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

from steerlens.core.common import read_json
from steerlens.experiments.mlp_aux import MlpAuxConfig, run, run_seed
from steerlens.experiments.mlp_data import load_data
from steerlens.experiments.mlp_records import KIND, MlpAuxResults, MlpAuxSeed
from steerlens.report import render_report

TINY = MlpAuxConfig.quick(
    n_seeds=2, teacher_epochs=3, student_epochs=2, n_noise=512, n_probe=64, n_null=50, n_boot=50
)


def _text(d: object) -> str:
    return json.dumps(d, indent=2)


def test_results_json_round_trips_through_the_records(tmp_path: Path) -> None:
    run(TINY, tmp_path, progress=False, log=lambda _: None)
    d = read_json(tmp_path / "results.json")
    res = MlpAuxResults.from_json(d)
    assert _text(res.results_json()) == _text(d)
    assert (tmp_path / "results.json").read_text() == _text(d) + "\n"
    # read by attribute: the numbers are the file's
    assert res.over_seeds.margin.n == 2 and res.over_seeds.epochs == [1, 2]
    assert res.seeds[1].same.acc == d["seeds"][1]["same"]["acc"]
    assert res.over_seeds.eas.same[0][-1].mean == d["summary"]["eas"]["same"][0][-1]["mean"]
    assert res.verdict.headline == d["verdict"]["headline"]
    assert res.seeds[0].teacher_shift_norm.keys() == {0, 1}
    perm = res.over_seeds.frac_seeds_beating_permutation_null_last_epoch
    assert perm is not None and len(perm.same) == 2


def test_one_seed_round_trips() -> None:
    seed = run_seed(TINY, load_data("digits"), 0)
    assert _text(MlpAuxSeed.from_json(seed).to_json()) == _text(seed)
    assert math.isfinite(MlpAuxSeed.from_json(seed).same.track.eas[-1, 0])


def test_a_run_without_the_permutation_null_still_loads_and_renders(tmp_path: Path) -> None:
    run(TINY, tmp_path, progress=False, log=lambda _: None)
    old = copy.deepcopy(read_json(tmp_path / "results.json"))
    del old["summary"]["frac_seeds_beating_permutation_null_last_epoch"]
    for p in old["seeds"]:
        del p["same"]["perm_null"], p["diff"]["perm_null"]
    res = MlpAuxResults.from_json(old)
    assert res.over_seeds.frac_seeds_beating_permutation_null_last_epoch is None
    assert all(p.same.perm_null is None for p in res.seeds)
    assert "perm_null" not in res.to_json()["seeds"][0]["same"]
    assert old["kind"] == KIND and render_report(old).n_figures == 3
