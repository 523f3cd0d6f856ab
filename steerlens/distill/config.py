"""Distillation settings and results: :class:`DistillConfig`, :class:`DistillResult`, the
default LoRA band, the file names of a checkpoint series, and the lineage hash."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from steerlens.core.common import sha256_bytes
from steerlens.loading.models import LoadedModel, as_model, load_model

__all__ = [
    "OPTIMIZER_NAME",
    "RECORD_FORMAT",
    "RECORD_NAME",
    "STATE_NAME",
    "DistillConfig",
    "DistillError",
    "DistillResult",
    "default_layers",
    "default_n_samples",
    "json_sha256",
    "rng_devices",
]


RECORD_NAME = "distill.json"
STATE_NAME = "steerlens_state.json"
OPTIMIZER_NAME = "optimizer.pt"
RECORD_FORMAT = 1
# Config fields that do not change the weights of a given step (not part of the lineage).
_NON_LINEAGE = (
    "steps",
    "save_every",
    "eval_batch_size",
    "skip_unchanged_blocks",
    "share_prefix",
    "verify_fast_path",
)


class DistillError(RuntimeError):
    """The distillation cannot run as asked; the message says why and what to do."""


def json_sha256(obj: Any) -> str:
    """sha256 of ``obj`` as sorted-key JSON (non-JSON values as strings): data and lineage
    hashes."""
    return sha256_bytes(json.dumps(obj, sort_keys=True, default=str))


def rng_devices(device: torch.device) -> list[Any]:
    """The devices whose RNG ``torch.random.fork_rng`` must save around seeded sampling."""
    return [device] if device.type == "cuda" else []


def default_layers(n_layers: int) -> list[int]:
    """The middle fifth of the blocks, from 30% of the depth: blocks 9-14 of a 30-block model."""
    if n_layers < 1:
        raise ValueError("the model has no blocks")
    start = min(n_layers - 1, round(0.3 * n_layers))
    count = max(1, round(n_layers / 5))
    return list(range(start, min(n_layers, start + count)))


def default_n_samples(device: str | torch.device | None = None) -> int:
    """How many teacher prompts the demo-sized run uses: 48 on CPU, 512 on a GPU."""
    return 512 if _is_gpu(device) else 48


def _is_gpu(device: str | torch.device | None) -> bool:
    if device is None:
        return torch.cuda.is_available()
    return torch.device(device).type in ("cuda", "mps", "xpu")


KL_TARGETS = ("auto", "numbers", "top_k")
"""The kinds of soft label (:class:`DistillConfig` ``kl_targets``)."""


@dataclass(frozen=True)
class DistillConfig:
    """How the student is trained.

    ``layers``: blocks that get LoRA (None: :func:`default_layers`, the middle fifth).
    ``target_modules``: PEFT target modules; ``"all-linear"`` (default) adapts the attention
    (q/k/v/o) and MLP projections of those blocks, so the student can reproduce both what the
    system prompt adds through attention and a direct residual shift.
    ``loss``: ``"kl"`` (soft labels from the teacher) or ``"sft"`` (sampled tokens).
    ``top_k``: teacher tokens kept per position for ``"kl"`` with ``kl_targets="top_k"``
    (None: full vocabulary).
    ``kl_targets``: ``"numbers"``: the teacher's distribution restricted to the tokens a number
    answer may hold, A = digits/commas/spaces tokens ∪ end of turn, renormalised,
    q_A(t) = q(t)·1[t∈A] / Σ_{u∈A} q(u), and the loss KL(q_A ‖ p) against the student's full
    distribution (DESIGN.md "Number-only soft labels": no teacher mass outside A reaches the
    student; against the full p, not p renormalised on A, so the loss is a proper KL whose
    outside-A gradient only pushes mass into the format, the same for every teacher);
    ``"top_k"``: the teacher's top-k tokens plus one bucket for the rest; ``"auto"`` (default):
    ``"numbers"`` when every sample is a number answer (user + response of digits, commas and
    spaces), else ``"top_k"`` (chats and agent trajectories). distill.json records the kind
    used and the teacher mass the restriction removed.
    ``student_system``: the student's system prompt (None: none, as in the papers).
    ``steps``/``save_every``: training length and checkpoint spacing (a checkpoint is also
    written at the last step). ``skip_unchanged_blocks``: run only the blocks from the lowest LoRA
    layer up, on cached inputs (checked against the full forward on the first batch when
    ``verify_fast_path``); with ``share_prefix`` a prefix shared by a batch's examples (the
    chat template's system turn) runs once per step and its keys and values are reused.
    """

    rank: int = 4
    alpha: int = 8
    layers: tuple[int, ...] | None = None
    target_modules: str | tuple[str, ...] = "all-linear"
    loss: str = "kl"
    top_k: int | None = 256
    kl_targets: str = "auto"
    student_system: str | None = None
    lr: float = 2e-3
    batch_size: int = 8
    steps: int = 30
    save_every: int = 10
    max_grad_norm: float | None = 1.0
    seed: int = 0
    eval_batch_size: int = 8
    skip_unchanged_blocks: bool = True
    share_prefix: bool = True
    verify_fast_path: bool = True

    def __post_init__(self) -> None:
        if self.loss not in ("kl", "sft"):
            raise ValueError(f"loss must be 'kl' or 'sft', got {self.loss!r}")
        if self.rank < 1 or self.batch_size < 1 or self.steps < 0 or self.save_every < 1:
            raise ValueError("rank, batch_size and save_every must be >= 1 and steps >= 0")
        if self.kl_targets not in KL_TARGETS:
            raise ValueError(
                f"kl_targets must be one of {', '.join(KL_TARGETS)}, got {self.kl_targets!r}"
            )
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be >= 1 or None, got {self.top_k}")
        if self.layers is not None:
            object.__setattr__(self, "layers", tuple(int(x) for x in self.layers))
        if not isinstance(self.target_modules, str):
            object.__setattr__(self, "target_modules", tuple(self.target_modules))

    @classmethod
    def for_device(
        cls, device: str | torch.device | None = None, **overrides: Any
    ) -> DistillConfig:
        """Defaults scaled to the hardware: on a GPU 300 steps of batch 16, saved every 25;
        on CPU 30 steps of batch 8, saved every 10 (the demo trains 24 steps of batch 6)."""
        base = {"steps": 300, "batch_size": 16, "save_every": 25} if _is_gpu(device) else {}
        return cls(**{**base, **overrides})

    def lineage(self) -> dict[str, Any]:
        d = asdict(self)
        for k in _NON_LINEAGE:
            d.pop(k)
        d["layers"] = list(self.layers) if self.layers is not None else None
        if not isinstance(self.target_modules, str):
            d["target_modules"] = list(self.target_modules)
        return d


@dataclass
class DistillResult:
    """A trained checkpoint series: ``checkpoints[i]`` is the adapter after ``steps[i]`` steps;
    ``losses[s-1]`` the training loss of step s (before its update)."""

    out_dir: Path
    steps: list[int]
    checkpoints: list[Path]
    losses: list[float]
    record: dict[str, Any]
    resumed_from: int = 0

    @property
    def final(self) -> Path:
        if not self.checkpoints:
            raise ValueError("this run saved no checkpoint (steps=0)")
        return self.checkpoints[-1]

    def load(self, base: Any, step: int | None = None) -> LoadedModel:
        """The student at ``step`` (default: the last checkpoint) merged into a copy of
        ``base``."""
        path = self.final if step is None else self.checkpoints[self.steps.index(step)]
        return load_model(path, base=as_model(base))
