"""Which teacher a distillation run uses: the one given, the old ``teacher_system`` shorthand,
or the one its data records (:func:`data_teacher`)."""

from __future__ import annotations

from steerlens.distill.data import TeacherData
from steerlens.teachers import Teacher, as_teacher

__all__ = ["data_teacher"]


def data_teacher(
    d: TeacherData,
    teacher: Teacher | str | None,
    teacher_system: str | None,
    loss: str,
) -> Teacher | None:
    """The teacher of a run on data ``d``: ``teacher`` (a Teacher or a system prompt), else the
    shorthand ``teacher_system``, else the teacher ``d`` records (its object, or its system
    prompt for data from before teachers had kinds). None only for ``loss="sft"`` on data that
    names no teacher; ``loss="kl"`` then is an error."""
    if teacher is not None and teacher_system is not None:
        raise ValueError("pass the teacher once: teacher=... or teacher_system='...', not both")
    if teacher is not None:
        return as_teacher(teacher)
    if teacher_system is not None:
        return Teacher.prompted(teacher_system)
    if d.teacher is not None:
        return d.teacher
    desc = d.teacher_description
    if desc is not None and desc.get("kind") in ("steer", "ablate", "finetuned"):
        if loss == "kl":
            raise ValueError(
                f"the data was written by a {desc['kind']!r} teacher that cannot be rebuilt "
                "from its record here (its vector file or fine-tune folder is missing): pass "
                "teacher=Teacher... for loss='kl', or use DistillConfig(loss='sft')"
            )
        return None
    if d.system is not None:
        return Teacher.prompted(d.system)
    if loss == "kl":
        raise ValueError(
            "loss='kl' needs the teacher: pass teacher=... or teacher_system=... (the data "
            "records none), or use DistillConfig(loss='sft')"
        )
    return None
