"""steerlens: mechanistic steering-vector analysis of trait transfer.

import steerlens as sl
model = sl.load_model("smollm2-135m-instruct")
trait = sl.TraitSpec.builtin("owl")
vec = sl.teacher_vector(model, trait)
print(sl.carry_test(model, vec, trait).summary())
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from steerlens.activations import Activations, record_activations
from steerlens.distill import DistillConfig, TeacherData, distill, generate_teacher_data
from steerlens.extract import extract_vector, logistic_probe, mean_diff, pca_diff, teacher_vector
from steerlens.intervene import ablate, steer
from steerlens.models import LoadedModel, ModelLoadError, load_model, wrap
from steerlens.prompts import ChatPrompt
from steerlens.sites import site_name
from steerlens.vectors import SteeringVector, cosine
from steerlens.version import __version__

if TYPE_CHECKING:  # precise types for editors and mypy; loaded lazily at run time
    from steerlens.backends import (
        from_nnsight as from_nnsight,
    )
    from steerlens.backends import (
        from_transformer_lens as from_transformer_lens,
    )
    from steerlens.behavior import (
        action_choice as action_choice,
    )
    from steerlens.behavior import (
        logprob_score as logprob_score,
    )
    from steerlens.behavior import (
        sampled_rate as sampled_rate,
    )
    from steerlens.behavior import (
        trait_behavior as trait_behavior,
    )
    from steerlens.carry import (
        CarryResult as CarryResult,
    )
    from steerlens.carry import (
        carry_test as carry_test,
    )
    from steerlens.carry import (
        student_carry_test as student_carry_test,
    )
    from steerlens.checkpoints import (
        CheckpointSeries as CheckpointSeries,
    )
    from steerlens.experiment import (
        DemoConfig as DemoConfig,
    )
    from steerlens.experiment import (
        run_demo as run_demo,
    )
    from steerlens.report import (
        Report as Report,
    )
    from steerlens.report import (
        render_report as render_report,
    )
    from steerlens.screen import (
        ScreenResult as ScreenResult,
    )
    from steerlens.screen import (
        screen_dataset as screen_dataset,
    )
    from steerlens.track import (
        AlignmentTrack as AlignmentTrack,
    )
    from steerlens.track import (
        track_checkpoints as track_checkpoints,
    )
    from steerlens.traits import (
        TraitSpec as TraitSpec,
    )

# Heavier parts load on first use, so `import steerlens` stays quick.
_LAZY = {
    "TraitSpec": "steerlens.traits",
    "carry_test": "steerlens.carry",
    "student_carry_test": "steerlens.carry",
    "CarryResult": "steerlens.carry",
    "logprob_score": "steerlens.behavior",
    "sampled_rate": "steerlens.behavior",
    "action_choice": "steerlens.behavior",
    "trait_behavior": "steerlens.behavior",
    "CheckpointSeries": "steerlens.checkpoints",
    "track_checkpoints": "steerlens.track",
    "AlignmentTrack": "steerlens.track",
    "screen_dataset": "steerlens.screen",
    "ScreenResult": "steerlens.screen",
    "render_report": "steerlens.report",
    "Report": "steerlens.report",
    "from_nnsight": "steerlens.backends",
    "from_transformer_lens": "steerlens.backends",
    "DemoConfig": "steerlens.experiment",
    "run_demo": "steerlens.experiment",
}


def __getattr__(name: str) -> Any:
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'steerlens' has no attribute {name!r}")
    return getattr(importlib.import_module(mod), name)


def __dir__() -> list[str]:
    return sorted([*__all__, *_LAZY])


__all__ = [
    "Activations",
    "ChatPrompt",
    "DistillConfig",
    "LoadedModel",
    "ModelLoadError",
    "SteeringVector",
    "TeacherData",
    "__version__",
    "ablate",
    "cosine",
    "distill",
    "extract_vector",
    "generate_teacher_data",
    "load_model",
    "logistic_probe",
    "mean_diff",
    "pca_diff",
    "record_activations",
    "site_name",
    "steer",
    "teacher_vector",
    "wrap",
]
