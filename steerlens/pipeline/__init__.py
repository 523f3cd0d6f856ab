"""One pipeline for every experiment: a run context (:class:`RunContext`: config, output folder,
model, trait, log, clock), one stage helper (:func:`stage`: cache with a hash-checked stamp,
and the lineage record) and the stages experiments share (:mod:`steerlens.pipeline.stages`).

An experiment is one small file in :mod:`steerlens.experiments`: its config dataclass and a
``run`` that opens a context, composes stages and calls :func:`finish_run`.
"""

from steerlens.pipeline.context import (
    RunContext,
    config_json,
    config_key,
    finish_run,
    open_context,
    option,
    required,
)
from steerlens.pipeline.controls import (
    REPLICATE_SEED_STRIDE,
    SeriesPlan,
    behavior_deltas,
    series_plan,
    series_scores,
)
from steerlens.pipeline.records import recorder, teacher_record
from steerlens.pipeline.stage import (
    DATA_SEED_OFFSET,
    StageClock,
    checkpoint_behavior,
    json_load,
    json_save,
    last_checkpoint,
    series_key,
    series_record,
    stage,
    training_prompts,
)
from steerlens.pipeline.stages import (
    behavior_stage,
    carry_peak,
    carry_stage,
    distill_stage,
    lineage_json,
    open_run,
    prompt_teacher_records,
    run_lineage,
    screen_stage,
    series_records,
    student_config,
    teacher_data_stage,
    teacher_vector_stage,
    track_stage,
)

__all__ = [
    "DATA_SEED_OFFSET",
    "REPLICATE_SEED_STRIDE",
    "RunContext",
    "SeriesPlan",
    "StageClock",
    "behavior_deltas",
    "behavior_stage",
    "carry_peak",
    "carry_stage",
    "checkpoint_behavior",
    "config_json",
    "config_key",
    "distill_stage",
    "finish_run",
    "json_load",
    "json_save",
    "last_checkpoint",
    "lineage_json",
    "open_context",
    "open_run",
    "option",
    "prompt_teacher_records",
    "recorder",
    "required",
    "run_lineage",
    "screen_stage",
    "series_key",
    "series_plan",
    "series_record",
    "series_records",
    "series_scores",
    "stage",
    "student_config",
    "teacher_data_stage",
    "teacher_record",
    "teacher_vector_stage",
    "track_stage",
    "training_prompts",
]
