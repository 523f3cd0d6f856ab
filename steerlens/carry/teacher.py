"""B_teacher for a :class:`~steerlens.teachers.Teacher` of any kind: :func:`teacher_score`
(a behavior under the teacher) and :func:`accepts_teacher`, which lets ``carry_test`` take a
``Teacher`` as its ``teacher=``.

- a prompted teacher with the trait's system prompt is the carry test's default condition;
  with another prompt, B_teacher is the behavior under that prompt (``teacher_metric``);
- a steered, ablated or fine-tuned teacher runs as a teacher *model* (a copy of the base
  carrying the edit, or the fine-tune), read under the teacher's system prompt if it has one.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from steerlens.inputs.traits import as_trait
from steerlens.loading.models import LoadedModel, as_model
from steerlens.measures.behavior import as_behavior, trait_behavior
from steerlens.teachers import Teacher

__all__ = ["TeacherCondition", "accepts_teacher", "teacher_condition", "teacher_score"]

F = TypeVar("F", bound=Callable[..., Any])


def _with_system(behavior: Any, system: str | None) -> Any:
    if system is None:
        return behavior
    if not hasattr(behavior, "with_system"):
        raise ValueError(
            "this teacher has a system prompt but the metric cannot switch system prompts: "
            "pass a behavior with with_system (e.g. trait_behavior) or teacher_metric="
        )
    return behavior.with_system(system)


def teacher_score(model: Any, teacher: Teacher, behavior: Any) -> float:
    """The behavior of ``teacher`` built on ``model``: ``behavior`` under the teacher's system
    prompt, run on the model with the teacher's edit (or its fine-tune)."""
    lm = as_model(model)
    beh = _with_system(as_behavior(behavior), teacher.system)
    with teacher.apply(lm) as m:
        return float(beh(m))


@dataclass
class TeacherCondition:
    """What ``carry_test`` takes for one teacher: a teacher model (None: the base with a system
    prompt) and the metric under the teacher (None: the default, the trait's prompt)."""

    model: LoadedModel | None
    metric: Any


@contextmanager
def teacher_condition(
    model: Any, teacher: Teacher, trait: Any, metric: Any
) -> Iterator[TeacherCondition]:
    """The carry test's teacher condition for ``teacher`` (see the module doc). A steered or
    ablated teacher runs on a copy of the base, its edit active until the block exits."""
    lm = as_model(model)
    spec = None if trait is None else as_trait(trait)
    if teacher.kind == "base":
        raise ValueError("the base as teacher has no gap to carry: pass a teacher with a trait")
    if metric is None and spec is not None:
        metric = trait_behavior(lm, spec)
    if teacher.kind == "prompt":
        if spec is not None and teacher.system == spec.system_prompt:
            yield TeacherCondition(None, None)
            return
        if metric is None:
            raise ValueError("a prompted teacher needs trait= or metric= to be measured")
        yield TeacherCondition(None, _with_system(as_behavior(metric), teacher.system))
        return
    with ExitStack() as stack:
        if teacher.kind == "finetuned":
            tm = teacher.load(lm)
        else:
            twin = LoadedModel(copy.deepcopy(lm.model), lm.tokenizer, lm.name, lm.source)
            tm = stack.enter_context(teacher.apply(twin))
        tmetric = None
        if teacher.system is not None and metric is not None:
            tmetric = _with_system(as_behavior(metric), teacher.system)
        yield TeacherCondition(tm, tmetric)


def accepts_teacher(fn: F) -> F:
    """Let ``fn`` (``carry_test``) take a :class:`Teacher` as ``teacher=``: it runs under the
    teacher's :func:`teacher_condition`."""

    @functools.wraps(fn)
    def wrapper(model: Any, vector: Any, trait: Any = None, **kw: Any) -> Any:
        teacher = kw.get("teacher")
        if not isinstance(teacher, Teacher):
            return fn(model, vector, trait, **kw)
        with teacher_condition(model, teacher, trait, kw.get("metric")) as cond:
            kw["teacher"] = cond.model
            if kw.get("teacher_metric") is None:
                kw["teacher_metric"] = cond.metric
            return fn(model, vector, trait, **kw)

    return cast(F, wrapper)
