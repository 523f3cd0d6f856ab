"""Track a student's activation shift against a teacher vector across checkpoints.

DESIGN.md "Student shift", "Alignment", "Excess alignment", "Nulls". For checkpoint θₙ, layer ℓ
and probe prompts p (no system prompt):

- per-prompt shift rows dˡₚ(n) = hˡ(θₙ, p) − hˡ(θ₀, p), paired by prompt;
- student shift vˢˡ(n) = mean_p hˡ(θₙ, p) − mean_p hˡ(θ₀, p) = mean_p dˡₚ(n);
- alignment EASˡ(n) = cos(vˢˡ(n), vᵀˡ); projection projˡ(n) = vˢˡ(n)·vᵀˡ/‖vᵀˡ‖;
  norm ‖vˢˡ(n)‖;
- excess alignment EASˡ_main(n) − EASˡ_control(n) at steps both series have, with a percentile
  bootstrap CI over probe prompts (prompts resampled jointly for both series, vᵀ held fixed);
- nulls: the observed EAS against cos(vˢ, r) for random directions r standing in for vᵀ:
  *isotropic* r uniform on the sphere (E|cos| ≈ √(2/(πd))) and *covariance-matched*
  r ~ N(0, DᵀD) (``stats.span_directions``) where D is, by default (``null_span="base"``), the
  base model's per-prompt activations hˡ(θ₀, p) on the probe prompts, centred: "a direction
  the residual stream varies along". (``null_span="shift"`` uses the checkpoint's centred
  per-prompt shift rows instead; those contain the mean shift's own direction whenever the shift
  size varies by prompt, which makes that null conservative; the teacher's per-prompt
  differences can be passed as ``null_rows``.) Each gives a z-score and an empirical p-value
  (+1 corrected); the layer's p-value is the larger of the two (a layer is flagged only if it
  beats both nulls), corrected across layers per checkpoint (Holm by default, or BH).

Base activations are computed once. Each checkpoint's per-prompt rows are cached on disk
(safetensors + a JSON with a checksum), so an interrupted run resumes without recomputing, and a
corrupt entry is detected and recomputed. For PEFT adapters (and full checkpoints whose lower
blocks are unchanged) the input of the lowest changed block is captured on the base pass and
only the blocks above it run per checkpoint (``skip_unchanged_blocks``).

On a plain torch module (:func:`steerlens.wrap_module`) the same statistics run on input
tensors and in-memory checkpoints: :func:`~steerlens.track.modules.track_modules`,
:func:`~steerlens.track.modules.excess_modules`.

Modules: :mod:`~steerlens.track.results` (the result classes), :mod:`~steerlens.track.nulls`
(the statistics), :mod:`~steerlens.track.replay` (base pass and per-checkpoint rows),
:mod:`~steerlens.track.cache` (the row cache), :mod:`~steerlens.track.core`
(:func:`track_checkpoints`).
"""

from steerlens.runtime.backends.upper import BlockInputs
from steerlens.track.cache import RowCache, tokenizer_key
from steerlens.track.core import NullSpan, track_checkpoints
from steerlens.track.inputs import probe_prompts
from steerlens.track.modules import ModuleTrack, excess_modules, track_modules
from steerlens.track.nulls import NullConfig, cov_null_cosines, excess_bootstrap, layer_stats
from steerlens.track.replay import base_pass, checkpoint_rows, replay_rows
from steerlens.track.results import AlignmentTrack, ExcessAlignment, SeriesTrack

__all__ = [
    "AlignmentTrack",
    "BlockInputs",
    "ExcessAlignment",
    "ModuleTrack",
    "NullConfig",
    "NullSpan",
    "RowCache",
    "SeriesTrack",
    "base_pass",
    "checkpoint_rows",
    "cov_null_cosines",
    "excess_bootstrap",
    "excess_modules",
    "layer_stats",
    "probe_prompts",
    "replay_rows",
    "tokenizer_key",
    "track_checkpoints",
    "track_modules",
]
