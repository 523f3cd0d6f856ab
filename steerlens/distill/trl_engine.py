"""``distill(..., engine="trl")``: the same student trained by the ecosystem's engine.

The reference loop (:mod:`steerlens.distill.train`) is single-process; this engine runs the same
data, LoRA student (:func:`~steerlens.distill.student.make_student`) and loss through
``transformers.Trainer`` so that ``accelerate launch`` / ``torchrun`` (DDP, DeepSpeed, FSDP),
gradient checkpointing and the trainer's logging (TensorBoard, W&B) apply:

- ``loss="sft"``: TRL's ``SFTTrainer`` on the tokenized examples (``input_ids`` +
  ``completion_mask``: cross-entropy on the response tokens and the end-of-turn token, the
  reference loop's positions);
- ``loss="kl"``: :class:`KLTrainer`, a ``transformers.Trainer`` whose loss is
  :func:`~steerlens.distill.targets.kl_to_teacher` against the teacher targets
  :func:`~steerlens.distill.targets.teacher_targets` computed once before training (top-k + rest
  bucket, as the reference loop).

Optimiser as the reference loop: Adam (``adamw_torch`` with weight decay 0), constant learning
rate, ``max_grad_norm``, the batch size per process. Checkpoints are the trainer's own
``out_dir/checkpoint-N`` (the PEFT adapter plus ``optimizer.pt``, ``scheduler.pt``,
``trainer_state.json``), every ``save_every`` steps and at the last step; a run continues from
its last checkpoint through ``trainer.train(resume_from_checkpoint=...)``. Batches are drawn by the
trainer's sampler (seeded by ``config.seed``), not by the reference loop's permutation stream, so
the two engines see the same data in a different order. The reference loop's cached lower
blocks (``skip_unchanged_blocks``) are not used: every step runs the full forward.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from steerlens.core.common import atomic_write_text
from steerlens.distill.config import RECORD_NAME, DistillConfig, DistillError, DistillResult
from steerlens.distill.data import TeacherData
from steerlens.distill.student import make_student
from steerlens.distill.targets import (
    Example,
    Target,
    batch_tensors,
    cat_targets,
    check_same_responses,
    examples,
    kl_targets_kind,
    kl_to_teacher,
    number_answer_ids,
    removed_mass,
    teacher_targets,
)
from steerlens.loading.models import LoadedModel, describe
from steerlens.teachers import Teacher

__all__ = ["KLTrainer", "distill_trl", "training_arguments"]


def training_arguments(
    out: Path, cfg: DistillConfig, lm: LoadedModel, overrides: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """``TrainingArguments`` keywords matching the reference loop's settings."""
    bf16 = lm.compute_precision.name in ("bfloat16", "autocast")
    args: dict[str, Any] = {
        "output_dir": str(out),
        "max_steps": cfg.steps,
        "per_device_train_batch_size": cfg.batch_size,
        "learning_rate": cfg.lr,
        "lr_scheduler_type": "constant",
        "warmup_steps": 0,
        "optim": "adamw_torch",
        "weight_decay": 0.0,
        "max_grad_norm": cfg.max_grad_norm if cfg.max_grad_norm is not None else 0.0,
        "save_strategy": "steps",
        "save_steps": cfg.save_every,
        "save_only_model": False,
        "logging_steps": 1,
        "report_to": "none",
        "seed": cfg.seed,
        "data_seed": cfg.seed,
        "bf16": bf16,
        "use_cpu": lm.device.type == "cpu",
        "dataloader_num_workers": 0,
        "ddp_find_unused_parameters": False,
        "remove_unused_columns": False,
        "disable_tqdm": True,
    }
    return {**args, **dict(overrides or {})}


class KLTrainer:
    """Factory of a ``transformers.Trainer`` subclass whose loss is the KL to the teacher's
    (top-k) targets at the response positions of the examples in the batch (:meth:`build`).

    The batch holds only example indices (``idx``); the ids, padding and targets come from the
    examples and targets held here, so every process computes the same loss as the reference
    loop for the same examples."""

    @staticmethod
    def build(exs: Sequence[Example], targets: Sequence[Target], pad_id: int, **kwargs: Any) -> Any:
        from transformers import Trainer

        class _KLTrainer(Trainer):
            def compute_loss(
                self,
                model: nn.Module,
                inputs: Mapping[str, Any],
                return_outputs: bool = False,
                num_items_in_batch: Any = None,
            ) -> Any:
                idx = [int(i) for i in inputs["idx"]]
                bex = [exs[i] for i in idx]
                device = next(model.parameters()).device
                ids, mask, pos, k, rows, cols = batch_tensors(bex, pad_id, device)
                out = model(
                    input_ids=ids,
                    attention_mask=mask,
                    position_ids=pos,
                    use_cache=False,
                    logits_to_keep=k,
                )
                logits = out.logits[:, -k:, :][rows, cols]
                loss = kl_to_teacher(logits, cat_targets([targets[i] for i in idx])).mean()
                return (loss, out) if return_outputs else loss

        return _KLTrainer(**kwargs)


