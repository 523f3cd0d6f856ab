"""The command line on a tiny model saved to disk, and the demo on the embedded model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import steerlens as sl
from steerlens.cli import main
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
def test_demo_pipeline_on_tiny_model_writes_a_report(tiny_dir: Path, tmp_path: Path) -> None:
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
    check = browser_check(out / "report.html")
    assert check["errors"] == [] and check["figures"] >= 8 and check["drawn"] == check["figures"]
    logs.clear()
    run_demo(cfg, out, progress=False, log=logs.append)
    assert sum("reusing" in line for line in logs) >= 5


@pytest.mark.integration
@pytest.mark.browser
def test_readme_demo_command_quick(tmp_path: Path) -> None:
    """`steerlens demo --quick` on the embedded SmolLM2: the README's main job, smoke-sized."""
    from steerlens.report import browser_check

    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--out", str(out)]) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["lineage"]["base"]["n_layers"] == 30
    counts = res["lineage"]["data"]["teacher"]["counts"]
    assert counts["kept"] >= 1 and counts["generated"] >= counts["kept"]
    assert res["verdict"]["strength"] in {"strong", "weak", "none"}
    assert any("Carry test" in line for line in res["verdict"]["lines"])
    check = browser_check(out / "report.html")
    assert check["errors"] == [] and check["drawn"] == check["figures"] >= 8
    shutil.rmtree(out / "students", ignore_errors=True)
