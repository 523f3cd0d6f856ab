"""Train the student and save the checkpoint series: :func:`distill`, :func:`distill_pair`,
:func:`training_loss`; checkpoint save and resume."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn
from tqdm.auto import tqdm

from steerlens.core.common import atomic_write_text, read_json, sha256_file, tqdm_disable
from steerlens.distill.config import (
    OPTIMIZER_NAME,
    RECORD_FORMAT,
    RECORD_NAME,
    STATE_NAME,
    DistillConfig,
    DistillError,
    DistillResult,
    default_layers,
    json_sha256,
)
from steerlens.distill.data import TeacherData
from steerlens.distill.mitigations import Mitigation
from steerlens.distill.resume import ckpt_dirs, intact_steps, same_run
from steerlens.distill.student import inner_hf, make_student
from steerlens.distill.targets import removed_mass
from steerlens.distill.teacher import data_teacher
from steerlens.distill.trainer import Trainer
from steerlens.distill.trl_engine import distill_trl
from steerlens.lineage import artifact_files, ensure_record, has_record, write_record
from steerlens.loading.models import LoadedModel, as_model, describe
from steerlens.teachers import Teacher
from steerlens.version import __version__

__all__ = ["check_out_dir", "distill", "distill_pair", "training_loss"]


def _resolve_layers(lm: LoadedModel, cfg: DistillConfig) -> list[int]:
    n = lm.n_layers
    layers = list(cfg.layers) if cfg.layers is not None else default_layers(n)
    bad = [x for x in layers if not 0 <= x < n]
    if bad or not layers:
        raise ValueError(
            f"LoRA layers {bad or layers} are out of range: this model has blocks 0..{n - 1}"
        )
    return sorted(set(layers))


def _as_data(data: TeacherData | str | Path) -> TeacherData:
    d = data if isinstance(data, TeacherData) else TeacherData.load(data)
    if not d.samples:
        raise ValueError("the teacher data has no kept samples: generate more or relax the filter")
    return d


def _base_spec(lm: LoadedModel) -> str:
    return lm.name if lm.source.startswith(("pypi:", "hf:")) or not lm.source else lm.source


def _versions() -> dict[str, str]:
    import peft
    import transformers

    return {
        "steerlens": __version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
    }


def _result_from_record(
    out: Path, record: dict[str, Any], steps: int, resumed: int
) -> DistillResult:
    ck = {s: p for s, p in ckpt_dirs(out).items() if s <= steps}
    return DistillResult(
        out, list(ck), list(ck.values()), list(record["losses"][:steps]), record, resumed
    )


def _lineage(
    lm: LoadedModel,
    cfg: DistillConfig,
    d: TeacherData,
    teacher: Teacher | None,
    layers: list[int],
    mitigation: Mitigation | None = None,
) -> dict[str, Any]:
    """What fixes the weights of each step (its hash decides whether a run may resume). A
    prompted teacher is its system prompt (as before teachers had kinds); any other kind adds
    its :meth:`~steerlens.teachers.Teacher.lineage`."""
    kl = cfg.loss == "kl" and teacher is not None
    out = {
        "base_fingerprint": lm.fingerprint,
        "teacher_system": teacher.system if kl and teacher is not None else None,
        "data_sha256": d.sha256,
        "config": cfg.lineage(),
        "layers": layers,
    }
    prec = lm.compute_precision.name
    if prec != "float32":  # float32 runs keep the lineage (and resume) they had before
        out["precision"] = prec
    if kl and teacher is not None and teacher.kind not in ("prompt",):
        out["teacher"] = teacher.lineage()
    if mitigation is not None:
        out["mitigation"] = mitigation.lineage()
    return out


def _resume_point(
    out: Path, lineage: dict[str, Any], lineage_hash: str, cfg: DistillConfig, overwrite: bool
) -> tuple[int, list[float], DistillResult | None]:
    """Where training starts in ``out``: (step, losses so far, the finished result if the run
    there is already complete). Only checkpoints that pass :func:`~steerlens.distill.resume.adapter_intact` count: a removed or
    broken one is recomputed from the last intact one before it. A different run there is an
    error unless ``overwrite``, which deletes its checkpoints and record."""
    old = same_run(out, lineage, lineage_hash, overwrite)
    if old is None:
        for p in ckpt_dirs(out).values():
            shutil.rmtree(p)
        (out / RECORD_NAME).unlink(missing_ok=True)
        return 0, [], None
    done = intact_steps(out, old, cfg.steps)
    last = done[-1] if done else 0
    losses = list(old.get("losses", []))
    if last and len(losses) < last:
        state = out / f"checkpoint-{last}" / STATE_NAME
        losses = list(read_json(state).get("losses", [])) if state.is_file() else []
    if not last or len(losses) < last:
        return 0, [], None
    if last == cfg.steps:
        return cfg.steps, [], _result_from_record(out, dict(old, losses=losses), cfg.steps, last)
    return last, losses[:last], None


def check_out_dir(
    base_model: Any,
    data: TeacherData | str | Path,
    out_dir: str | Path,
    *,
    teacher: Teacher | str | None = None,
    teacher_system: str | None = None,
    config: DistillConfig | None = None,
    overwrite: bool = False,
) -> None:
    """Raise :class:`DistillError` if :func:`distill` with these arguments would refuse
    ``out_dir`` (it holds a different run and ``overwrite`` is False); writes nothing."""
    lm = as_model(base_model)
    cfg = config or DistillConfig()
    d = _as_data(data)
    t = data_teacher(d, teacher, teacher_system, cfg.loss)
    lineage = _lineage(lm, cfg, d, t, _resolve_layers(lm, cfg))
    same_run(Path(out_dir).expanduser(), lineage, json_sha256(lineage)[:16], overwrite)


def _new_record(
    lm: LoadedModel,
    cfg: DistillConfig,
    d: TeacherData,
    lineage: dict[str, Any],
    teacher: Teacher | None,
    trainer: Trainer,
    t_prep: float,
    start: int,
    losses: list[float],
) -> dict[str, Any]:
    """The ``distill.json`` record before training (steps, losses and checkpoints follow)."""
    return {
        "format": RECORD_FORMAT,
        "lineage_hash": json_sha256(lineage)[:16],
        "lineage": lineage,
        "base": describe(lm),
        "base_spec": _base_spec(lm),
        "teacher_system": None if teacher is None else teacher.system,
        "teacher": None if teacher is None else teacher.describe(),
        "student_system": cfg.student_system,
        "data": d.meta(),
        "config": asdict(cfg),
        "layers": lineage["layers"],
        "seed": cfg.seed,
        "versions": _versions(),
        "fast_path": trainer.use_fast,
        "kl_targets": None
        if trainer.kl_kind is None
        else {"kind": trainer.kl_kind, "removed_mass": removed_mass(trainer.targets or [])},
        "precision": {**lm.compute_precision.to_dict(), "student_autocast": trainer.autocast},
        "n_examples": len(trainer.exs),
        "n_response_tokens": sum(e.n_pred for e in trainer.exs),
        "prep_seconds": round(t_prep, 2),
        "steps_done": start,
        "losses": losses,
        "checkpoints": [],
    }


def _train_steps(
    trainer: Trainer,
    student: Any,
    opt: torch.optim.Optimizer,
    record: dict[str, Any],
    out: Path,
    lm: LoadedModel,
    cfg: DistillConfig,
    start: int,
    progress: bool | None,
) -> None:
    """Steps ``start+1..cfg.steps``: Adam updates, a checkpoint (and the record) every
    ``save_every`` steps and at the last."""
    hf = inner_hf(student)
    params = [p for p in student.parameters() if p.requires_grad]
    losses: list[float] = record["losses"]
    rec_path = out / RECORD_NAME
    t_train = time.perf_counter()
    bar = tqdm(range(start + 1, cfg.steps + 1), desc="distill", disable=tqdm_disable(progress))
    for step in bar:
        loss = trainer.loss(hf, trainer.batch(step))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.max_grad_norm is not None:
            nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        opt.step()
        losses.append(float(loss.detach()))
        bar.set_postfix(loss=f"{losses[-1]:.4f}")
        if step % cfg.save_every == 0 or step == cfg.steps:
            _save_checkpoint(student, opt, out / f"checkpoint-{step}", lm, step, losses)
            record["steps_done"] = step
            record["train_seconds"] = round(time.perf_counter() - t_train, 2)
            record["checkpoints"] = _checkpoint_entries(out, record, step, losses)
            _write_record(rec_path, record)
    if cfg.steps == 0 or start == cfg.steps:
        _write_record(rec_path, record)


def _checkpoint_entries(
    out: Path, record: dict[str, Any], step: int, losses: list[float]
) -> list[dict[str, Any]]:
    """The record's checkpoint list after saving ``step``: each with the sha256 of its adapter
    (what a resume checks; hashes of earlier checkpoints are kept, not recomputed)."""
    known = {c["step"]: c.get("adapter_sha256") for c in record.get("checkpoints", [])}
    out_list = []
    for s, p in ckpt_dirs(out).items():
        if s > step:
            continue
        sha = known.get(s) if s != step else None
        sha = sha or sha256_file(p / "adapter_model.safetensors")
        out_list.append({"step": s, "path": p.name, "loss": losses[s - 1], "adapter_sha256": sha})
    return out_list


def distill(
    base_model: Any,
    data: TeacherData | str | Path,
    out_dir: str | Path,
    *,
    teacher: Teacher | str | None = None,
    teacher_system: str | None = None,
    config: DistillConfig | None = None,
    overwrite: bool = False,
    progress: bool | None = None,
    parents: Mapping[str, str | Path] | None = None,
    mitigation: Mitigation | None = None,
    engine: str = "reference",
    callbacks: Sequence[Any] | None = None,
    trainer_args: Mapping[str, Any] | None = None,
) -> DistillResult:
    """Train a LoRA student of ``base_model`` on the teacher's numbers; save a checkpoint series.

    ``teacher`` (a :class:`~steerlens.teachers.Teacher` of any kind, or a system-prompt string;
    default: the teacher recorded in ``data``) gives the soft labels for ``loss="kl"``;
    ``teacher_system`` is the old shorthand for a prompted teacher. ``loss="sft"`` trains on the
    sampled tokens and needs no teacher. The student sees no system prompt
    (``config.student_system``). Writes ``out_dir/checkpoint-N`` every ``config.save_every``
    steps and at the end, and ``out_dir/distill.json``.

    Resuming: if ``out_dir`` holds a run with the same lineage (base fingerprint, teacher prompt,
    data hash, config except ``steps``/``save_every``), training continues from its last
    checkpoint and gives the same weights as an uninterrupted run; a different run there is an
    error unless ``overwrite=True`` (which deletes its checkpoints and record).
    ``base_model`` itself is never modified.

    Writes ``out_dir/lineage.json``, the series' lineage record (:mod:`steerlens.lineage`):
    its checkpoint files and ``distill.json`` by sha256, the base model, and ``parents`` (role
    → artifact with a record, e.g. ``{"data": "data/teacher.jsonl"}``; a ``data`` path that has
    a record is its parent without being named).

    ``mitigation`` (:class:`~steerlens.distill.mitigations.Mitigation`): a trait-direction
    regulariser and/or preventative steering during training only; recorded in the lineage.

    ``engine``: ``"reference"`` (default: this package's single-process loop, which caches the
    frozen lower blocks) or ``"trl"`` (:mod:`steerlens.distill.trl_engine`: TRL ``SFTTrainer`` /
    a ``transformers.Trainer`` for the KL loss, so ``accelerate launch`` runs it on several
    processes; needs the ``trl`` extra). Only with ``"trl"``: ``callbacks`` (``TrainerCallback``
    objects, e.g. :class:`steerlens.integrations.SteerlensCallback`) and ``trainer_args``
    (``TrainingArguments`` overrides, e.g. ``gradient_checkpointing``).
    """
    _check_engine(engine, bool(callbacks or trainer_args), mitigation)
    lm = as_model(base_model)
    cfg = config or DistillConfig()
    d = _as_data(data)
    t = data_teacher(d, teacher, teacher_system, cfg.loss)
    layers = _resolve_layers(lm, cfg)
    out = Path(out_dir).expanduser()
    lineage = _lineage(lm, cfg, d, t, layers, mitigation)
    if isinstance(data, (str, Path)) and has_record(data):
        parents = {"data": data, **(parents or {})}
    if engine == "trl":
        trl_kw = {"callbacks": callbacks, "trainer_args": trainer_args, "progress": progress}
        return _distill_trl(lm, d, t, cfg, layers, out, lineage, parents, overwrite, trl_kw)
    start, losses, done = _resume_point(out, lineage, json_sha256(lineage)[:16], cfg, overwrite)
    if done is not None:
        ensure_record(out, lambda: _series_record(out, lm, lineage, parents))
        return done
    out.mkdir(parents=True, exist_ok=True)

    t0 = time.perf_counter()
    trainer = Trainer(lm, d, t, cfg, layers, progress, mitigation)
    t_prep = time.perf_counter() - t0
    student = make_student(lm, cfg, layers)
    params = [p for p in student.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=cfg.lr)
    if start:
        _restore(student, opt, out / f"checkpoint-{start}")
    if trainer.use_fast and cfg.verify_fast_path:
        trainer.use_fast = trainer.verify_fast(inner_hf(student))
    record = _new_record(lm, cfg, d, lineage, t, trainer, t_prep, start, losses)
    _train_steps(trainer, student, opt, record, out, lm, cfg, start, progress)
    del student, opt
    _series_record(out, lm, lineage, parents)
    return _result_from_record(out, record, cfg.steps, start)


def _check_engine(engine: str, trl_only: bool, mitigation: Mitigation | None) -> None:
    if engine not in ("reference", "trl"):
        raise ValueError(f"engine must be 'reference' or 'trl', got {engine!r}")
    if engine != "trl" and trl_only:
        raise ValueError("callbacks and trainer_args need engine='trl'")
    if engine == "trl" and mitigation is not None:
        raise ValueError("mitigations run on the reference engine only (engine='reference')")


def _distill_trl(
    lm: LoadedModel,
    d: TeacherData,
    t: Teacher | None,
    cfg: DistillConfig,
    layers: list[int],
    out: Path,
    lineage: dict[str, Any],
    parents: Mapping[str, str | Path] | None,
    overwrite: bool,
    kw: dict[str, Any],
) -> DistillResult:
    """``distill(..., engine="trl")``: :func:`steerlens.distill.trl_engine.distill_trl`, then
    the series' lineage record (by the main process)."""
    res = distill_trl(
        lm, d, t, cfg, layers, out, lineage, json_sha256(lineage)[:16], overwrite=overwrite, **kw
    )
    if res.record.get("world_size", 1) == 1 or _is_main_process():
        _series_record(out, lm, lineage, parents)
    return res


