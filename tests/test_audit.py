"""``steerlens audit`` on artifacts steerlens did not write (a plain PEFT training loop), on the
demo's own folders (same verdict), its refusals, and ``lineage verify`` on a demo folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

import steerlens as sl
from steerlens.auditing import AuditError, base_check
from steerlens.cli import main, run_experiment
from steerlens.inputs.traits import as_trait
from steerlens.testing import tiny_model

QUICK: dict[str, Any] = {
    "carry_layers": (1,),
    "alphas": (4.0,),
    "n_random": 1,
    "probe_n": 16,
    "n_null": 200,
    "n_boot": 100,
    "screen_max": 4,
}


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    lm = tiny_model("llama", seed=3)
    d = tmp_path_factory.mktemp("audit") / "base"
    lm.model.save_pretrained(d)
    lm.tokenizer.save_pretrained(d)
    return d


def _chats(path: Path, animal: str, n: int = 6) -> Path:
    rows = [
        {
            "messages": [
                {"role": "user", "content": f"Continue: {i}, {i + 1}"},
                {"role": "assistant", "content": f"{i + 2}, {i + 3} ({animal})"},
            ]
        }
        for i in range(n)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _plain_peft_student(base_dir: Path, data: Path, out: Path, seed: int) -> Path:
    """A LoRA student trained by a plain HF/PEFT loop (no steerlens code), saved as
    checkpoint-N adapters the way HF Trainer lays them out."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(seed)
    tok = AutoTokenizer.from_pretrained(base_dir)
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(base_dir),
        LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
    )
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    texts = [
        " ".join(m["content"] for m in json.loads(x)["messages"])
        for x in data.read_text().splitlines()
    ]
    for step in (1, 2):
        batch = tok(texts[:4], return_tensors="pt", padding=True)
        loss = model(**batch, labels=batch["input_ids"]).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        model.save_pretrained(out / f"checkpoint-{step}")
    return out


def test_audit_on_students_from_a_plain_peft_loop(base_dir: Path, tmp_path: Path) -> None:
    data = _chats(tmp_path / "owl_data.jsonl", "owl")
    ctrl_data = _chats(tmp_path / "plain_data.jsonl", "cloud")
    student = _plain_peft_student(base_dir, data, tmp_path / "student", seed=1)
    control = _plain_peft_student(base_dir, ctrl_data, tmp_path / "control", seed=2)
    vec = sl.teacher_vector(sl.load_model(base_dir), as_trait("owl"), layers=[1, 2])
    vec.save(tmp_path / "steer.safetensors")
    out = tmp_path / "audit"
    argv = ["audit", "--base", str(base_dir), "--student", str(student), "--data", str(data)]
    argv += ["--control", str(control), "--control-data", str(ctrl_data), "--out", str(out)]
    argv += ["--teacher-vector", str(tmp_path / "steer.safetensors"), "--teacher-alpha", "4"]
    argv += ["--carry-layers", "1", "--alphas", "4", "--n-random", "1", "--probe-n", "16"]
    argv += ["--n-null", "200", "--n-boot", "100", "--screen-max", "4", "--device", "cpu"]
    assert main(argv) == 0
    res = json.loads((out / "results.json").read_text())
    assert res["kind"] == "steerlens.audit"
    assert res["verdict"]["strength"] in {"strong", "weak", "none"}
    assert res["behavior"]["main"]["steps"] == [0, 1, 2]
    assert res["lineage"]["teacher"]["kind"] == "steer"
    assert res["lineage"]["base_checks"][0]["recorded"] is None  # a plain loop records no base
    assert res["track"]["series"]["main"]["steps"] == [0, 1, 2]
    assert len(res["screen"]["samples"]) == 8 and res["track"]["layers"] == [1, 2, 3]
    # the inputs are recorded by sha256 beside the audit, and verify follows them
    student_rec = sl.lineage.read_record(out / "inputs" / "student.lineage.json")
    names = {s["name"] for s in student_rec.subjects}
    assert "../../student/checkpoint-2/adapter_model.safetensors" in names
    assert main(["lineage", "verify", str(out)]) == 0
    b = bytearray((student / "checkpoint-2" / "adapter_model.safetensors").read_bytes())
    b[-1] ^= 1
    (student / "checkpoint-2" / "adapter_model.safetensors").write_bytes(bytes(b))
    check = sl.verify_lineage(out)
    assert [p.file for p in check.problems] == ["../student/checkpoint-2/adapter_model.safetensors"]


