"""The cost of a mitigation: a trained student's loss on held-out teacher data
(:func:`student_loss`), the same KL (or cross-entropy) the student was trained on."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from steerlens.distill.config import DistillConfig
from steerlens.distill.data import TeacherData
from steerlens.distill.teacher import data_teacher
from steerlens.distill.trainer import Trainer
from steerlens.loading.models import as_model
from steerlens.teachers import Teacher

__all__ = ["student_loss"]


def student_loss(
    base_model: Any,
    student: Any,
    data: TeacherData | str | Path,
    *,
    teacher: Teacher | str | None = None,
    config: DistillConfig | None = None,
    progress: bool | None = None,
) -> float:
    """Token-weighted mean loss of ``student`` (a model of ``base_model``'s tokenizer, e.g.
    :meth:`DistillResult.load`) against the teacher's targets on ``data``: the teacher (default:
    the one recorded in ``data``) runs on ``base_model``, the student sees
    ``config.student_system``. Pass held-out clean teacher data to measure what a mitigation
    costs in imitation."""
    lm, st = as_model(base_model), as_model(student)
    cfg = replace(config or DistillConfig(), skip_unchanged_blocks=False)
    d = data if isinstance(data, TeacherData) else TeacherData.load(data)
    if not d.samples:
        raise ValueError("the held-out data has no samples")
    t = data_teacher(d, teacher, None, cfg.loss)
    layers = list(cfg.layers) if cfg.layers is not None else [max(1, lm.n_layers // 2)]
    trainer = Trainer(lm, d, t, cfg, layers, progress)
    total, count = 0.0, 0
    with torch.inference_mode():
        for s in range(0, len(trainer.exs), cfg.eval_batch_size):
            idx = list(range(s, min(len(trainer.exs), s + cfg.eval_batch_size)))
            n_tok = sum(trainer.exs[i].n_pred for i in idx)
            total += float(trainer.loss(st.model, idx, fast=False)) * n_tok
            count += n_tok
    return total / count
