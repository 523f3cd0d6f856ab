"""Teachers of every kind (DESIGN.md "Words": teacher): the base model plus a system prompt, a
steering edit (α·v at chosen layers and positions), an ablation (v̂ projected out from a layer
on, under the trait prompt) or a fine-tune (a PEFT adapter folder or a full model folder).

One :class:`Teacher` is what teacher data generation, soft labels, the carry test's B_teacher
and lineage records all take; :func:`as_teacher` keeps the old ``system=`` strings working::

    t = Teacher.steered(v, alpha=8.0, layers=[12])
    with t.apply(base) as m:  # the edit is active only in the block
        ...
    t.describe()              # kind, prompt + sha256, vector sha256, α, layers, files sha256
"""

from steerlens.teachers.teacher import (
    TEACHER_KINDS,
    Teacher,
    TeacherKind,
    as_teacher,
    vector_sha256,
)

__all__ = ["TEACHER_KINDS", "Teacher", "TeacherKind", "as_teacher", "vector_sha256"]