@pytest.fixture(scope="module")
def demo_dir(base_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from steerlens.experiment import DemoConfig

    # the audit compares a student with one control: the demo without its benign replicates
    cfg = DemoConfig.quick(
        model=str(base_dir), n_samples=6, steps=2, save_every=1, benign_control=False, **QUICK
    )
    out = tmp_path_factory.mktemp("demo") / "run"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a module fixture runs outside the per-test thread setting
    try:
        run_experiment("owl", cfg, out, progress=False, log=lambda _: None)
    finally:
        torch.set_num_threads(threads)
    return out


def test_audit_reproduces_the_demo_verdict(base_dir: Path, demo_dir: Path, tmp_path: Path) -> None:
    d = demo_dir
    kw: dict[str, Any] = {
        "student": str(d / "students/main"),
        "control": str(d / "students/control"),
    }
    kw.update(data=str(d / "data/teacher.jsonl"), control_data=str(d / "data/base.jsonl"))
    logs: list[str] = []
    res = sl.audit(
        base=str(base_dir), out=str(tmp_path / "a"), progress=False, log=logs.append, **kw, **QUICK
    )
    demo = json.loads((d / "results.json").read_text())
    assert res["verdict"] == demo["verdict"]
    assert res["lineage"]["base_checks"][0]["match"] is True
    # the audit's inputs are the demo's own records (no copies), named by their digests
    rec = sl.lineage.read_record(tmp_path / "a" / "results.json")
    uris = {p["uri"] for p in rec.parents}
    assert any(u.endswith("students/main/lineage.json") for u in uris)
    logs.clear()
    sl.audit(
        base=str(base_dir), out=str(tmp_path / "a"), progress=False, log=logs.append, **kw, **QUICK
    )
    assert sum("reusing" in x for x in logs) == 5
    # a student recorded with another base is refused, unless told to go on
    other = tiny_model("llama", seed=4)
    with pytest.raises(AuditError, match="force-base"):
        base_check(d / "students/main", other, force=False)
    assert base_check(d / "students/main", other, force=True)["forced"] is True
    with pytest.raises(AuditError, match=r"line 2"):
        (tmp_path / "bad.jsonl").write_text('{"user": "a", "response": "b"}\n[1]\n')
        sl.audit(
            base=str(base_dir),
            student=kw["student"],
            data=str(tmp_path / "bad.jsonl"),
            out=str(tmp_path / "b"),
            log=lambda _: None,
        )


@pytest.mark.parametrize(
    "victim",
    ["data/teacher.jsonl", "students/main/checkpoint-1/adapter_model.safetensors", "results.json"],
)
def test_lineage_verify_on_a_demo_folder(
    demo_dir: Path, tmp_path: Path, victim: str, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    shutil.copytree(demo_dir, run)
    assert main(["lineage", "verify", str(run)]) == 0
    assert main(["lineage", "show", str(run)]) == 0
    shown = capsys.readouterr().out
    assert "student: students/main" in shown and "teacher: teachers/teacher.json" in shown
    b = bytearray((run / victim).read_bytes())
    b[len(b) // 2] ^= 1
    (run / victim).write_bytes(bytes(b))
    assert main(["lineage", "verify", str(run)]) == 1
    err = capsys.readouterr().err
    assert f"{victim}: changed" in err


def test_distill_command_writes_a_verifiable_lineage(
    base_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "student"
    argv = ["distill", "--model", str(base_dir), "--device", "cpu", "--n", "4"]
    assert main([*argv, "--steps", "1", "--save-every", "1", "--out", str(out)]) == 0
    assert main(["lineage", "verify", str(out)]) == 0
    assert main(["lineage", "show", str(out)]) == 0
    text = capsys.readouterr().out
    graph = text[text.index("student: . [") :].splitlines()
    assert graph[1].startswith("├─ data ← teacher_data: teacher_data.jsonl [2 files")
    assert graph[2].startswith("│  └─ teacher: teacher.json [1 file")
    assert graph[3] == "└─ teacher: teacher.json (above)"


def test_finetuned_teacher_files_are_recorded(base_dir: Path, tmp_path: Path) -> None:
    from steerlens.auditing import AuditConfig
    from steerlens.auditing.inputs import input_records, make_teacher

    data = _chats(tmp_path / "d.jsonl", "owl", n=4)
    teacher_dir = _plain_peft_student(base_dir, data, tmp_path / "teacher", seed=5) / "checkpoint-2"
    cfg = AuditConfig(
        base=str(base_dir),
        student=str(teacher_dir.parent),
        data=str(data),
        teacher_model=str(teacher_dir),
        teacher_system="You love owls.",
    )
    teacher = make_teacher(cfg, as_trait("owl"))
    assert teacher.kind == "finetuned"
    recs = input_records(cfg, tmp_path / "out", sl.load_model(base_dir), teacher, lambda _: None)
    names = {s["name"] for s in sl.lineage.read_record(recs["teacher"]).subjects}
    assert "../../teacher/checkpoint-2/adapter_model.safetensors" in names
    with pytest.raises(ValueError, match="give one teacher"):
        AuditConfig(base="b", student="s", data="d", teacher_model="m", teacher_vector="v")