def _collate_idx(features: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
    return {"idx": torch.tensor([int(f["idx"]) for f in features])}


class _SaveAtEnd:
    """A callback that saves at the last step too (the reference loop's last checkpoint)."""

    @staticmethod
    def make() -> Any:
        from transformers import TrainerCallback

        class SaveAtEnd(TrainerCallback):
            def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> Any:
                if state.global_step >= state.max_steps:
                    control.should_save = True
                return control

        return SaveAtEnd()


def _check_out(out: Path, lineage_hash: str, overwrite: bool) -> None:
    rec = out / RECORD_NAME
    if not rec.is_file():
        return
    old = json.loads(rec.read_text())
    if old.get("engine") == "trl" and old.get("lineage_hash") == lineage_hash:
        return
    if not overwrite:
        raise DistillError(
            f"{out} holds a different distillation run ({RECORD_NAME}): pass overwrite=True to "
            "replace it, or another out_dir"
        )
    for p in out.glob("checkpoint-*"):
        shutil.rmtree(p)
    rec.unlink()


def _kl_trainer(
    lm: LoadedModel,
    d: TeacherData,
    teacher: Teacher | None,
    cfg: DistillConfig,
    exs: Sequence[Example],
    student: Any,
    kw: dict[str, Any],
    cbs: list[Any],
    info: dict[str, Any],
    progress: bool | None,
) -> Any:
    """The :class:`KLTrainer` of the student on the teacher's soft labels (computed here)."""
    from datasets import Dataset
    from transformers import TrainingArguments

    if teacher is None:
        raise DistillError("loss='kl' needs a teacher")
    t_exs = examples(lm, d, teacher.system)
    check_same_responses(exs, t_exs)
    # the reference loop's soft labels: number-only (the tokens a number answer allows) or
    # top-k, by cfg.kl_targets
    kl_kind = kl_targets_kind(cfg.kl_targets, d)
    allowed = number_answer_ids(lm) if kl_kind == "numbers" else None
    with teacher.apply(lm) as tlm:
        targets = teacher_targets(
            tlm, t_exs, cfg.top_k, cfg.eval_batch_size, progress, allowed=allowed
        )
    info["kl_targets"] = {"kind": kl_kind, "removed_mass": removed_mass(targets)}
    return KLTrainer.build(
        exs,
        targets,
        lm.tokenizer.pad_token_id,
        model=student,
        args=TrainingArguments(**kw),
        train_dataset=Dataset.from_dict({"idx": list(range(len(exs)))}),
        data_collator=_collate_idx,
        processing_class=lm.tokenizer,
        callbacks=cbs,
    )


def distill_trl(
    lm: LoadedModel,
    d: TeacherData,
    teacher: Teacher | None,
    cfg: DistillConfig,
    layers: list[int],
    out: Path,
    lineage: dict[str, Any],
    lineage_hash: str,
    *,
    overwrite: bool = False,
    progress: bool | None = None,
    callbacks: Sequence[Any] | None = None,
    trainer_args: Mapping[str, Any] | None = None,
) -> DistillResult:
    """Train the LoRA student with TRL / ``transformers.Trainer`` (module docstring); returns
    the :class:`DistillResult` of the ``checkpoint-N`` series in ``out``."""
    from datasets import Dataset
    from transformers.trainer_utils import get_last_checkpoint

    _check_out(out, lineage_hash, overwrite)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    exs = examples(lm, d, cfg.student_system)
    kw = training_arguments(out, cfg, lm, trainer_args)
    student = make_student(lm, cfg, layers)
    student.train()
    cbs = [_SaveAtEnd.make(), *(callbacks or [])]
    info: dict[str, Any] = {"kl_targets": None}
    if cfg.loss == "kl":
        trainer = _kl_trainer(lm, d, teacher, cfg, exs, student, kw, cbs, info, progress)
    else:
        from trl import SFTConfig, SFTTrainer

        rows = {
            "input_ids": [list(e.ids) for e in exs],
            "completion_mask": [[0] * e.start + [1] * e.n_pred for e in exs],
        }
        kw = {**kw, "remove_unused_columns": True}
        sft_args = SFTConfig(**kw, max_length=None, packing=False, completion_only_loss=True)
        trainer = SFTTrainer(
            model=student,
            args=sft_args,
            train_dataset=Dataset.from_dict(rows),
            processing_class=lm.tokenizer,
            callbacks=cbs,
        )
    for cb in callbacks or []:
        if hasattr(cb, "trainer") and cb.trainer is None:
            cb.trainer = trainer  # log through this trainer (SteerlensCallback)
    t_prep = time.perf_counter() - t0
    last = get_last_checkpoint(str(out)) if any(out.glob("checkpoint-*")) else None
    t1 = time.perf_counter()
    trainer.train(resume_from_checkpoint=last)
    t_train = time.perf_counter() - t1
    info["seconds"] = {"prepare": t_prep, "train": t_train}
    return _finish(trainer, out, lm, cfg, lineage, lineage_hash, last, info)


def _finish(
    trainer: Any,
    out: Path,
    lm: LoadedModel,
    cfg: DistillConfig,
    lineage: dict[str, Any],
    lineage_hash: str,
    resumed: str | None,
    info: dict[str, Any],
) -> DistillResult:
    hist = trainer.state.log_history
    losses = [float(h["loss"]) for h in hist if "loss" in h and "step" in h]
    steps = sorted(
        int(p.name.split("-", 1)[1])
        for p in out.glob("checkpoint-*")
        if p.name.split("-", 1)[1].isdigit()
    )
    start = int(Path(resumed).name.split("-", 1)[1]) if resumed else 0
    record = {
        "engine": "trl",
        "lineage": lineage,
        "lineage_hash": lineage_hash,
        "base": describe(lm),
        "config": cfg.lineage(),
        "n_examples": len(trainer.train_dataset),
        "world_size": trainer.args.world_size,
        "steps": steps,
        "losses": losses,
        "resumed_from": start,
        **info,
        "trainer": "KLTrainer" if type(trainer).__name__ == "_KLTrainer" else "SFTTrainer",
    }
    if trainer.is_world_process_zero():
        atomic_write_text(out / RECORD_NAME, json.dumps(record, indent=1, default=str))
    cks = [out / f"checkpoint-{s}" for s in steps]
    return DistillResult(out, steps, cks, losses, record, start)
