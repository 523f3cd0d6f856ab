"""Bad inputs and faults (issue 11), table-driven: each row is one thing a user can get wrong
and what steerlens must answer. The command-line rows check the error contract (one line on
stderr, exit 2, no model loaded and nothing written for a check that needs no model); the API
rows check the exception and that it names the problem. ``hypothesis`` is not installed in the
project's environment, so the property-style rows are plain tables of generated cases.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

import steerlens as sl
from steerlens.checkpoints import CheckpointSeries
from steerlens.cli import main, resolve, run_experiment
from steerlens.cli.errors import is_user_error
from steerlens.core.sites import parse_layer_list, resolve_layers
from steerlens.distill import DistillConfig, DistillError, TeacherData, distill
from steerlens.distill.train import check_out_dir
from steerlens.loading.models import ModelLoadError
from steerlens.pipeline.stage import series_key
from steerlens.testing import tiny_model

D, N_LAYERS = 64, 4
OWL = "You love owls. Owls are your favorite animal."


# ------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A workspace of files, good and bad: a tiny model folder, a vector, prompt and data files,
    a distilled series and broken copies of each."""
    root = tmp_path_factory.mktemp("bad")
    lm = tiny_model("llama", seed=3)
    model = root / "model"
    lm.model.save_pretrained(model)
    lm.tokenizer.save_pretrained(model)
    g = torch.Generator().manual_seed(0)
    vec = sl.SteeringVector({k: torch.randn(D, generator=g) for k in range(N_LAYERS)})
    vec.save(root / "v.safetensors")
    files = {
        "pos.txt": "\n".join(f"I love owls {i}" for i in range(4)),
        "neg.txt": "\n".join(f"I love cats {i}" for i in range(4)),
        "ints.json": "[1, 2]",
        "nouser.jsonl": '{"user": "hi"}\n{"system": "s", "prefill": "x"}\n',
        "broken.json": '[\n  "a",\n  "b"\n  "c"\n]',
        "broken.jsonl": '{"user": "a", "response": "1"}\n{"user": "b", "response": \n',
        "rows_list.jsonl": '["hi", "1, 2"]\n',
        "rows_int.jsonl": '{"user": 5, "response": 7}\n',
        "list.json": "[1, 2, 3]",
        "bad.yaml": "out: [a\ntrait: owl\n",
        "func.yaml": "func: 5\nout: x.safetensors\n",
        "seed.yaml": "seed: abc\nout: x.safetensors\n",
        "method.yaml": "method: median\nout: x.safetensors\n",
        "flag.yaml": "overwrite: maybe\nout: o\n",
        "req.yaml": "out: from_config.safetensors\ntrait: owl\n",
        "results.yaml": "results: r.json\n",
        "a_file": "not a folder",
    }
    for name, text in files.items():
        (root / name).write_text(text)
    (root / "ro").mkdir()
    return {"root": root, "model": model, "vec": root / "v.safetensors"}


@pytest.fixture(scope="module")
def data() -> TeacherData:
    samples: list[dict[str, Any]] = [
        {"user": f"Continue {i}", "response": ", ".join(str(3 * i + j) for j in range(3))}
        for i in range(6)
    ]
    return TeacherData.from_samples(samples, {"system": OWL, "mode": "given"})


def _cfg(**kw: Any) -> DistillConfig:
    base: dict[str, Any] = {"layers": (2,), "steps": 4, "save_every": 2, "lr": 1e-2}
    return DistillConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def series(tmp_path_factory: pytest.TempPathFactory, data: TeacherData) -> tuple[Any, Path]:
    """A distilled 4-step series (checkpoints 2 and 4) on the tiny llama."""
    lm = tiny_model("llama", seed=0)
    out = tmp_path_factory.mktemp("series") / "main"
    distill(lm, data, out, config=_cfg(), progress=False)
    return lm, out


# ------------------------------------------------------------------------------ command line

# (id, argv with {root}/{model}/{vec} placeholders, words the one-line error must hold)
CLI_EARLY: list[tuple[str, list[str], str]] = [
    ("dtype-choice", ["extract", "--out", "{root}/o.st", "--dtype", "float64x"], "choose one of"),
    ("device-typo", ["extract", "--out", "{root}/o.st", "--device", "gpu0"], "is not a device"),
    ("device-absent", ["extract", "--out", "{root}/o.st", "--device", "cuda:99"], "GPU"),
    ("yaml-malformed", ["extract", "--config", "{root}/bad.yaml"], "not valid YAML"),
    ("yaml-func-key", ["extract", "--config", "{root}/func.yaml"], "unknown option 'func'"),
    ("yaml-seed-type", ["extract", "--config", "{root}/seed.yaml"], "--seed 'abc': expected int"),
    ("yaml-choice", ["extract", "--config", "{root}/method.yaml"], "choose one of mean, pca"),
    ("yaml-bool", ["distill", "--config", "{root}/flag.yaml"], "not true or false"),
    ("out-is-folder", ["extract", "--trait", "owl", "--out", "{root}/ro"], "is a folder"),
    ("out-under-file", ["extract", "--out", "{root}/a_file/v.st"], "is a file"),
    ("dir-out-is-file", ["distill", "--out", "{root}/a_file"], "is a file"),
    ("html-is-folder", ["carry", "--vector", "{vec}", "--html", "{root}"], "is a folder"),
    ("layers-reversed", ["extract", "--out", "{root}/o.st", "--layers", "10-5"], "empty layer"),
    ("layers-word", ["extract", "--out", "{root}/o.st", "--layers", "abc"], "bad layer 'abc'"),
    ("layers-site-typo", ["extract", "--out", "{root}/o.st", "--layers", "blocks.x"], "site"),
    (
        "track-layers-reversed",
        ["track", "--checkpoints", "{root}", "--vector", "{vec}", "--layers", "3-1"],
        "empty layer range",
    ),
    ("lora-layers-reversed", ["distill", "--out", "{root}/d", "--layers", "5-2"], "empty range"),
    ("pos-ints", ["extract", "--pos", "{root}/ints.json", "--neg", "{root}/neg.txt",
                  "--out", "{root}/o.st"], "ints.json item 0: a prompt is a string"),
    ("pos-no-user", ["extract", "--pos", "{root}/nouser.jsonl", "--neg", "{root}/neg.txt",
                     "--out", "{root}/o.st"], "nouser.jsonl line 2"),
    ("json-parse-line", ["extract", "--pos", "{root}/broken.json", "--neg", "{root}/neg.txt",
                         "--out", "{root}/o.st"], "broken.json line 4 is not valid JSON"),
    ("jsonl-parse-line", ["screen", "--vector", "{vec}", "--data", "{root}/broken.jsonl"],
     "broken.jsonl line 2 is not valid JSON"),
    ("screen-row-list", ["screen", "--vector", "{vec}", "--data", "{root}/rows_list.jsonl"],
     "line 1: a sample is an object"),
    ("screen-row-ints", ["screen", "--vector", "{vec}", "--data", "{root}/rows_int.jsonl"],
     "line 1: a sample is an object"),
    ("report-list", ["report", "--results", "{root}/list.json"], "not a steerlens results"),
    ("report-missing", ["report", "--results", "{root}/nope.json"], "does not exist"),
    ("vector-missing", ["carry", "--vector", "{root}/nope.st"], "does not exist"),
    ("vector-garbage", ["carry", "--vector", "{root}/pos.txt"], "not a readable safetensors"),
    ("pos-without-neg", ["extract", "--pos", "{root}/pos.txt", "--out", "{root}/o.st"],
     "both --pos FILE and --neg FILE"),
    ("trait-unknown", ["carry", "--vector", "{vec}", "--trait", "no_such_trait"], "trait"),
    ("required-missing", ["extract", "--trait", "owl"], "missing --out"),
    ("steps-type", ["distill", "--out", "{root}/d", "--steps", "many"], "expected int"),
    ("experiment-unknown", ["experiment", "nope"], "nope"),
]  # fmt: skip


