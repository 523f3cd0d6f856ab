"""The lineage records an experiment writes beside its artifacts (see :mod:`steerlens.lineage`):
teacher descriptions, and the ``record`` callables its cached stages take."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from steerlens.core.common import write_json
from steerlens.lineage import write_record

__all__ = ["recorder", "teacher_record"]


def teacher_record(
    path: Path, teacher: Mapping[str, Any], base: Any, files: Sequence[Path] = ()
) -> Path:
    """Write ``path`` (JSON: the teacher's description and its base model) and its record; the
    teacher's ``files`` (an adapter, a vector), when it has any, are subjects too."""
    from steerlens.loading.models import describe

    desc = describe(base)
    write_json(path, {"teacher": dict(teacher), "base": desc})
    subjects = [path, *(Path(f) for f in files)]
    cfg = {"teacher_kind": teacher.get("kind"), "system": teacher.get("system")}
    write_record(path, "teacher", files=subjects, config=cfg, models={"base": desc})
    return path


def recorder(
    kind: str,
    base: Any,
    *,
    parents: Mapping[str, Path] | None = None,
    config: Any = None,
    files: Callable[[Path], list[Path]] | None = None,
) -> Callable[[Path], Path]:
    """A ``record`` for :func:`~steerlens.pipeline.stage.stage`: writes the record of the
    stage's file (``files``: the artifact's files, default the file itself) with ``parents``
    (role → artifact), the base model and ``config``."""
    from steerlens.loading.models import describe

    def write(path: Path) -> Path:
        return write_record(
            path,
            kind,
            files=files(path) if files is not None else None,
            parents=dict(parents or {}),
            models={"base": describe(base)},
            config=config,
        )

    return write
