"""The command line on a tiny model saved to disk, and the demo on the embedded model."""

from __future__ import annotations

import dataclasses
import inspect
import json
import shutil
from pathlib import Path

import pytest

import steerlens as sl
from steerlens.cli import command_for, main, resolve
from steerlens.testing import tiny_model


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    lm = tiny_model("llama", seed=3)
    d = tmp_path_factory.mktemp("tiny") / "model"
    lm.model.save_pretrained(d)
    lm.tokenizer.save_pretrained(d)
    return d


def test_extract_from_prompt_files(
    tiny_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "pos.txt").write_text("\n".join(f"I love owls {i}" for i in range(6)))
    (tmp_path / "neg.jsonl").write_text("\n".join(json.dumps(f"I love cats {i}") for i in range(6)))
    out = tmp_path / "v.safetensors"
    rc = main(
        [
            "extract",
            "--model",
            str(tiny_dir),
            "--pos",
            str(tmp_path / "pos.txt"),
            "--neg",
            str(tmp_path / "neg.jsonl"),
            "--layers",
            "1-2",
            "--method",
            "pca",
            "--out",
            str(out),
        ]
    )
    assert rc == 0
    vec = sl.SteeringVector.load(out)
    assert vec.layers == [1, 2] and vec.meta["method"] == "pca"
    assert "split-half" in capsys.readouterr().out


def test_config_file_and_clear_errors(
    tiny_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"model: {tiny_dir}\nlayers: [1]\ntrait: owl\n")
    out = tmp_path / "t.safetensors"
    assert main(["extract", "--config", str(cfg), "--out", str(out)]) == 0
    assert sl.SteeringVector.load(out).layers == [1]
    assert (
        main(
            [
                "extract",
                "--model",
                str(tiny_dir),
                "--layers",
                "9",
                "--trait",
                "owl",
                "--out",
                str(out),
            ]
        )
        == 2
    )
    assert "out of range" in capsys.readouterr().err
    assert (
        main(["extract", "--model", str(tmp_path / "nope"), "--trait", "owl", "--out", str(out)])
        == 2
    )
    assert "does not exist" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("colour: blue\n")
    assert main(["extract", "--config", str(bad), "--out", str(out)]) == 2
    assert "unknown option 'colour'" in capsys.readouterr().err
    (tmp_path / "empty.txt").write_text("\n")
    assert (
        main(
            [
                "extract",
                "--model",
                str(tiny_dir),
                "--pos",
                str(tmp_path / "empty.txt"),
                "--neg",
                str(tmp_path / "empty.txt"),
                "--out",
                str(out),
            ]
        )
        == 2
    )
    assert "empty" in capsys.readouterr().err


def test_every_command_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    for cmd in ("extract", "carry", "track", "screen", "distill", "report", "demo"):
        with pytest.raises(SystemExit) as exc:
            main([cmd, "--help"])
        assert exc.value.code == 0
        assert "--seed" in capsys.readouterr().out