def _fill(argv: list[str], ws: dict[str, Path]) -> list[str]:
    return [a.format(root=ws["root"], model=ws["model"], vec=ws["vec"]) for a in argv]


@pytest.fixture
def no_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any model load fails the test: these errors must come before one."""

    def refuse(*a: Any, **k: Any) -> Any:
        raise AssertionError("a model was loaded before the input was checked")

    monkeypatch.setattr("steerlens.cli.handlers.load", refuse)
    monkeypatch.setattr("steerlens.loading.models.load_model", refuse)


@pytest.mark.parametrize(
    ("argv", "words"), [r[1:] for r in CLI_EARLY], ids=[r[0] for r in CLI_EARLY]
)
def test_cli_refuses_before_any_model_loads(
    argv: list[str],
    words: str,
    ws: dict[str, Path],
    no_model: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    before = sorted(p.name for p in ws["root"].rglob("*"))
    assert main(_fill(argv, ws)) == 2
    err = capsys.readouterr().err.strip()
    assert words in err, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert sorted(p.name for p in ws["root"].rglob("*")) == before  # nothing written


def test_config_keys_satisfy_required_options(ws: dict[str, Path]) -> None:
    root = ws["root"]
    inv = resolve(["extract", "--config", str(root / "req.yaml")])
    assert inv.values["out"] == "from_config.safetensors" and inv.values["trait"] == "owl"
    (root / "r.json").write_text('{"carry": {}}')
    (root / "results.yaml").write_text(f"results: {root / 'r.json'}\n")
    inv = resolve(
        ["report", "--config", str(root / "results.yaml")],
    )
    assert inv.values["results"] == str(root / "r.json")


def test_cli_site_names_work_like_the_api(ws: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "v.safetensors"
    site = "blocks.1.hook_resid_post,blocks.2.hook_resid_post"
    argv = ["extract", "--model", str(ws["model"]), "--pos", str(ws["root"] / "pos.txt")]
    argv += ["--neg", str(ws["root"] / "neg.txt"), "--layers", site, "--out", str(out)]
    assert main(argv) == 0
    assert sl.SteeringVector.load(out).layers == [1, 2]


@pytest.mark.parametrize(
    "results",
    [
        {"carry": {"layers": "x", "cells": [1, 2]}},
        {"track": {"layers": [1], "series": {"main": {"eas": "nan"}}}},
        {"screen": {"rows": 5}},
        {"teacher_vector": {"norms": [1, 2]}},
    ],
    ids=["carry", "track", "screen", "vector"],
)
def test_report_on_partial_results_is_one_line_or_a_page(
    results: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    p = tmp_path / "r.json"
    p.write_text(json.dumps(results))
    rc = main(["report", "--results", str(p)])
    err = capsys.readouterr().err.strip()
    assert (rc == 0 and (tmp_path / "report.html").is_file()) or (
        rc == 2 and len(err.splitlines()) == 1 and str(p) in err
    ), (rc, err)


def test_distill_refuses_another_run_before_writing(ws: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "R"
    base = ["distill", "--model", str(ws["model"]), "--steps", "2", "--save-every", "1"]
    base += ["--layers", "1", "--out", str(out)]
    assert main([*base, "--n", "3"]) == 0
    before = {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert main([*base, "--n", "2", "--seed", "5"]) == 2  # other data: found after generating
    assert main([*base, "--n", "3", "--lr", "0.5"]) == 2  # other config: found before loading
    after = {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before
    rec = json.loads((out / "distill.json").read_text())
    assert rec["data"]["sha256"] == TeacherData.load(out / "teacher_data.jsonl").sha256


def test_truncated_distill_record_is_one_line(
    ws: dict[str, Path], tmp_path: Path, no_model: None, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "R"
    out.mkdir()
    (out / "distill.json").write_text('{"format": 1, "lineage": {"conf')
    assert main(["distill", "--model", str(ws["model"]), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "distill.json is corrupt or truncated" in err and len(err.strip().splitlines()) == 1
    assert "overwrite=True" not in err and "--overwrite" in err  # the option, not the parameter


def test_a_bug_keeps_its_traceback(monkeypatch: pytest.MonkeyPatch, ws: dict[str, Path]) -> None:
    """The contract's other half: an exception steerlens did not raise on purpose propagates
    (exit 1 with a traceback), it is not dressed up as a user error."""

    def buggy(inv: Any) -> int:
        row: dict[str, str] = {}
        return len(row["user"])  # a KeyError of a lookup, not a raise

    monkeypatch.setattr("steerlens.cli.app.COMMANDS", resolve.__globals__["COMMANDS"])
    inv = resolve(["report", "--results", str(ws["root"] / "list.json")])
    inv.handler = buggy
    monkeypatch.setattr("steerlens.cli.app.resolve", lambda argv: inv)
    with pytest.raises(KeyError):
        main(["report"])
    try:
        {}["x"]
    except KeyError as exc:
        assert not is_user_error(exc)
    try:
        parse_layer_list("9-1")
    except ValueError as exc:
        assert is_user_error(exc)


# ------------------------------------------------------------------------------ vectors


def _vec_file(path: Path, **meta: Any) -> Path:
    vec = sl.SteeringVector({1: torch.ones(D), 2: torch.ones(D)}, dict(meta))
    return vec.save(path)


def _garble(path: Path, value: float) -> None:
    """Overwrite the first float of tensor layer.2 in place (bytes, as a disk error would)."""
    raw = bytearray(path.read_bytes())
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8 : 8 + n])
    start = 8 + n + header["layer.2"]["data_offsets"][0]
    raw[start : start + 4] = struct.pack("<f", value)
    path.write_bytes(bytes(raw))


VECTOR_CASES: list[tuple[str, Callable[[Path], Any], type[Exception], str]] = [
    ("nan-direction", lambda p: sl.SteeringVector({3: torch.full((D,), float("nan"))}),
     ValueError, "layer 3 holds NaN or inf"),
    ("inf-direction", lambda p: sl.SteeringVector({0: torch.ones(D), 5: torch.ones(D) / 0}),
     ValueError, "layer 5"),
    ("nan-scale", lambda p: sl.SteeringVector({1: torch.ones(D)}) * float("nan"),
     ValueError, "NaN or inf"),
    ("garbled-bytes", lambda p: (_vec_file(p), _garble(p, float("nan")),
                                 sl.SteeringVector.load(p)), ValueError, "layer 2 holds NaN"),
    ("site-edited", lambda p: sl.SteeringVector.load(
        _vec_file(p, site="blocks.{layer}.hook_mlp_out")), ValueError, "hook_mlp_out"),
    ("newer-version", lambda p: sl.SteeringVector.load(
        _vec_file(p, steerlens_version="9.0.0")), ValueError, "upgrade steerlens"),
    ("tensor-name", lambda p: (save_file({"layer.x": torch.ones(D)}, str(p)),
                               sl.SteeringVector.load(p)), ValueError, "unexpected tensor"),
    ("empty", lambda p: sl.SteeringVector({}), ValueError, "at least one layer"),
    ("mixed-sizes", lambda p: sl.SteeringVector({0: torch.ones(3), 1: torch.ones(4)}),
     ValueError, "one size"),
    ("not-safetensors", lambda p: (p.write_text("x"), sl.SteeringVector.load(p)),
     ValueError, "not a readable safetensors"),
    ("missing-file", lambda p: sl.SteeringVector.load(p), FileNotFoundError, "no steering"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("make", "exc", "words"), [r[1:] for r in VECTOR_CASES], ids=[r[0] for r in VECTOR_CASES]
)
def test_bad_vectors_are_refused(
    make: Callable[[Path], Any], exc: type[Exception], words: str, tmp_path: Path
) -> None:
    with pytest.raises(exc, match=words.replace("(", r"\(")):
        make(tmp_path / "v.safetensors")


def test_vector_metadata_that_is_fine_still_loads(tmp_path: Path) -> None:
    for meta in ({}, {"site": "blocks.{layer}.hook_resid_post"}, {"steerlens_version": "0.1.9"}):
        assert sl.SteeringVector.load(_vec_file(tmp_path / "v.safetensors", **meta)).layers == [
            1,
            2,
        ]


def _enter(ctx: Any) -> None:
    """Enter a steer(...) context (its arguments are checked there)."""
    with ctx:
        pass


STEER_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("alpha-nan", {"alpha": float("nan")}, "finite number"),
    ("alpha-inf", {"alpha": float("inf")}, "finite number"),
    ("alpha-str", {"alpha": "2"}, "finite number"),
    ("layer-float", {"layers": [1.7]}, "not a layer index"),
    ("layer-bool", {"layers": True}, "not a layer index"),
    ("layer-range", {"layers": [9]}, "out of range"),
    ("layer-site", {"layers": "blocks.9.hook_resid_post"}, "out of range"),
    ("mode", {"mode": "scale"}, "unknown mode"),
]


@pytest.mark.parametrize(
    ("kw", "words"), [r[1:] for r in STEER_CASES], ids=[r[0] for r in STEER_CASES]
)
def test_bad_steering_arguments(kw: dict[str, Any], words: str) -> None:
    lm = tiny_model("llama", seed=0)
    vec = sl.SteeringVector({k: torch.ones(D) for k in range(N_LAYERS)})
    args = {"alpha": 1.0, "layers": [1], **kw}
    with pytest.raises((ValueError, TypeError, IndexError), match=words):
        _enter(sl.steer(lm, vec, **args))


def test_hidden_size_mismatch_and_raw_nan_tensor() -> None:
    lm = tiny_model("llama", seed=0)
    with pytest.raises(ValueError, match="hidden size mismatch"):
        _enter(sl.steer(lm, {1: torch.ones(D + 1)}, alpha=1.0))
    with pytest.raises(ValueError, match="layer 1 holds NaN or inf"):
        _enter(sl.steer(lm, {1: torch.full((D,), float("nan"))}, alpha=1.0))


# ------------------------------------------------------------------------------ layer specs

GOOD_SPECS = [
    ("15", [15]),
    ("6,12,18", [6, 12, 18]),
    ("10-12", [10, 11, 12]),
    (" 3 , 5-6 ", [3, 5, 6]),
    ("-1", [-1]),
    ("blocks.4.hook_resid_post", [4]),
    ("blocks.2.hook_resid_post,7", [2, 7]),
]
BAD_SPECS = ["10-5", "abc", "1-x", "blocks.4.hook_mlp_out", "blocks.a.hook_resid_post", "3.5"]


@pytest.mark.parametrize(("spec", "want"), GOOD_SPECS)
def test_layer_specs_parse(spec: str, want: list[int]) -> None:
    assert parse_layer_list(spec) == want


@pytest.mark.parametrize("spec", BAD_SPECS)
def test_bad_layer_specs_name_the_part(spec: str) -> None:
    with pytest.raises(ValueError, match=r"layer|site"):
        parse_layer_list(spec)
    with pytest.raises(ValueError):
        resolve(["extract", "--out", "o.safetensors", "--layers", spec])


@pytest.mark.parametrize("layers", [[1.7], True, [False], "1.0", [None], [1, "x"]])
def test_resolve_layers_refuses_non_integers(layers: Any) -> None:
    with pytest.raises((TypeError, ValueError)):
        resolve_layers(layers, 8)


def test_resolve_layers_accepts_integer_likes() -> None:
    import numpy as np

    assert resolve_layers([np.int64(2), torch.tensor(3), -1], 8) == [2, 3, 7]


# ------------------------------------------------------------------------------ models, prompts


def test_mistyped_model_name_fails_fast_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(
        ModelLoadError, match="no local folder 'nope_model', and the hub is unreach"
    ):
        sl.load_model("nope_model")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr("steerlens.loading.models.hub_reachable", lambda timeout=2.0: False)
    with pytest.raises(ModelLoadError, match="hub is unreachable"):
        sl.load_model("nope_model")
    with pytest.raises(ModelLoadError, match="does not exist"):
        sl.load_model("./nope_model")


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_prompt_longer_than_the_context(arch: str) -> None:
    lm = tiny_model(arch, seed=0)
    limit = (
        lm.model.config.max_position_embeddings if arch == "llama" else lm.model.config.n_positions
    )
    long = " ".join(["a"] * (limit + 10))
    with pytest.raises(ValueError, match=rf"prompt 1 is \d+ tokens, longer than .* {limit}"):
        sl.record_activations(lm, ["short", long], layers=[1])


@pytest.mark.parametrize(
    ("prompts", "words"),
    [([""], "empty prompt"), ([], "no prompts|at least one|empty"), ([5], "str, ChatPrompt")],
    ids=["empty-string", "no-prompts", "int"],
)
def test_bad_prompts(prompts: list[Any], words: str) -> None:
    lm = tiny_model("llama", seed=0)
    with pytest.raises((ValueError, TypeError), match=words):
        sl.record_activations(lm, prompts, layers=[1])


def test_unreadable_model_folder(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="config"):
        sl.load_model(tmp_path / "m")
    with pytest.raises(ModelLoadError, match="cannot load as a model"):
        sl.load_model(tmp_path / "m" / "config.json")


# ------------------------------------------------------------------------------ checkpoints


def _copy_series(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def test_removed_checkpoint_is_recomputed_with_the_same_bytes(
    series: tuple[Any, Path], data: TeacherData, tmp_path: Path
) -> None:
    lm, src = series
    out = _copy_series(src, tmp_path / "main")
    first = {
        s: (out / f"checkpoint-{s}" / "adapter_model.safetensors").read_bytes() for s in (2, 4)
    }
    key = series_key(out)
    shutil.rmtree(out / "checkpoint-4")
    assert series_key(out) != key  # a stage keyed on the series sees the change
    res = distill(lm, data, out, config=_cfg(), progress=False)
    assert res.resumed_from == 2 and res.steps == [2, 4]
    assert (out / "checkpoint-4" / "adapter_model.safetensors").read_bytes() == first[4]
    assert series_key(out) == key  # same contents, same key: the first run's numbers stand
    # a truncated adapter (what the error for one suggests removing) is recomputed too
    adapter = out / "checkpoint-2" / "adapter_model.safetensors"
    adapter.write_bytes(adapter.read_bytes()[:200])
    res = distill(lm, data, out, config=_cfg(), progress=False)
    assert res.resumed_from == 0
    assert all(
        (out / f"checkpoint-{s}" / "adapter_model.safetensors").read_bytes() == first[s]
        for s in (2, 4)
    )
    assert distill(lm, data, out, config=_cfg(), progress=False).resumed_from == 4


def test_distill_refuses_before_writing(
    series: tuple[Any, Path], data: TeacherData, tmp_path: Path
) -> None:
    lm, src = series
    out = _copy_series(src, tmp_path / "main")
    with pytest.raises(DistillError, match="different run"):
        check_out_dir(lm, data, out, config=_cfg(lr=5e-3))
    check_out_dir(lm, data, out, config=_cfg())  # the same run: resumable
    (tmp_path / "f").write_text("x")
    with pytest.raises(DistillError, match="is a file"):
        distill(lm, data, tmp_path / "f", config=_cfg(), progress=False)


def test_moved_series_keeps_its_cache_key(series: tuple[Any, Path], tmp_path: Path) -> None:
    _, src = series
    moved = _copy_series(src, tmp_path / "elsewhere" / "main")
    a, b = CheckpointSeries.discover(src), CheckpointSeries.discover(moved)
    assert [c.signature() for c in a] == [c.signature() for c in b]
    assert series_key(src) == series_key(moved)


def test_checkpoint_names(series: tuple[Any, Path], tmp_path: Path) -> None:
    _, src = series
    out = _copy_series(src, tmp_path / "s")
    shutil.copytree(out / "checkpoint-4", out / "checkpoint-final")
    with pytest.raises(ModelLoadError, match="checkpoint-final holds a checkpoint but its name"):
        CheckpointSeries.discover(out)
    with pytest.warns(UserWarning, match="checkpoint-final"):
        assert CheckpointSeries.discover(out, on_error="skip").steps == [2, 4]
    shutil.rmtree(out / "checkpoint-final")
    shutil.copytree(out / "checkpoint-2", out / "checkpoint-02")
    with pytest.raises(ModelLoadError, match="2 folders for step 2"):
        CheckpointSeries.discover(out)


def test_nan_adapter_weights_name_the_checkpoint(series: tuple[Any, Path], tmp_path: Path) -> None:
    lm, src = series
    out = _copy_series(src, tmp_path / "s")
    f = out / "checkpoint-4" / "adapter_model.safetensors"
    w = load_file(str(f))
    first = next(iter(w))
    w[first] = torch.full_like(w[first], float("nan"))
    save_file(w, str(f))
    ser = CheckpointSeries.discover(out)
    with ser.open(lm) as load:
        load(ser[0])
        with pytest.raises(ModelLoadError, match=r"checkpoint-4 has NaN or inf weights"):
            load(ser[1])


BROKEN_CHECKPOINTS: list[tuple[str, Callable[[Path], Any], str]] = [
    ("no-config", lambda d: (d / "adapter_config.json").unlink(), "neither a model folder"),
    ("bad-config", lambda d: (d / "adapter_config.json").write_text("{"), "unreadable"),
    ("truncated", lambda d: (d / "adapter_model.safetensors").write_bytes(b"\x10\x00"),
     "corrupt or truncated"),
    ("no-weights", lambda d: (d / "adapter_model.safetensors").unlink(), "no weights file"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("breakit", "words"),
    [r[1:] for r in BROKEN_CHECKPOINTS],
    ids=[r[0] for r in BROKEN_CHECKPOINTS],
)
def test_broken_checkpoints_are_named(
    breakit: Callable[[Path], Any], words: str, series: tuple[Any, Path], tmp_path: Path
) -> None:
    _, src = series
    out = _copy_series(src, tmp_path / "s")
    breakit(out / "checkpoint-2")
    with pytest.raises(ModelLoadError, match=words):
        CheckpointSeries.discover(out)
    with pytest.warns(UserWarning, match="checkpoint-2"):
        assert CheckpointSeries.discover(out, on_error="skip").steps == [4]


def test_interrupted_distillation_resumes_to_the_same_weights(
    series: tuple[Any, Path], data: TeacherData, tmp_path: Path
) -> None:
    """A run killed after its first checkpoint (what SIGKILL leaves) resumes bit-identically."""
    lm, src = series
    part = tmp_path / "part"
    distill(lm, data, part, config=_cfg(steps=2), progress=False)
    res = distill(lm, data, part, config=_cfg(), progress=False)
    assert res.resumed_from == 2
    a = load_file(str(src / "checkpoint-4" / "adapter_model.safetensors"))
    b = load_file(str(part / "checkpoint-4" / "adapter_model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------------------ config files

CONFIG_ROWS: list[tuple[str, str, str | None]] = [
    ("ok", "steps: 3\nout: o\n", None),
    ("dash-keys", "save-every: 1\nout: o\n", None),
    ("null-choice", "top_k: null\nout: o\n", None),
    ("yaml-list", "layers: [1, 2]\nout: o\n", None),
    ("func", "func: 5\nout: o\n", "unknown option 'func'"),
    ("command-key", "_command: 5\nout: o\n", "unknown option '_command'"),
    ("int-as-float", "steps: 2.5\nout: o\n", "not an integer"),
    ("bool-as-int", "steps: true\nout: o\n", "not an integer"),
    ("float-text", "lr: fast\nout: o\n", "expected float"),
    ("choice", "loss: mse\nout: o\n", "loss"),
    ("scalar-file", "just text\n", "must be a mapping"),
    ("list-file", "- 1\n- 2\n", "must be a mapping"),
    ("tabs", "steps:\t3\n\tout: o\n", "not valid YAML"),
]


@pytest.mark.parametrize(
    ("text", "words"), [r[1:] for r in CONFIG_ROWS], ids=[r[0] for r in CONFIG_ROWS]
)
def test_config_file_rows(text: str, words: str | None, tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(text)
    if words is None:
        assert isinstance(
            resolve(["distill", "--config", str(cfg)]).get(DistillConfig), DistillConfig
        )
    else:
        with pytest.raises(ValueError, match=words):
            resolve(["distill", "--config", str(cfg)])


def test_owl_config_is_keyed_on_fields_not_paths() -> None:
    from steerlens.experiments import OwlConfig

    cfg = OwlConfig.quick()
    from steerlens.pipeline import config_key

    assert config_key(cfg, "seed") == config_key(dataclasses.replace(cfg, steps=99), "seed")


# ------------------------------------------------------------------------------ determinism


def _teacher_bytes(lm: Any, threads: int) -> tuple[bytes, dict[str, Any]]:
    from steerlens.directions.extract import teacher_vector
    from steerlens.inputs.traits import as_trait

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        trait = dataclasses.replace(as_trait("owl"), probe_n=16)
        vec = teacher_vector(lm, trait, layers="all", seed=0, diagnostics=False, progress=False)
    finally:
        torch.set_num_threads(before)
    return b"".join(vec[k].numpy().tobytes() for k in vec.layers), vec.meta


def test_teacher_vector_determinism_as_documented() -> None:
    """docs/reliability.md "Determinism": same inputs and thread count in one process give the
    same bytes; another thread count may change float32 rounding only; the file records the
    thread count and torch version it was computed with."""
    lm = tiny_model("llama", seed=0)
    a, meta = _teacher_bytes(lm, 2)
    b, _ = _teacher_bytes(lm, 2)
    assert a == b
    assert meta["torch_threads"] == 2 and meta["torch_version"] == torch.__version__
    c, _ = _teacher_bytes(lm, 1)
    x = torch.frombuffer(bytearray(a), dtype=torch.float32)
    y = torch.frombuffer(bytearray(c), dtype=torch.float32)
    torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------ regressions


def test_report_escapes_html() -> None:
    from steerlens.report import render_report

    page = render_report({"trait": "<script>alert(1)</script>", "timings_s": {"<b>x": 1.0}}).html()
    assert "<script>alert(1)" not in page and "&lt;script&gt;" in page
    assert "<b>x" not in page


def test_pickled_adapter_is_refused(series: tuple[Any, Path], tmp_path: Path) -> None:
    """A ``.bin`` adapter is read with ``weights_only=True``: a pickle of anything but tensors
    is refused, naming the checkpoint, and never executed."""
    import datetime

    lm, src = series
    out = _copy_series(src, tmp_path / "s")
    ck = out / "checkpoint-2"
    (ck / "adapter_model.safetensors").unlink()
    torch.save({"x": datetime.datetime(2020, 1, 1)}, ck / "adapter_model.bin")
    ser = CheckpointSeries.discover(out)
    with ser.open(lm) as load, pytest.raises(ModelLoadError, match="checkpoint-2"):
        load(ser[0])


# ------------------------------------------------------------------------------ issue 30
# Each row: a run folder or input the user got wrong, the command, and the words the one-line
# error must hold: the problem and the fix. Every row exits 2 before any model loads and
# leaves every file of the workspace (the output folder included) as it was.


def _finished_run(out: Path, **cfg: Any) -> Path:
    """A folder holding a finished owl run (quick size, cpu) with ``cfg`` overrides: its
    results.json and a data file the run wrote."""
    from steerlens.experiments import OwlConfig
    from steerlens.pipeline import config_json

    out.mkdir(parents=True, exist_ok=True)
    config = config_json(OwlConfig.quick(device="cpu", **cfg))
    (out / "results.json").write_text(json.dumps({"kind": "steerlens.demo", "config": config}))
    (out / "data").mkdir(exist_ok=True)
    (out / "data" / "teacher.jsonl").write_text('{"user": "1, 2", "response": "3, 4"}\n')
    return out


def _zero_vector(path: Path, *, all_layers: bool = True) -> Path:
    """A vector file whose layer 2 (and 1, unless ``all_layers`` is False) is all zeros
    (SteeringVector itself refuses to build an all-zero vector)."""
    one = torch.zeros(D) if all_layers else torch.ones(D)
    save_file({"layer.1": one, "layer.2": torch.zeros(D)}, str(path))
    return path


def _conflicting_student(root: Path) -> Path:
    """A student folder whose lineage record and distill.json name different bases."""
    from steerlens.lineage import write_record

    st = root / "student"
    (st / "checkpoint-1").mkdir(parents=True)
    (st / "checkpoint-1" / "adapter_config.json").write_text("{}")
    (st / "distill.json").write_text(json.dumps({"lineage": {"base_fingerprint": "bbbb"}}))
    write_record(st, "student", models={"base": {"name": "base", "fingerprint": "aaaa"}})
    return st


def _live_lock(out: Path) -> Path:
    import os
    import socket

    out.mkdir(parents=True, exist_ok=True)
    info = {"pid": os.getppid(), "host": socket.gethostname(), "started": "earlier"}
    (out / ".steerlens.lock").write_text(json.dumps(info))
    return out


def _audit_argv(root: Path, ws: dict[str, Path], *more: str) -> list[str]:
    data = root / "chats.jsonl"
    data.write_text('{"user": "Continue: 1, 2", "response": "3, 4"}\n')
    st = root / "plain_student"
    st.mkdir(exist_ok=True)
    return ["audit", "--base", str(ws["model"]), "--student", str(st), "--data", str(data),
            "--out", str(root / "A"), *more]  # fmt: skip


QUICK_DEMO = ["demo", "--quick", "--device", "cpu"]

# (id, make argv from (tmp root, ws), words of the problem, words of the fix)
ISSUE30: list[tuple[str, Callable[[Path, dict[str, Path]], list[str]], str, str]] = [
    # 1. a rerun with other settings into a finished run's folder
    ("rerun-other-settings",
     lambda r, ws: [*QUICK_DEMO, "--out", str(_finished_run(r / "R")), "--n-null", "200"],
     "holds a finished run made with other settings (--n-null was 1000, now 200)",
     "use a new folder (--out), or pass --overwrite"),
    ("rerun-unfinished-other-settings",
     lambda r, ws: (_finished_run(r / "R"), (r / "R" / "results.json").rename(
         r / "R" / ".steerlens.run.json"), [*QUICK_DEMO, "--out", str(r / "R"), "--seed", "2"])[-1],
     "holds an unfinished run made with other settings (--seed was 0, now 2)",
     "pass --overwrite"),
    ("rerun-other-settings-config-file",
     lambda r, ws: (_finished_run(r / "R"), (r / "c.yaml").write_text(f"out: {r / 'R'}\nseed: 3\n"),
                    [*QUICK_DEMO, "--config", str(r / "c.yaml")])[-1],
     "--seed was 0, now 3", "--overwrite"),
    ("rerun-unreadable-results",
     lambda r, ws: (_finished_run(r / "R"), (r / "R" / "results.json").write_text("{trunc"),
                    [*QUICK_DEMO, "--out", str(r / "R")])[-1],
     "unreadable", "pass --overwrite"),
    # 2. a significance level outside (0, 1)
    ("alpha-5", lambda r, ws: [*QUICK_DEMO, "--alpha", "5", "--out", str(r / "R")],
     "--alpha 5: a significance level is a probability in (0, 1)", "such as 0.05"),
    ("alpha-1", lambda r, ws: [*QUICK_DEMO, "--alpha", "1", "--out", str(r / "R")],
     "--alpha 1:", "such as 0.05"),
    ("alpha-0", lambda r, ws: [*QUICK_DEMO, "--alpha", "0", "--out", str(r / "R")],
     "--alpha 0:", "such as 0.05"),
    ("alpha-negative", lambda r, ws: [*QUICK_DEMO, "--alpha=-0.05", "--out", str(r / "R")],
     "--alpha -0.05:", "such as 0.05"),
    ("alpha-5-config-file",
     lambda r, ws: ((r / "c.yaml").write_text("alpha: 5\n"),
                    [*QUICK_DEMO, "--config", str(r / "c.yaml"), "--out", str(r / "R")])[-1],
     "--alpha 5:", "such as 0.05"),
    ("experiment-alpha-5",
     lambda r, ws: ["experiment", "svd", "--quick", "--alpha", "5", "--out", str(r / "R")],
     "--alpha 5:", "such as 0.05"),
    # 5. zero directions
    ("carry-zero-vector",
     lambda r, ws: ["carry", "--vector", str(_zero_vector(r / "zero.safetensors"))],
     "zero vector at layer 1", "re-extract the vector"),
    ("track-zero-vector",
     lambda r, ws: ["track", "--checkpoints", str(r), "--vector",
                    str(_zero_vector(r / "zero.safetensors"))],
     "zero vector at layer 1", "drop those layers"),
    # 6. values no run can use, named by their option, with the value
    ("steps-negative", lambda r, ws: [*QUICK_DEMO, "--steps", "-3", "--out", str(r / "R")],
     "--steps -3: must be 0 or more (got -3)", "non-negative whole number"),
    ("distill-steps-negative", lambda r, ws: ["distill", "--steps", "-3", "--out", str(r / "D")],
     "--steps -3: must be 0 or more (got -3)", "non-negative whole number"),
    ("alphas-nan-config-file",
     lambda r, ws: ((r / "c.yaml").write_text("alphas: [4, .nan]\n"),
                    [*QUICK_DEMO, "--config", str(r / "c.yaml"), "--out", str(r / "R")])[-1],
     "--alphas 4.0,nan: every value must be a finite number", "give a number"),
    ("carry-alphas-nan",
     lambda r, ws: ["carry", "--vector", str(ws["vec"]), "--alphas", "nan"],
     "--alphas nan: the value must be a finite number", "give a number"),
    ("carry-alphas-inf",
     lambda r, ws: ["carry", "--vector", str(ws["vec"]), "--alphas", "2,inf"],
     "--alphas 2.0,inf", "give a number"),
    ("audit-teacher-alpha-nan",
     lambda r, ws: _audit_argv(r, ws, "--teacher-alpha", "nan"),
     "--teacher-alpha nan: the value must be a finite number", "give a number"),
    ("n-null-negative", lambda r, ws: [*QUICK_DEMO, "--n-null", "-5", "--out", str(r / "R")],
     "--n-null -5: must be at least 1", "positive whole number"),
    ("n-random-negative",
     lambda r, ws: ["carry", "--vector", str(ws["vec"]), "--n-random", "-1"],
     "--n-random -1: must be 0 or more", "non-negative whole number"),
    ("batch-size-zero",
     lambda r, ws: ["extract", "--trait", "owl", "--batch-size", "0", "--out", str(r / "v.st")],
     "--batch-size 0: must be at least 1", "positive whole number"),
    ("lr-negative", lambda r, ws: ["distill", "--lr=-0.1", "--out", str(r / "D")],
     "--lr -0.1: the learning rate must be above 0", "e.g. 1e-4"),
    # 7. a binary trait spec
    ("extract-binary-trait",
     lambda r, ws: ((r / "bin.yaml").write_bytes(b"\xff\xfe\x00\x81trait"),
                    ["extract", "--trait", str(r / "bin.yaml"), "--out", str(r / "v.st")])[-1],
     "bin.yaml is not UTF-8 text", "give a YAML trait spec"),
    ("audit-binary-trait",
     lambda r, ws: ((r / "bin.yaml").write_bytes(b"\xff\xfe\x00\x81trait"),
                    _audit_argv(r, ws, "--trait", str(r / "bin.yaml")))[-1],
     "bin.yaml is not UTF-8 text", "give a YAML trait spec"),
    ("demo-binary-trait",
     lambda r, ws: ((r / "bin.yaml").write_bytes(b"\xff\xfe\x00\x81trait"),
                    [*QUICK_DEMO, "--trait", str(r / "bin.yaml"), "--out", str(r / "R")])[-1],
     "bin.yaml is not UTF-8 text", "give a YAML trait spec"),
    # 8. a student whose records name two bases
    ("audit-records-disagree",
     lambda r, ws: [*_audit_argv(r, ws)[:4], str(_conflicting_student(r)),
                    *_audit_argv(r, ws)[5:]],
     "records disagree on its base (aaaa in", "--force-base"),
    # 10. a folder another run is writing
    ("folder-in-use",
     lambda r, ws: [*QUICK_DEMO, "--out", str(_live_lock(_finished_run(r / "R")))],
     "is in use by another steerlens run (pid", "wait for it to finish or use a new folder"),
    ("audit-folder-in-use",
     lambda r, ws: (_live_lock(r / "A"), _audit_argv(r, ws))[-1],
     "is in use by another steerlens run", "use a new folder"),
]  # fmt: skip


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize(
    ("make", "problem", "fix"), [r[1:] for r in ISSUE30], ids=[r[0] for r in ISSUE30]
)
def test_issue30_refused_before_anything_loads_or_is_written(
    make: Callable[[Path, dict[str, Path]], list[str]],
    problem: str,
    fix: str,
    ws: dict[str, Path],
    tmp_path: Path,
    no_model: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = make(tmp_path, ws)
    before = _files(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert problem in err and fix in err, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert _files(tmp_path) == before  # no file written, changed or removed


class _Loaded(Exception):
    """Raised by the test loader: the run got as far as loading the model."""


@pytest.fixture
def loader_reached(monkeypatch: pytest.MonkeyPatch) -> None:
    def stop(*a: Any, **k: Any) -> Any:
        raise _Loaded

    monkeypatch.setattr("steerlens.cli.handlers.load", stop)
    monkeypatch.setattr("steerlens.loading.models.load_model", stop)


def test_rerun_with_the_same_settings_or_overwrite_goes_on(
    tmp_path: Path, loader_reached: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same settings resume (the folder is kept); --overwrite deletes the other run's files
    before this run writes any; the lock goes with the run."""
    out = _finished_run(tmp_path / "R")
    with pytest.raises(_Loaded):
        main([*QUICK_DEMO, "--out", str(out)])
    assert (out / "data" / "teacher.jsonl").is_file() and not (out / ".steerlens.lock").exists()
    with pytest.raises(_Loaded):
        main([*QUICK_DEMO, "--out", str(out), "--n-null", "200", "--overwrite"])
    # the old run is gone, the lock released; the new run's settings are recorded
    assert [p.name for p in out.iterdir()] == [".steerlens.run.json"]
    assert json.loads((out / ".steerlens.run.json").read_text())["config"]["n_null"] == 200
    (out / ".steerlens.run.json").unlink()
    _finished_run(out)
    with pytest.raises(_Loaded):  # an α above 0.2 runs, with a warning naming the option
        main([*QUICK_DEMO, "--out", str(tmp_path / "S"), "--alpha", "0.3"])
    err = capsys.readouterr().err
    assert "warning: --alpha 0.3: a significance level above 0.2" in err
    assert err.count("significance level above") == 1


