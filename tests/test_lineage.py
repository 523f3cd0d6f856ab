"""Lineage records: in-toto statements, DSSE signatures, verify naming the changed file."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from steerlens.lineage import (
    generate_key,
    lineage_graph,
    read_record,
    sign_lineage,
    verify_lineage,
    write_record,
)
from steerlens.lineage.dsse import pae


def _tree(d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "teachers").mkdir()
    (d / "teachers" / "teacher.json").write_text('{"system": "You love owls."}')
    write_record(
        d / "teachers" / "teacher.json",
        "teacher",
        config={"system": "You love owls."},
        models={"base": {"name": "tiny", "fingerprint": "f00d"}},
    )
    (d / "data").mkdir()
    (d / "data" / "teacher.jsonl").write_text('{"user": "1 2", "response": "3 4"}\n')
    write_record(
        d / "data" / "teacher.jsonl", "teacher_data", parents=[d / "teachers/teacher.json"]
    )
    ck = d / "students" / "main" / "checkpoint-2"
    ck.mkdir(parents=True)
    (ck / "adapter_model.safetensors").write_bytes(bytes(range(64)))
    write_record(d / "students" / "main", "student", parents={"data": d / "data/teacher.jsonl"})
    (d / "results.json").write_text('{"verdict": {}}')
    write_record(d / "results.json", "results", parents=[d / "students/main"])
    return d


def _flip(p: Path) -> None:
    b = bytearray(p.read_bytes())
    b[0] ^= 1
    p.write_bytes(bytes(b))


def test_record_is_an_in_toto_statement(tmp_path: Path) -> None:
    d = _tree(tmp_path)
    env = json.loads((d / "students/main/lineage.json").read_text())
    assert env["payloadType"] == "application/vnd.in-toto+json"
    st = json.loads(base64.b64decode(env["payload"]))
    assert st["_type"] == "https://in-toto.io/Statement/v1"
    assert st["predicateType"] == "https://slsa.dev/provenance/v1"
    assert [s["name"] for s in st["subject"]] == ["checkpoint-2/adapter_model.safetensors"]
    dep = st["predicate"]["buildDefinition"]["resolvedDependencies"][0]
    assert dep["uri"] == "../../data/teacher.jsonl.lineage.json"
    assert dep["digest"]["sha256"] == read_record(d / "data/teacher.jsonl").digest
    assert set(st["predicate"]["runDetails"]["builder"]["version"]) >= {"steerlens", "torch"}
    # deterministic: rewriting an unchanged artifact gives the same bytes
    before = (d / "results.json.lineage.json").read_bytes()
    write_record(d / "results.json", "results", parents=[d / "students/main"])
    assert (d / "results.json.lineage.json").read_bytes() == before


def test_show_graph(tmp_path: Path) -> None:
    text = lineage_graph(_tree(tmp_path))
    lines = text.splitlines()
    assert lines[0].startswith("results: results.json")
    assert "student: students/main" in lines[1]
    assert "teacher_data: data/teacher.jsonl" in lines[2]
    assert "teacher: teachers/teacher.json" in lines[3] and "base=tiny@f00d" in lines[3]


@pytest.mark.parametrize(
    "victim",
    ["data/teacher.jsonl", "students/main/checkpoint-2/adapter_model.safetensors", "results.json"],
)
def test_verify_names_changed_file(tmp_path: Path, victim: str) -> None:
    d = _tree(tmp_path)
    assert verify_lineage(d).ok
    _flip(d / victim)
    check = verify_lineage(d)
    assert not check.ok
    assert [p.file for p in check.problems] == [victim]
    assert "changed" in check.problems[0].what


def test_verify_removed_added_and_parent_rewritten(tmp_path: Path) -> None:
    d = _tree(tmp_path)
    (d / "students/main/checkpoint-2/adapter_model.safetensors").unlink()
    (d / "students/main/extra.bin").write_bytes(b"x")
    probs = {p.file: p.what for p in verify_lineage(d).problems}
    assert probs["students/main/checkpoint-2/adapter_model.safetensors"].startswith("removed")
    assert probs["students/main/extra.bin"].startswith("added")
    d2 = _tree(tmp_path / "b")
    write_record(d2 / "data/teacher.jsonl", "teacher_data", config={"other": 1})
    probs = {p.file: p.what for p in verify_lineage(d2).problems}
    assert list(probs) == ["data/teacher.jsonl.lineage.json"]
    (d2 / "results.json.lineage.json").unlink()
    (d2 / "data/teacher.jsonl.lineage.json").unlink()
    assert [p.file for p in verify_lineage(d2).problems] == ["data/teacher.jsonl.lineage.json"]


def test_signatures(tmp_path: Path) -> None:
    d = _tree(tmp_path / "run")
    key, pub = generate_key(tmp_path / "me.pem")
    other, other_pub = generate_key(tmp_path / "them.pem")
    assert len(sign_lineage(d, key)) == 4
    assert verify_lineage(d, key=pub).ok
    assert verify_lineage(d).ok
    assert not verify_lineage(d, key=other_pub).ok
    # one record re-signed by another key: named, with or without a pinned key
    rec = d / "data/teacher.jsonl.lineage.json"
    env = json.loads(rec.read_text())
    env["signatures"] = []
    rec.write_text(json.dumps(env))
    write_record(
        d / "data/teacher.jsonl", "teacher_data", parents=[d / "teachers/teacher.json"], key=other
    )
    for check in (verify_lineage(d, key=pub), verify_lineage(d)):
        assert [p.file for p in check.problems] == ["data/teacher.jsonl.lineage.json"]
        assert "signed by another key" in check.problems[0].what
    # a forged payload under a valid-looking signature
    env = json.loads(rec.read_text())
    st = json.loads(base64.b64decode(env["payload"]))
    st["subject"][0]["digest"]["sha256"] = "0" * 64
    env["payload"] = base64.b64encode(json.dumps(st).encode()).decode()
    rec.write_text(json.dumps(env))
    probs = [str(p) for p in verify_lineage(d).problems]
    assert any("bad signature" in p for p in probs)
    assert pae("t", b"ab") == b"DSSEv1 1 t 2 ab"


def test_sign_refuses_changed_tree(tmp_path: Path) -> None:
    d = _tree(tmp_path / "run")
    key, _ = generate_key(tmp_path / "k.pem")
    _flip(d / "results.json")
    with pytest.raises(ValueError, match=r"results\.json"):
        sign_lineage(d, key)
    with pytest.raises(ValueError, match="already exists"):
        generate_key(tmp_path / "k.pem")


def test_signing_key_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key, pub = generate_key(tmp_path / "k.pem")
    monkeypatch.setenv("STEERLENS_SIGNING_KEY", str(key))
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "a.json").write_text("{}")
    write_record(tmp_path / "run" / "a.json", "results")
    assert verify_lineage(tmp_path / "run", key=pub).ok
    monkeypatch.setenv("STEERLENS_SIGNING_KEY", str(tmp_path / "missing.pem"))
    with pytest.raises(ValueError, match=r"missing\.pem does not exist"):
        write_record(tmp_path / "run" / "a.json", "results")