def _is_main_process() -> bool:
    return os.environ.get("RANK", "0") == "0"


def _series_record(
    out: Path, lm: LoadedModel, lineage: dict[str, Any], parents: Mapping[str, Any] | None
) -> Path:
    files = [out / RECORD_NAME, *(f for p in ckpt_dirs(out).values() for f in artifact_files(p))]
    return write_record(
        out,
        "student",
        files=files,
        parents=dict(parents or {}),
        models={"base": describe(lm)},
        config=lineage,
    )


def _write_record(path: Path, obj: Any) -> None:
    """Write a record as indented JSON, atomically (values JSON cannot hold as strings)."""
    atomic_write_text(path, json.dumps(obj, indent=2, default=str))


def _save_checkpoint(
    student: Any,
    opt: torch.optim.Optimizer,
    path: Path,
    lm: LoadedModel,
    step: int,
    losses: list[float],
) -> None:
    """Write a PEFT adapter folder (+ optimizer state and step record) atomically."""
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    student.peft_config["default"].base_model_name_or_path = _base_spec(lm)
    student.save_pretrained(str(tmp), save_embedding_layers=False)
    _sort_target_modules(tmp / "adapter_config.json")
    torch.save(opt.state_dict(), tmp / OPTIMIZER_NAME)
    _write_record(tmp / STATE_NAME, {"step": step, "loss": losses[-1], "losses": losses})
    shutil.rmtree(path, ignore_errors=True)
    tmp.replace(path)


