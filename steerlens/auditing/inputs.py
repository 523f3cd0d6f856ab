"""The audit's inputs: the teacher built from the options, the training data read and checked,
the student's recorded base compared with the given one, and lineage records for artifacts
that steerlens did not write (a record beside the audit, naming the user's files by sha256)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from steerlens.auditing.config import AuditConfig, AuditError
from steerlens.common import read_json, sha256_file
from steerlens.lineage import has_record, read_record, record_path, write_record

__all__ = ["base_check", "input_records", "make_teacher", "read_data", "recorded_base"]


def make_teacher(cfg: AuditConfig, trait: Any) -> Any:
    """The teacher the options name: a fine-tune, a steered base, or the base with a system
    prompt (default: the trait's)."""
    from steerlens.teachers import Teacher
    from steerlens.vectors import SteeringVector

    if cfg.teacher_model is not None:
        return Teacher.finetuned(cfg.teacher_model, system=cfg.teacher_system)
    if cfg.teacher_vector is not None:
        vec = SteeringVector.load(cfg.teacher_vector)
        return Teacher.steered(
            vec, cfg.teacher_alpha, cfg.teacher_layers, system=cfg.teacher_system
        )
    return Teacher.prompted(cfg.teacher_system or trait.system_prompt)


def read_data(path: str | Path, what: str = "training data") -> list[dict[str, Any]]:
    """The samples of a JSONL file of chats or prompt/response pairs, or of a Hugging Face
    ``datasets`` folder or parquet file of such rows, each checked (a clear error naming the
    line or row that is neither)."""
    from steerlens.screen.core import parse_sample

    p = Path(path).expanduser()
    rows: list[dict[str, Any]] = []
    lines: list[Any]
    if p.is_dir() or p.suffix == ".parquet":  # a datasets folder or parquet of chats
        from steerlens.integrations.hf_datasets import load_rows

        lines = load_rows(p)[0]
    else:
        lines = p.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines, 1):
        if isinstance(line, str) and not line.strip():
            continue
        try:
            row = json.loads(line) if isinstance(line, str) else line
            if not isinstance(row, dict):
                raise TypeError(f"a JSON {type(row).__name__}, not an object")
            parse_sample(row, i)
        except (ValueError, TypeError, KeyError) as exc:
            raise AuditError(
                f"{what} {p} line {i} is not a chat {{messages: [...]}} or a {{prompt|user, "
                f"response|completion}} pair ({exc}): fix or drop that line"
            ) from None
        rows.append(row)
    if not rows:
        raise AuditError(f"{what} {p} holds no samples")
    return rows


def recorded_base(student: Path) -> tuple[str | None, str]:
    """(the base fingerprint the student's own records give, where it was read). Looks at a
    steerlens lineage record and ``distill.json`` of the folder or of its series folder."""
    for folder in (student, student.parent):
        rp = record_path(folder) if folder.is_dir() else None
        if rp is not None and rp.is_file():
            for m in read_record(rp).models:
                fp = m.get("digest", {}).get("steerlensFingerprint")
                if m.get("name") == "base" and fp:
                    return str(fp), str(rp)
        meta = folder / "distill.json"
        if meta.is_file():
            fp = (read_json(meta).get("lineage") or {}).get("base_fingerprint")
            if fp:
                return str(fp), str(meta)
    return None, "none (the student folder records no base fingerprint)"


def base_check(student: Path, model: Any, force: bool, role: str = "student") -> dict[str, Any]:
    """Compare the student's recorded base with ``model``: an :class:`AuditError` on a mismatch
    unless ``force``; the outcome as JSON values for the results."""
    fp, where = recorded_base(student)
    match = None if fp is None else fp == model.fingerprint
    if match is False and not force:
        raise AuditError(
            f"the {role} {student} was trained from base {fp} ({where}), but the given base "
            f"{model.name} has fingerprint {model.fingerprint}: pass the base it was trained "
            "from, or --force-base (force_base=True) to audit it against this base anyway"
        )
    return {
        "role": role,
        "recorded": fp,
        "where": where,
        "given": model.fingerprint,
        "match": match,
        "forced": bool(force and match is False),
    }


def _write_input(
    out: Path, role: str, artifact: Path, kind: str, parents: dict[str, Path], model: Any
) -> Path:
    """The record of a user's artifact: its own (steerlens wrote it) or one beside the audit."""
    from steerlens.models import describe

    if has_record(artifact):
        return record_path(artifact)
    return write_record(
        artifact,
        kind,
        parents=parents,
        models={"base": describe(model)},
        config={"path": str(artifact.resolve()), "role": role},
        at=out / "inputs" / f"{role}.lineage.json",
    )


def input_records(
    cfg: AuditConfig, out: Path, model: Any, teacher: Any, log: Callable[[str], None]
) -> dict[str, Path]:
    """Record files of every input (role → record): the teacher (``teachers/teacher.json``),
    the data, the student, and the control's when given."""
    from steerlens.experiments.records import teacher_record

    desc = teacher.describe()
    files = [Path(cfg.teacher_vector)] if cfg.teacher_vector else []
    if teacher.model_path is not None:
        files += [teacher.model_path / n for n in sorted(desc.get("model_files") or {})]
    recs = {"teacher": teacher_record(out / "teachers" / "teacher.json", desc, model, files)}
    recs["teacher"] = record_path(recs["teacher"])
    recs["data"] = _write_input(
        out, "data", Path(cfg.data), "teacher_data", {"teacher": recs["teacher"]}, model
    )
    recs["student"] = _write_input(
        out, "student", Path(cfg.student), "student", {"data": recs["data"]}, model
    )
    if cfg.control is not None:
        ctrl_parents: dict[str, Path] = {}
        if cfg.control_data is not None:
            recs["control_data"] = _write_input(
                out, "control_data", Path(cfg.control_data), "teacher_data", {}, model
            )
            ctrl_parents["data"] = recs["control_data"]
        recs["control"] = _write_input(
            out, "control", Path(cfg.control), "student", ctrl_parents, model
        )
    log(f"inputs recorded: {', '.join(f'{k} {sha256_file(v)[:8]}' for k, v in recs.items())}")
    return recs