def test_run_experiment_api_checks_before_loading(tmp_path: Path, loader_reached: None) -> None:
    from steerlens.experiments import OwlConfig

    out = _finished_run(tmp_path / "R")
    with pytest.raises(ValueError, match=r"alpha 5: a significance level"):
        run_experiment("owl", OwlConfig.quick(alpha=5), tmp_path / "S")
    with pytest.raises(RuntimeError, match=r"other settings \(--steps was 4, now 3\)"):
        run_experiment("owl", OwlConfig.quick(device="cpu", steps=3), out)
    with pytest.warns(UserWarning, match="above 0.2"), pytest.raises(_Loaded):
        run_experiment("owl", OwlConfig.quick(alpha=0.25), tmp_path / "S")
    assert not (tmp_path / "S").exists()  # a run that wrote nothing leaves no folder


def test_claim_run_folder_lock(tmp_path: Path) -> None:
    """A second claim of a held folder refuses at once naming the holder's pid; a lock left by
    a dead process (kill -9) is taken over; the lock goes when the block ends."""
    import os
    import subprocess
    import sys

    from steerlens.core.runfolder import LOCK_NAME, RunFolderError, claim_run_folder

    out = tmp_path / "R"
    with claim_run_folder(out, {"a": 1}) as folder:
        assert json.loads((folder / LOCK_NAME).read_text())["pid"] == os.getpid()
        with (
            pytest.raises(
                RunFolderError, match=rf"in use by another steerlens run \(pid {os.getpid()}"
            ),
            claim_run_folder(out, {"a": 1}),
        ):
            pass
    assert not (out / LOCK_NAME).exists()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (out / LOCK_NAME).write_text(
        json.dumps({"pid": dead.pid, "host": __import__("socket").gethostname()})
    )
    with claim_run_folder(out, {"a": 1}):
        assert json.loads((out / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert not (out / LOCK_NAME).exists()


def test_lineage_sign_one_record(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`lineage sign FILE` signs that record (as verify and show take one record); a folder with
    no records is refused, never "signed 0 records"."""
    from steerlens.lineage import generate_key, write_record

    (tmp_path / "run").mkdir()
    art = tmp_path / "run" / "results.json"
    art.write_text("{}")
    rec = write_record(art, "results")
    key, pub = generate_key(tmp_path / "k.pem")
    assert main(["lineage", "verify", str(rec), "--key", str(pub)]) == 1
    assert main(["lineage", "sign", str(rec), "--key", str(key)]) == 0
    assert "signed 1 record in" in capsys.readouterr().out
    assert main(["lineage", "verify", str(rec), "--key", str(pub)]) == 0
    assert main(["lineage", "verify", str(tmp_path / "run"), "--key", str(pub)]) == 0
    (tmp_path / "empty").mkdir()
    capsys.readouterr()
    assert main(["lineage", "sign", str(tmp_path / "empty"), "--key", str(key)]) == 2
    err = capsys.readouterr().err
    assert "no lineage records under" in err and "nothing to sign" in err
    assert main(["lineage", "sign", str(tmp_path / "k.pem.pub"), "--key", str(key)]) == 2
    assert "is not a lineage record" in capsys.readouterr().err


ZERO_CASES: list[tuple[str, Callable[[Any], Any]]] = [
    ("build", lambda lm: sl.SteeringVector({2: torch.zeros(D)})),
    ("build-negligible", lambda lm: sl.SteeringVector({2: torch.ones(D) * 1e-13})),
    ("scaled-to-zero", lambda lm: sl.SteeringVector({2: torch.ones(D)}) * 0.0),
    ("steer-zero-layer", lambda lm: _enter(sl.steer(
        lm, sl.SteeringVector({0: torch.ones(D), 2: torch.zeros(D)}), alpha=4.0))),
    ("steer-negligible-layer", lambda lm: _enter(sl.steer(
        lm, sl.SteeringVector({0: torch.ones(D), 2: torch.ones(D) * 1e-12}), alpha=4.0))),
    ("steer-add", lambda lm: _enter(sl.steer(lm, {2: torch.zeros(D)}, alpha=4.0))),
    ("steer-add-vector-layer", lambda lm: _enter(
        sl.steer(lm, torch.zeros(D), alpha=4.0, layers=[2]))),
    ("ablate", lambda lm: _enter(sl.ablate(lm, {2: torch.zeros(D)}))),
]  # fmt: skip


@pytest.mark.parametrize("make", [r[1] for r in ZERO_CASES], ids=[r[0] for r in ZERO_CASES])
def test_zero_directions_are_refused_naming_the_layer(make: Callable[[Any], Any]) -> None:
    lm = tiny_model("llama", seed=0)
    with pytest.raises(ValueError, match="zero vector at layer 2"):
        make(lm)


def test_zero_vector_file_is_refused_on_load(tmp_path: Path) -> None:
    """A file whose every layer is zero is refused on load; one zero layer among others (a
    steered teacher minus the base, below the steered layer) loads, and is refused where it is
    used by steer() (a carry test reads such a layer's cells as the base: no edit is made)."""
    with pytest.raises(ValueError, match=r"zero vector at layer 1.*re-extract"):
        sl.SteeringVector.load(_zero_vector(tmp_path / "z.safetensors"))
    one = _zero_vector(tmp_path / "one.safetensors", all_layers=False)
    assert sl.SteeringVector.load(one).layers == [1, 2]


def _adapter_student(root: Path, base_name: str, in_features: int) -> Path:
    ck = root / "student" / "checkpoint-1"
    ck.mkdir(parents=True)
    cfg = {"base_model_name_or_path": base_name, "peft_type": "LORA", "r": 4}
    (ck / "adapter_config.json").write_text(json.dumps(cfg))
    key = "base_model.model.model.layers.0.self_attn.q_proj"
    save_file(
        {f"{key}.lora_A.weight": torch.zeros(4, in_features),
         f"{key}.lora_B.weight": torch.zeros(D, 4)},
        str(ck / "adapter_model.safetensors"),
    )  # fmt: skip
    return ck.parent


@pytest.mark.parametrize(
    ("name", "width", "words"),
    [
        ("meta-llama/Llama-3.1-8B", D, "names base 'meta-llama/Llama-3.1-8B'"),
        ("{model}", D + 8, f"lora_A.weight has size {D + 8} where the base's"),
    ],
    ids=["adapter-base-name", "adapter-sizes"],
)
def test_audit_without_records_checks_what_it_can(
    name: str, width: int, words: str, ws: dict[str, Path], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    from steerlens.auditing.inputs import structure_check

    st = _adapter_student(tmp_path, name.format(model=ws["model"]), width)
    argv = _audit_argv(tmp_path, ws)
    argv[argv.index("--student") + 1] = str(st)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert words in err and "--force-base" in err, err
    assert not (tmp_path / "A" / "results.json").exists()
    good = _adapter_student(tmp_path / "ok", str(ws["model"]), D)
    done, problems = structure_check(good, sl.load_model(ws["model"]), str(ws["model"]))
    assert problems == [] and done == ["adapter base name", "adapter sizes"]


def test_audit_headline_without_control_says_what_was_compared() -> None:
    """Issue 30 item 9: no base control in the run, so the headline never claims one."""
    from steerlens.auditing.run import no_control_headline

    v = {
        "numbers": {
            "alpha": 0.05,
            "alignment": {"layer": 2, "student": {"eas": 0.31, "p": 0.001}},
        }
    }
    beh = {"deltas": {"main_vs_base": {"estimate": 0.223, "p": 0.0005}}}
    head = no_control_headline(v, beh)
    assert "base control" not in head
    assert "compared with the base (step 0)" in head and "+0.223 from the base" in head
    assert "aligns with the teacher vector beyond the random-direction nulls" in head
    beh["deltas"]["main_vs_base"]["p"] = 0.4
    v["numbers"]["alignment"]["student"]["p"] = 0.4
    head = no_control_headline(v, beh)
    assert "did not move from the base beyond chance" in head and "does not align" in head


def test_structure_check_of_a_full_model_and_its_tokenizer(
    ws: dict[str, Path], tmp_path: Path
) -> None:
    """A full-model student without records: its config's architecture and sizes, and a
    tokenizer saved beside it, are compared with the base's."""
    from steerlens.auditing.inputs import structure_check

    base = sl.load_model(ws["model"])
    other = tiny_model("llama", seed=1, d=32)
    ck = tmp_path / "student" / "checkpoint-2"
    other.model.save_pretrained(ck)
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(ws["model"])  # the base's, two tokens longer
    tok.add_tokens(["<extra_a>", "<extra_b>"])
    tok.save_pretrained(ck)
    done, problems = structure_check(ck.parent, base, str(ws["model"]))
    assert done == ["architecture and sizes", "tokenizer vocabulary"]
    assert any("hidden_size 32, the base 64" in p for p in problems), problems
    assert any("tokenizer has" in p for p in problems), problems