def _sort_target_modules(path: Path) -> None:
    """PEFT keeps ``target_modules`` as a set and writes it in the process's string-hash order,
    so two identical runs wrote different adapter_config.json files (and checkpoint hashes):
    write the list sorted, in PEFT's own layout (indent 2, sorted keys)."""
    d = json.loads(path.read_text())
    if isinstance(d.get("target_modules"), list):
        d["target_modules"] = sorted(d["target_modules"])
        path.write_text(json.dumps(d, indent=2, sort_keys=True))


def _restore(student: Any, opt: torch.optim.Optimizer, path: Path) -> None:
    from peft import set_peft_model_state_dict

    weights = load_file(str(path / "adapter_model.safetensors"))
    res = set_peft_model_state_dict(student, weights)
    missing = [k for k in getattr(res, "missing_keys", []) if "lora_" in k]
    if missing:
        raise DistillError(f"cannot resume from {path}: adapter is missing {missing[:3]}")
    opt.load_state_dict(torch.load(path / OPTIMIZER_NAME, weights_only=True))


def distill_pair(
    base_model: Any,
    data: TeacherData | str | Path,
    control_data: TeacherData | str | Path,
    out_dir: str | Path,
    *,
    config: DistillConfig | None = None,
    overwrite: bool = False,
    progress: bool | None = None,
) -> tuple[DistillResult, DistillResult]:
    """The main series (teacher data, ``out_dir/main``) and the control series (benign-teacher
    data, ``out_dir/control``), trained identically; each teacher's system prompt is read from
    its data."""
    out = Path(out_dir).expanduser()
    main = distill(
        base_model, data, out / "main", config=config, overwrite=overwrite, progress=progress
    )
    ctrl = distill(
        base_model,
        control_data,
        out / "control",
        config=config,
        overwrite=overwrite,
        progress=progress,
    )
    return main, ctrl


def training_loss(
    base_model: Any,
    data: TeacherData | str | Path,
    *,
    teacher: Teacher | str | None = None,
    teacher_system: str | None = None,
    config: DistillConfig | None = None,
    progress: bool | None = None,
) -> float:
    """The loss of the untrained student (the base, with ``config.student_system``) over all
    samples: how far the student starts from the teacher (0 when both see the same system
    prompt)."""
    lm = as_model(base_model)
    cfg = replace(config or DistillConfig(), skip_unchanged_blocks=False)
    d = _as_data(data)
    t = data_teacher(d, teacher, teacher_system, cfg.loss)
    trainer = Trainer(lm, d, t, cfg, _resolve_layers(lm, cfg), progress)
    total, count = 0.0, 0
    with torch.inference_mode():
        for s in range(0, len(trainer.exs), cfg.eval_batch_size):
            idx = list(range(s, min(len(trainer.exs), s + cfg.eval_batch_size)))
            n_tok = sum(trainer.exs[i].n_pred for i in idx)
            total += float(trainer.loss(lm.model, idx, fast=False)) * n_tok
            count += n_tok
    return total / count