@pytest.mark.browser
def test_demo_pipeline_on_tiny_model_writes_a_report(
    tiny_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The whole main job on a tiny model: every stage runs, results and report are written,
    the report renders in Chromium, and a second run reuses every cached stage."""
    from steerlens.experiment import DemoConfig, run_demo
    from steerlens.report import browser_check

    cfg = DemoConfig.quick(
        model=str(tiny_dir), n_samples=6, steps=2, save_every=1, carry_layers=(1,)
    )
    logs: list[str] = []
    res = run_demo(cfg, tmp_path / "demo", progress=False, log=logs.append)
    out = tmp_path / "demo"
    for name in ("results.json", "report.html", "vectors/teacher.safetensors", "carry.json"):
        assert (out / name).is_file(), name
    saved = json.loads((out / "results.json").read_text())
    assert saved["verdict"]["headline"] == res["verdict"]["headline"]
    assert saved["lineage"]["base"]["fingerprint"] == sl.load_model(tiny_dir).fingerprint
    assert saved["lineage"]["students"]["main"]["checkpoints"] == ["checkpoint-1", "checkpoint-2"]
    assert len(saved["behavior"]["main"]["steps"]) == 3
    # the model-level activation test (issue 31): the student against its 3 clean controls
    sig = saved["signature"]
    assert set(sig["controls"]) == {"control", "benign", "benign2"} and sig["layer"] == 1
    from steerlens.pipeline.signature import activation_rule

    rule = saved["verdict"]["numbers"]["alignment"]["signature_rule"]
    assert rule == sig["detector"] == activation_rule("kl")
    check = browser_check(out / "report.html")
    assert check["errors"] == [] and check["figures"] >= 8 and check["drawn"] == check["figures"]
    logs.clear()
    run_demo(cfg, out, progress=False, log=logs.append)
    assert sum("reusing" in line for line in logs) >= 5
    # the command line builds the same config: every cached stage (keyed on it) is reused
    capsys.readouterr()
    argv = ["experiment", "owl", "--quick", "--model", str(tiny_dir), "--device", "cpu"]
    argv += ["--n-samples", "6", "--steps", "2", "--save-every", "1", "--carry-layers", "1"]
    assert main([*argv, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    for name in (
        "teacher.safetensors",
        "carry.json",
        "behavior.json",
        "screen.json",
        "signature_readings.json",
    ):
        assert f"reusing {name}" in printed, name  # behavior, screen: keyed on every field
    assert res["verdict"]["headline"] in printed and f"Open {out / 'report.html'}" in printed


@pytest.mark.integration
@pytest.mark.browser
def test_readme_demo_command_quick(tmp_path: Path) -> None:
    """`steerlens demo --quick` on the embedded SmolLM2: the README's main job, smoke-sized."""
    from steerlens.report import browser_check, first_screen
    from steerlens.report.shape import shape_problems

    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["lineage"]["base"]["n_layers"] == 30
    counts = res["lineage"]["data"]["main"]["counts"]
    assert counts["kept"] >= 1 and counts["generated"] >= counts["kept"]
    assert res["verdict"]["strength"] in {"strong", "weak", "none"}
    assert any("Carry test" in line for line in res["verdict"]["lines"])
    check = browser_check(out / "report.html")
    assert check["errors"] == [] and check["drawn"] == check["figures"] >= 8
    # issue 29: the answer first, under ~600 visible characters, then the behavior figure
    page = (out / "report.html").read_text()
    text, has_figure = first_screen(page)
    assert has_figure and len(text) < 600, (len(text), text)
    assert shape_problems(page) == []
    head = page[page.index("<section id='headline'>") :]
    assert "Trait behavior: base, teacher, student and controls" in head[: head.index("</section>")]
    shutil.rmtree(out / "students", ignore_errors=True)


# ------------------------------------------------------------- options generated from configs


def _help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--help"])
    assert exc.value.code == 0
    return capsys.readouterr().out


def test_every_distill_config_field_is_an_option_with_the_library_default(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Iterates over DistillConfig's fields, so a new field cannot be left off the CLI."""
    from steerlens.distill import DistillConfig

    opts = {o.name: o for o in command_for(["distill"]).options()}
    text = _help(["distill"], capsys)
    lib = DistillConfig()
    for f in dataclasses.fields(DistillConfig):
        assert f.name in opts, f.name
        assert "--" + f.name.replace("_", "-") in text, f.name
        assert opts[f.name].default == getattr(lib, f.name), f.name
    # nothing given: exactly the library's config (steps 30, not a CLI default of its own)
    assert resolve(["distill", "--out", "x"]).get(DistillConfig) == lib
    assert "(default: 30)" in text


def test_every_owl_config_field_is_an_option_with_the_library_default(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from steerlens.experiments import OwlConfig

    for argv in (["experiment", "owl"], ["demo"]):
        opts = {o.name: o for o in command_for(argv).options()}
        text = _help(argv, capsys)
        lib = OwlConfig()
        for f in dataclasses.fields(OwlConfig):
            if f.metadata.get("cli") is False:  # `extra`: a dict, settable from Python only
                continue
            assert f.name in opts and "--" + f.name.replace("_", "-") in text, f.name
            if f.name == "device":  # the CLI's --device auto picks the GPU when there is one
                assert opts[f.name].default == "auto"
                continue
            assert opts[f.name].default == getattr(lib, f.name), f.name
    cfg = resolve(["experiment", "owl", "--device", "cpu"]).get(OwlConfig)
    assert cfg == OwlConfig.for_device("cpu") == OwlConfig()


def test_config_yaml_overrides_defaults_and_the_command_line_wins(tmp_path: Path) -> None:
    from steerlens.distill import DistillConfig
    from steerlens.experiments import OwlConfig

    cfg = tmp_path / "c.yaml"
    cfg.write_text("steps: 7\nlayers: [3, 4]\nbatch-size: 2\ntop_k: none\nout: o\n")
    got = resolve(["distill", "--config", str(cfg)]).get(DistillConfig)
    assert (got.steps, got.layers, got.batch_size, got.top_k) == (7, (3, 4), 2, None)
    assert resolve(["distill", "--config", str(cfg), "--steps", "9"]).get(DistillConfig).steps == 9
    cfg.write_text("steps: 3\nalphas: [1, 2.5]\ncarry_layers: 2-4\n")
    got_owl = resolve(["demo", "--device", "cpu", "--config", str(cfg)]).get(OwlConfig)
    assert (got_owl.steps, got_owl.alphas, got_owl.carry_layers) == (3, (1.0, 2.5), (2, 3, 4))


def test_unknown_config_key_and_bad_values_error_before_any_model_loads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("colour: blue\n")
    assert main(["distill", "--config", str(bad), "--out", "o"]) == 2
    err = capsys.readouterr().err
    assert "unknown option 'colour' for `distill`" in err and "save-every" in err
    nope = str(tmp_path / "nope")
    for argv, words in (
        (["distill", "--out", "o", "--steps", "many"], "--steps 'many': expected int"),
        (["distill", "--out", "o", "--loss", "mse"], "loss must be 'kl' or 'sft'"),
        (["demo", "--loss", "mse"], "--loss 'mse': choose one of kl, sft"),
        (["distill", "--model", nope], "missing --out"),
        (["carry", "--model", nope, "--vector", nope], f"file {nope} does not exist"),
        (["track", "--vector", nope, "--checkpoints", nope], f"folder {nope} does not exist"),
        (["demo", "--config", nope], f"config file {nope} does not exist"),
        (["report", "--results", nope], "does not exist"),
    ):
        assert main(argv) == 2, argv
        assert words in capsys.readouterr().err, argv
    (tmp_path / "list.yaml").write_text("- a\n")
    assert main(["demo", "--config", str(tmp_path / "list.yaml")]) == 2
    assert "must be a mapping" in capsys.readouterr().err


def test_experiment_owl_and_demo_resolve_to_the_same_config() -> None:
    from steerlens.cli.settings import ExperimentOptions, resolve_device
    from steerlens.experiments import OwlConfig

    for extra in ([], ["--steps", "3", "--seed", "2"]):
        a = resolve(["experiment", "owl", "--quick", *extra])
        b = resolve(["demo", "--quick", *extra])
        assert a.get(OwlConfig) == b.get(OwlConfig)
        assert a.get(OwlConfig) == OwlConfig.quick(
            device=resolve_device("auto"), **({"steps": 3, "seed": 2} if extra else {})
        )
    assert resolve(["demo"]).get(OwlConfig) == OwlConfig.for_device(resolve_device("auto"))
    assert resolve(["demo"]).get(ExperimentOptions).out == "runs/demo"
    assert resolve(["experiment", "owl"]).get(ExperimentOptions).out == "runs/owl"
    assert resolve(["experiment", "owl", "--out", "d"]).get(ExperimentOptions).out == "d"


def test_unknown_experiment_names_the_registered_ones(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["experiment", "ostrich", "--quick"]) == 2
    err = capsys.readouterr().err
    assert "unknown experiment 'ostrich'" in err and "owl" in err
    assert "owl" in _help(["experiment"], capsys)


def test_settings_defaults_follow_the_library_signatures() -> None:
    """Commands without a library config take each default from the function's signature."""
    from steerlens.carry import carry_test
    from steerlens.cli.settings import CarryOptions, ExtractOptions, TrackOptions, default_of
    from steerlens.directions.extract import extract_vector
    from steerlens.track import track_checkpoints

    for cls, fn in (
        (CarryOptions, carry_test),
        (TrackOptions, track_checkpoints),
        (ExtractOptions, extract_vector),
    ):
        params = inspect.signature(fn).parameters
        for f in dataclasses.fields(cls):
            # layers: a CLI spec string ("all"); carry's trait: the CLI tests the owl by default;
            # vector: a file path on the CLI, a positional argument in the library
            if f.name not in params or f.name in ("layers", "trait", "vector"):
                continue
            want = default_of(fn, f.name)
            got = f.default
            assert got == (tuple(want) if isinstance(got, tuple) else want), (cls, f.name)


LEGACY_OPTIONS = {
    "extract": "trait pos neg layers method position batch-size out",
    "carry": "vector trait layers alphas n-random out html",
    "track": "checkpoints control vector trait prompts layers cache-dir n-null n-boot correction "
    "out html",
    "screen": "vector data control-data top out html",
    "distill": "trait benign n steps save-every rank loss overwrite out",
    "report": "results out",
    "demo": "trait out quick steps n-samples",
}


def test_every_option_of_the_previous_command_line_still_exists() -> None:
    for cmd, words in LEGACY_OPTIONS.items():
        flags = {o.flag for o in command_for([cmd]).options()}
        common = {"--seed"} | (set() if cmd == "report" else {"--model", "--device", "--dtype"})
        for flag in common | {f"--{w}" for w in words.split()}:
            assert flag in flags, (cmd, flag)
