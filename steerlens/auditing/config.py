"""What ``steerlens audit`` / :func:`steerlens.audit` take: :class:`AuditConfig` (its fields are
the command's options) and :class:`AuditError`."""

from __future__ import annotations

from dataclasses import dataclass

from steerlens.core.results import Record
from steerlens.pipeline.context import option, required

__all__ = ["AuditConfig", "AuditError"]


class AuditError(ValueError):
    """Artifacts that cannot be audited together (a student of another base, no samples …)."""


@dataclass(kw_only=True)
class AuditConfig(Record):
    """An audit of a distillation pipeline: the base model, the teacher, the student (and an
    optional control student), the training data and the trait. Analysis settings default to
    the owl experiment's, so pointing the audit at a demo folder repeats its numbers."""

    base: str = required(
        "base model: embedded name, HF id or local folder (teacher and student base)"
    )
    student: str = required(
        "student: a model/adapter folder or a folder of checkpoint-N", exists="dir"
    )
    data: str = required(
        "training data JSONL: chats {messages: [...]} or {prompt|user, response|completion}",
        exists="file",
    )
    trait: str = option("owl", "built-in trait name or trait YAML")
    teacher_system: str | None = option(
        None, "the teacher's system prompt (none: the trait's, unless another teacher is given)"
    )
    teacher_model: str | None = option(
        None, "fine-tuned teacher: PEFT adapter or model folder of the base", exists="dir"
    )
    teacher_vector: str | None = option(
        None, "steered teacher: .safetensors steering vector", exists="file"
    )
    teacher_alpha: float = option(4.0, "steered teacher: strength α")
    teacher_layers: tuple[int, ...] | None = option(
        None, "steered teacher: layers edited (none: the vector's)"
    )
    control: str | None = option(
        None, "control student (trained the same way on benign data)", exists="dir"
    )
    control_data: str | None = option(
        None, "the control student's training data JSONL", exists="file"
    )
    force_base: bool = option(False, "audit a student whose recorded base differs from --base")
    carry_layers: tuple[int, ...] | None = option(None, "carry-test layers (none: a spread)")
    alphas: tuple[float, ...] = option((2.0, 4.0, 8.0), "carry-test steering strengths α")
    n_random: int = option(19, "random directions per carry cell (null; >= 19 for p <= 0.05)")
    carry_eval_n: int | None = option(8, "eval prompts the carry test scores (none: all)")
    probe_n: int | None = option(None, "probe prompts of the trait (none: the trait's own)")
    n_null: int = option(1000, "random directions of the tracking null")
    n_boot: int = option(1000, "bootstrap resamples of the tracking intervals")
    screen_max: int = option(24, "training samples screened per data set")
    seed: int = option(0, "seed for every random choice")
    device: str = option("cpu", "cpu, cuda, cuda:1 …")
    out: str = option("runs/audit", "output folder (results.json, report.html, lineage)")

    def __post_init__(self) -> None:
        given = [x for x in (self.teacher_model, self.teacher_vector) if x is not None]
        if len(given) > 1:
            raise ValueError(
                "give one teacher: --teacher-model (a fine-tune) or --teacher-vector (a steered "
                "base), optionally with --teacher-system"
            )
        if self.control_data is not None and self.control is None:
            raise ValueError("--control-data needs --control (the student trained on it)")
        if self.screen_max < 1:
            raise ValueError(f"screen_max must be >= 1, got {self.screen_max}")

    def summary(self) -> str:
        return f"audit of student {self.student} (base {self.base}, trait {self.trait})"
