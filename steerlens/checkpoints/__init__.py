"""Checkpoint series: find ``checkpoint-N`` folders and load them one at a time, cheaply.

A series (DESIGN.md "Words") is θ₀, θ_{n1}, θ_{n2}, …: the base model (step 0) and the HF
``checkpoint-N`` folders of one training run, ordered by N. Each checkpoint is either

- ``full``: an HF model folder (``config.json`` + ``model.safetensors`` / sharded / ``.bin``), or
- ``adapter``: a PEFT adapter folder (``adapter_config.json`` + ``adapter_model.safetensors``).

:meth:`CheckpointSeries.open` is a context manager whose loader swaps PEFT adapters onto the
*one* in-memory base (``load_adapter`` / ``set_adapter`` / ``delete_adapter``, the previous
adapter deleted so memory stays flat) and loads full checkpoints into one reused model copy.
On exit the LoRA injection is removed (``unload``) and the base's ``requires_grad`` flags and
train/eval mode are restored, so the user's model is exactly as before.

Modules: :mod:`~.checkpoint` (one checkpoint, recognised and validated), :mod:`~.series` (the
series and its loader), :mod:`~.changes` (the first block a checkpoint changed).
"""

from __future__ import annotations

from steerlens.checkpoints.changes import first_changed_block
from steerlens.checkpoints.checkpoint import Checkpoint, CheckpointKind, classify, validate
from steerlens.checkpoints.series import (
    CheckpointSeries,
    SeriesLoader,
    adapter_tensor_names,
    read_state_dict,
)

__all__ = [
    "Checkpoint",
    "CheckpointKind",
    "CheckpointSeries",
    "SeriesLoader",
    "adapter_tensor_names",
    "classify",
    "first_changed_block",
    "read_state_dict",
    "validate",
]
