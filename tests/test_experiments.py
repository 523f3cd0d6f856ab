"""The experiment registry, the result type and the shared stage helpers (no model needed)."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

from steerlens.experiments import (
    DATA_SEED_OFFSET,
    DemoConfig,
    Experiment,
    ExperimentResult,
    OwlConfig,
    get,
    names,
    register,
    training_prompts,
)
from steerlens.inputs.numbers import number_prompts
from steerlens.pipeline import config_json, config_key
from steerlens.pipeline.stage import stage


def test_registry_lists_owl_and_names_the_known_ones_for_an_unknown_name() -> None:
    assert "owl" in names()
    owl = get("owl")
    assert owl.config is OwlConfig and OwlConfig is DemoConfig
    with pytest.raises(KeyError) as exc:
        get("ostrich")
    assert "unknown experiment 'ostrich'" in str(exc.value) and "owl" in str(exc.value)


def test_register_refuses_duplicates_and_bad_names() -> None:
    owl = get("owl")
    with pytest.raises(ValueError, match="already registered"):
        register(owl)
    with pytest.raises(ValueError, match="must be a word"):
        register(dataclasses.replace(owl, name="two words"))
    assert register(owl, replace=True) is owl


def test_make_config_presets_and_execute_checks_the_config_type(tmp_path: Path) -> None:
    owl = get("owl")
    assert owl.make_config(quick=True, device="cpu", steps=3) == OwlConfig.quick(
        device="cpu", steps=3
    )
    assert owl.make_config(device="cpu") == OwlConfig.for_device("cpu") == OwlConfig()
    with pytest.raises(TypeError, match="takes a OwlConfig"):
        owl.execute({"steps": 3}, tmp_path)


def test_experiment_result_protocol(tmp_path: Path) -> None:
    data = {
        "kind": "steerlens.demo",
        "verdict": {"headline": "No transfer detected.", "lines": ["a", "b"], "strength": "none"},
        "config": {"steps": 2},
    }
    res = ExperimentResult(data)
    assert res["verdict"]["strength"] == "none" and set(res) == set(data) and len(res) == 3
    assert res.summary().splitlines() == ["No transfer detected.", "  a", "  b"]
    assert "No transfer detected." in res._repr_html_()
    assert ExperimentResult.from_json(res.to_json()) == res
    path = res.save(tmp_path / "results.json")
    assert ExperimentResult.load(path) == res
    (tmp_path / "other.json").write_text('{"kind": "something"}')
    with pytest.raises(ValueError, match="not a steerlens experiment"):
        ExperimentResult.load(tmp_path / "other.json")


def test_training_prompts_use_the_one_named_seed_offset() -> None:
    assert DATA_SEED_OFFSET == 1000
    assert training_prompts(5, 3) == number_prompts(5, seed=3 + DATA_SEED_OFFSET)
    assert training_prompts(5, 3) != number_prompts(5, seed=3)


def test_stage_reuses_a_result_with_the_same_key(tmp_path: Path) -> None:
    from steerlens.pipeline.stage import json_load, json_save

    calls: list[int] = []
    logs: list[str] = []

    def fn() -> dict[str, int]:
        calls.append(1)
        return {"n": len(calls)}

    p = tmp_path / "x.json"
    assert stage(p, "k1", fn, json_save, json_load, logs.append) == {"n": 1}
    assert stage(p, "k1", fn, json_save, json_load, logs.append) == {"n": 1}
    assert logs == ["reusing x.json"]
    assert stage(p, "k2", fn, json_save, json_load, logs.append) == {"n": 2}
    p.write_text("{broken")
    assert stage(p, "k2", fn, json_save, json_load, logs.append) == {"n": 3}
    assert "x.json changed after it was written" in logs[-1] and "recomputing" in logs[-1]


def test_stage_recomputes_an_edited_result_that_is_still_valid(tmp_path: Path) -> None:
    """Issue 30.4: a number edited in a cached stage file (still valid JSON) is not reused: the
    stamp's sha256 no longer matches, the log names the stale file, the stage recomputes."""
    from steerlens.pipeline.stage import json_load, json_save

    logs: list[str] = []
    p = tmp_path / "behavior.json"
    assert stage(p, "k", lambda: {"score": 1.5}, json_save, json_load, logs.append) == {
        "score": 1.5
    }
    p.write_text(p.read_text().replace("1.5", "9.5"))
    assert json_load(p) == {"score": 9.5}  # valid JSON: only the hash can tell
    assert stage(p, "k", lambda: {"score": 1.5}, json_save, json_load, logs.append) == {
        "score": 1.5
    }
    assert "behavior.json changed after it was written" in logs[-1]
    assert json_load(p) == {"score": 1.5}  # the recomputed result replaced the edited one
    logs.clear()
    assert stage(p, "k", lambda: {"score": 0.0}, json_save, json_load, logs.append) == {
        "score": 1.5
    }
    assert logs == ["reusing behavior.json"]


def test_stage_upgrades_a_bare_key_stamp(tmp_path: Path) -> None:
    """A stamp written before hashes were recorded (the bare key) is trusted once and rewritten
    with the sha256, so a later edit is caught."""
    from steerlens.pipeline.stage import json_load, json_save

    logs: list[str] = []
    p = tmp_path / "x.json"
    json_save({"a": 1}, p)
    p.with_name("x.json.key").write_text("k")
    assert stage(p, "k", lambda: {"a": 2}, json_save, json_load, logs.append) == {"a": 1}
    assert '"sha256"' in p.with_name("x.json.key").read_text()
    p.write_text('{"a": 5}')
    assert stage(p, "k", lambda: {"a": 2}, json_save, json_load, logs.append) == {"a": 2}


def test_owl_config_key_and_json_are_unchanged() -> None:
    """The cache keys and the results' config block are what the old DemoConfig gave."""
    cfg = OwlConfig.quick(device="cpu")
    d = config_json(cfg)
    assert list(d) == [f.name for f in dataclasses.fields(OwlConfig)]
    assert d["alphas"] == [4.0] and d["carry_layers"] == [15] and d["extra"] == {}
    assert len(config_key(cfg)) == 12
    assert config_key(cfg, "seed") == config_key(OwlConfig(seed=0), "seed")


def test_experiments_import_only_lower_layers() -> None:
    """One-way layers: nothing under steerlens/experiments imports the report, the command
    line or the package root (function-local imports included)."""
    root = Path(__file__).resolve().parents[1] / "steerlens" / "experiments"
    banned = ("steerlens.report", "steerlens.cli", "steerlens.experiment")
    for path in root.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            mods = []
            if isinstance(node, ast.Import):
                mods = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                mods = [node.module]
            for mod in mods:
                assert mod != "steerlens", (path.name, "import from the defining module")
                assert not any(mod == b or mod.startswith(b + ".") for b in banned), (
                    path.name,
                    mod,
                )


def test_registry_entry_is_an_experiment() -> None:
    assert isinstance(get("owl"), Experiment)
    assert get("owl").default_out == "runs/owl"
