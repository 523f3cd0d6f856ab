"""The audit's inputs: the teacher built from the options, the training data read and checked,
the student's recorded base compared with the given one, and lineage records for artifacts
that steerlens did not write (a record beside the audit, naming the user's files by sha256)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from steerlens.auditing.config import AuditConfig, AuditError
from steerlens.core.common import read_json, sha256_file
from steerlens.lineage import has_record, read_record, record_path, write_record

__all__ = [
    "base_check",
    "input_records",
    "make_teacher",
    "read_data",
    "recorded_base",
    "recorded_bases",
    "structure_check",
]


def make_teacher(cfg: AuditConfig, trait: Any) -> Any:
    """The teacher the options name: a fine-tune, a steered base, or the base with a system
    prompt (default: the trait's)."""
    from steerlens.core.vectors import SteeringVector
    from steerlens.teachers import Teacher

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


def recorded_bases(student: Path) -> list[tuple[str, str]]:
    """Every (base fingerprint, where it was read) the student's own records give: the
    steerlens lineage record and ``distill.json`` of the folder and of its series folder."""
    found: list[tuple[str, str]] = []
    for folder in (student, student.parent):
        rp = record_path(folder) if folder.is_dir() else None
        if rp is not None and rp.is_file():
            for m in read_record(rp).models:
                fp = m.get("digest", {}).get("steerlensFingerprint")
                if m.get("name") == "base" and fp:
                    found.append((str(fp), str(rp)))
        meta = folder / "distill.json"
        if meta.is_file():
            d = read_json(meta)
            fp = ((d.get("lineage") or {}) if isinstance(d, dict) else {}).get("base_fingerprint")
            if fp:
                found.append((str(fp), str(meta)))
    return found


def recorded_base(
    student: Path, force: bool = False, role: str = "student"
) -> tuple[str | None, str]:
    """(the base fingerprint the student's own records give, where it was read). Every record
    is read (:func:`recorded_bases`): records that name different bases are refused
    (:class:`AuditError`) unless ``force``. Needs no model, so it runs before one loads."""
    found = recorded_bases(student)
    fps = list(dict.fromkeys(fp for fp, _ in found))
    if len(fps) > 1 and not force:
        named = "; ".join(f"{fp} in {where}" for fp, where in found)
        raise AuditError(
            f"the {role} {student}'s records disagree on its base ({named}): one of them "
            "belongs to another run; re-run the distillation into a clean folder, or pass "
            "--force-base (force_base=True) to audit it against --base anyway"
        )
    if found:
        return found[0]
    return None, "none (the student folder records no base fingerprint)"


def _probe_folder(student: Path) -> Path | None:
    """The folder whose files say what the student is: itself, else its first checkpoint."""
    if (student / "adapter_config.json").is_file() or (student / "config.json").is_file():
        return student
    subs = sorted(
        (int(p.name.split("-")[1]), p)
        for p in student.glob("checkpoint-*")
        if p.is_dir() and p.name.split("-")[1].isdigit()
    )
    return subs[0][1] if subs else None


def _same_name(a: str, b: str) -> bool:
    """Two model names that may be one model: equal, or the same last path part (a hub id and a
    local copy, ``HuggingFaceTB/SmolLM2-135M-Instruct`` and ``smollm2-135m-instruct``)."""
    last = [str(x).rstrip("/").replace("\\", "/").rsplit("/", 1)[-1].lower() for x in (a, b)]
    return a == b or last[0] == last[1]


def _adapter_problems(folder: Path, model: Any, given: str) -> tuple[list[str], list[str]]:
    """(checks done, problems) of a PEFT adapter against the base: its recorded base name and
    the LoRA weights' sizes against the base's modules."""
    done, problems = [], []
    cfg = read_json(folder / "adapter_config.json")
    name = cfg.get("base_model_name_or_path") if isinstance(cfg, dict) else None
    names = {given, model.name, str(getattr(model.model.config, "_name_or_path", "") or "")}
    names.discard("")
    if name:
        done.append("adapter base name")
        if not any(_same_name(str(name), n) for n in names):
            problems.append(f"its adapter_config.json names base {name!r}, not {given!r}")
    weights = folder / "adapter_model.safetensors"
    if weights.is_file():
        from safetensors import safe_open

        modules = dict(model.model.named_modules())
        with safe_open(str(weights), framework="pt") as f:
            for key in f.keys():  # noqa: SIM118 - safe_open is not iterable
                if ".lora_A." not in key and ".lora_B." not in key:
                    continue
                path = key.split(".lora_")[0].removeprefix("base_model.model.")
                mod = modules.get(path)
                shape = f.get_slice(key).get_shape()
                if mod is None:
                    problems.append(f"its adapter edits {path}, a module the base does not have")
                    break
                want = (
                    getattr(mod, "in_features", None)
                    if ".lora_A." in key
                    else getattr(mod, "out_features", None)
                )
                got = shape[1] if ".lora_A." in key else shape[0]
                if want is not None and got != want:
                    problems.append(
                        f"its adapter's {key} has size {got} where the base's {path} has {want}"
                    )
                    break
        done.append("adapter sizes")
    return done, problems


def _config_problems(folder: Path, model: Any) -> tuple[list[str], list[str]]:
    """(checks done, problems) of a full model folder's config against the base's."""
    cfg = read_json(folder / "config.json")
    base = model.model.config
    problems = []
    for key in ("model_type", "hidden_size", "num_hidden_layers", "vocab_size"):
        want = getattr(base, key, None)
        if isinstance(cfg, dict) and key in cfg and want is not None and cfg[key] != want:
            problems.append(f"its config.json has {key} {cfg[key]}, the base {getattr(base, key)}")
    return ["architecture and sizes"], problems


def _tokenizer_problems(folder: Path, model: Any) -> tuple[list[str], list[str]]:
    """(checks done, problems): the vocabulary of a tokenizer saved with the student."""
    if not any((folder / n).is_file() for n in ("tokenizer.json", "tokenizer_config.json")):
        return [], []
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    mine, base = len(tok), len(model.tokenizer)
    if mine != base:
        return ["tokenizer vocabulary"], [f"its tokenizer has {mine} tokens, the base's {base}"]
    return ["tokenizer vocabulary"], []


def structure_check(student: Path, model: Any, given: str) -> tuple[list[str], list[str]]:
    """What can be checked of a student without records: a PEFT adapter's base name and
    sizes, a full model's architecture and sizes, a saved tokenizer's vocabulary. Returns
    (checks done, problems)."""
    folder = _probe_folder(student)
    if folder is None:
        return [], []
    parts = []
    if (folder / "adapter_config.json").is_file():
        parts.append(_adapter_problems(folder, model, given))
    elif (folder / "config.json").is_file():
        parts.append(_config_problems(folder, model))
    parts += [_tokenizer_problems(where, model) for where in dict.fromkeys((folder, student))]
    done = dict.fromkeys(d for ds, _ in parts for d in ds)
    return list(done), [p for _, ps in parts for p in ps]


def base_check(
    student: Path, model: Any, force: bool, role: str = "student", given: str | None = None
) -> dict[str, Any]:
    """Compare the student's recorded base with ``model``: an :class:`AuditError` on a mismatch
    (or on records that disagree) unless ``force``; without any record, what can be checked
    (:func:`structure_check`). The outcome as JSON values for the results."""
    fp, where = recorded_base(student, force, role)
    match = None if fp is None else fp == model.fingerprint
    if match is False and not force:
        raise AuditError(
            f"the {role} {student} was trained from base {fp} ({where}), but the given base "
            f"{model.name} has fingerprint {model.fingerprint}: pass the base it was trained "
            "from, or --force-base (force_base=True) to audit it against this base anyway"
        )
    done: list[str] = []
    if fp is None:
        done, problems = structure_check(student, model, given or model.name)
        if problems and not force:
            raise AuditError(
                f"the {role} {student} does not fit the given base {given or model.name}: "
                f"{'; '.join(problems)}; pass the base it was trained from, or --force-base "
                "(force_base=True) to audit it against this base anyway"
            )
        match = False if problems else None
    return {
        "role": role,
        "recorded": fp,
        "where": where,
        "given": model.fingerprint,
        "match": match,
        "forced": bool(force and match is False),
        "checked": done,
    }


def _write_input(
    out: Path, role: str, artifact: Path, kind: str, parents: dict[str, Path], model: Any
) -> Path:
    """The record of a user's artifact: its own (steerlens wrote it) or one beside the audit."""
    from steerlens.loading.models import describe

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
    from steerlens.pipeline.records import teacher_record

    desc = teacher.describe()
    files = [Path(cfg.teacher_vector)] if cfg.teacher_vector else []
    if teacher.model_path is not None:
        files += [teacher.model_path / n for n in sorted(desc.get("model_files") or {})]
    t = record_path(teacher_record(out / "teachers" / "teacher.json", desc, model, files))
    data = _write_input(out, "data", Path(cfg.data), "teacher_data", {"teacher": t}, model)
    student = _write_input(out, "student", Path(cfg.student), "student", {"data": data}, model)
    recs = {"teacher": t, "data": data, "student": student}
    if cfg.control is not None:
        parents: dict[str, Path] = {}
        if cfg.control_data is not None:
            cd = _write_input(
                out, "control_data", Path(cfg.control_data), "teacher_data", {}, model
            )
            parents, recs = {"data": cd}, recs | {"control_data": cd}
        ctrl = _write_input(out, "control", Path(cfg.control), "student", parents, model)
        recs |= {"control": ctrl}
    log(f"inputs recorded: {', '.join(f'{k} {sha256_file(v)[:8]}' for k, v in recs.items())}")
    return recs
