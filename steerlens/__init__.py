"""steerlens: mechanistic steering-vector analysis of trait transfer.

    import steerlens as sl
    model = sl.load_model("smollm2-135m-instruct")
    trait = sl.TraitSpec.builtin("owl")
    vec = sl.teacher_vector(model, trait)
    print(sl.carry_test(model, vec, trait).summary())

The package root is the public facade of the library (the command line and the experiments
live in :mod:`steerlens.cli` and :mod:`steerlens.experiments`; ``__all__`` lists every name,
the lazy ones included): it re-exports names from every layer (the layers
themselves import only downward; see the import-linter contract in pyproject.toml). The light
core loads with ``import steerlens``; the rest loads on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from steerlens.core.lm_only import LMOnlyError
from steerlens.core.sites import site_name
from steerlens.core.vectors import Provenance, SteeringVector, cosine
from steerlens.directions.extract import (
    extract_vector,
    logistic_probe,
    mean_diff,
    pca_diff,
    teacher_vector,
)
from steerlens.directions.module_vectors import module_vector, shift_vector
from steerlens.distill import DistillConfig, TeacherData, distill, generate_teacher_data
from steerlens.inputs.prompts import ChatPrompt
from steerlens.loading.models import LoadedModel, ModelLoadError, load_model, wrap
from steerlens.loading.torch_module import wrap_module
from steerlens.runtime.activations import Activations, record_activations
from steerlens.runtime.edits import NoOpEditError
from steerlens.runtime.intervene import ablate, steer
from steerlens.teachers import Teacher, as_teacher
from steerlens.version import __version__

# Heavier parts load on first use, so `import steerlens` stays quick: name -> defining module.
_LAZY = {
    "TraitSpec": "steerlens.inputs.traits",
    "ContrastSet": "steerlens.inputs.contrast",
    "ProjectionBehavior": "steerlens.measures.behavior",
    "carry_test": "steerlens.carry",
    "student_carry_test": "steerlens.carry",
    "CarryResult": "steerlens.carry",
    "CarryLevel": "steerlens.carry",
    "logprob_score": "steerlens.measures.behavior",
    "sampled_rate": "steerlens.measures.behavior",
    "action_choice": "steerlens.measures.behavior",
    "trait_behavior": "steerlens.measures.behavior",
    "CheckpointSeries": "steerlens.checkpoints",
    "track_checkpoints": "steerlens.track",
    "AlignmentTrack": "steerlens.track",
    "screen_dataset": "steerlens.screen",
    "ScreenResult": "steerlens.screen",
    "render_report": "steerlens.report",
    "Report": "steerlens.report",
    "from_nnsight": "steerlens.runtime.backends",
    "from_transformer_lens": "steerlens.runtime.backends",
    "audit": "steerlens.auditing",
    "AuditConfig": "steerlens.auditing",
    "verify_lineage": "steerlens.lineage",
    "lineage_graph": "steerlens.lineage",
    "claim_run_folder": "steerlens.core.runfolder",
    "RunFolderError": "steerlens.core.runfolder",
    "check_config": "steerlens.core.validation",
}

if TYPE_CHECKING:  # precise types for editors and mypy; loaded lazily at run time
    from steerlens.auditing import AuditConfig, audit
    from steerlens.carry import CarryLevel, CarryResult, carry_test, student_carry_test
    from steerlens.checkpoints import CheckpointSeries
    from steerlens.core.runfolder import RunFolderError, claim_run_folder
    from steerlens.core.validation import check_config
    from steerlens.inputs.contrast import ContrastSet
    from steerlens.inputs.traits import TraitSpec
    from steerlens.lineage import lineage_graph, verify_lineage
    from steerlens.measures.behavior import (
        ProjectionBehavior,
        action_choice,
        logprob_score,
        sampled_rate,
        trait_behavior,
    )
    from steerlens.report import Report, render_report
    from steerlens.runtime.backends import from_nnsight, from_transformer_lens
    from steerlens.screen import ScreenResult, screen_dataset
    from steerlens.track import AlignmentTrack, track_checkpoints


def __getattr__(name: str) -> Any:
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'steerlens' has no attribute {name!r}")
    return getattr(importlib.import_module(mod), name)


def __dir__() -> list[str]:
    return list(__all__)


__all__ = sorted(
    [
        *[
            "Activations",
            "ChatPrompt",
            "DistillConfig",
            "LMOnlyError",
            "LoadedModel",
            "ModelLoadError",
            "NoOpEditError",
            "Provenance",
            "SteeringVector",
            "Teacher",
            "TeacherData",
            "__version__",
            "ablate",
            "as_teacher",
            "cosine",
            "distill",
            "extract_vector",
            "generate_teacher_data",
            "load_model",
            "logistic_probe",
            "mean_diff",
            "module_vector",
            "pca_diff",
            "record_activations",
            "shift_vector",
            "site_name",
            "steer",
            "teacher_vector",
            "wrap",
            "wrap_module",
        ],
        *_LAZY,
    ]
)
