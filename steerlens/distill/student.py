"""The LoRA student: a deep copy of the base with LoRA on the chosen blocks."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from steerlens.distill.config import DistillConfig, DistillError, rng_devices
from steerlens.loading.models import LoadedModel

__all__ = ["inner_hf", "make_student"]


def _layers_pattern(lm: LoadedModel) -> str:
    return lm.layout.path.split(".")[-1]


def make_student(lm: LoadedModel, cfg: DistillConfig, layers: list[int]) -> Any:
    """A deep copy of the base with LoRA on ``layers``; LoRA init seeded with ``cfg.seed``."""
    from peft import LoraConfig, get_peft_model

    hf = copy.deepcopy(lm.model)
    target = _target_modules(lm, cfg.target_modules, layers)
    lcfg = LoraConfig(
        r=cfg.rank,
        lora_alpha=cfg.alpha,
        lora_dropout=0.0,
        target_modules=target,
        layers_to_transform=list(layers),
        layers_pattern=_layers_pattern(lm),
        bias="none",
        task_type="CAUSAL_LM",
        fan_in_fan_out=_uses_conv1d(lm, layers),
    )
    with torch.random.fork_rng(devices=rng_devices(lm.device)):
        torch.manual_seed(cfg.seed)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
            student = get_peft_model(hf, lcfg)
    student.eval()
    if not any(p.requires_grad for p in student.parameters()):
        raise DistillError(f"no LoRA parameter was created for target_modules={target!r}")
    for p in student.parameters():
        if p.requires_grad and p.dtype != torch.float32:
            p.data = p.data.float()  # float32 master weights under a bfloat16 base
    lora_layers = _lora_layer_ids(student, lm)
    if lora_layers != set(layers):
        raise DistillError(
            f"LoRA landed on blocks {sorted(lora_layers)} instead of {layers}: check "
            "target_modules and the model's layer naming"
        )
    return student


def _target_modules(
    lm: LoadedModel, spec: str | tuple[str, ...], layers: Sequence[int]
) -> list[str]:
    """Module names for PEFT: ``"all-linear"`` becomes the names of every linear layer
    (``nn.Linear`` or GPT-2's ``Conv1D``) inside the chosen blocks."""
    if not isinstance(spec, str):
        return list(spec)
    if spec != "all-linear":
        return [spec]
    from transformers.pytorch_utils import Conv1D

    names: set[str] = set()
    for layer in layers:
        for name, mod in lm.layout.blocks[layer].named_modules():
            if name and isinstance(mod, (nn.Linear, Conv1D)):
                names.add(name.split(".")[-1])
    if not names:
        raise DistillError(f"blocks {list(layers)} contain no linear layer to adapt")
    return sorted(names)


def _uses_conv1d(lm: LoadedModel, layers: Sequence[int]) -> bool:
    """GPT-2 style blocks store linear weights transposed (``Conv1D``): PEFT needs to know."""
    from transformers.pytorch_utils import Conv1D

    return any(isinstance(m, Conv1D) for i in layers for m in lm.layout.blocks[i].modules())


def _lora_layer_ids(student: nn.Module, lm: LoadedModel) -> set[int]:
    pat = f".{_layers_pattern(lm)}."
    out = set()
    for name, p in student.named_parameters():
        if p.requires_grad and pat in name:
            out.add(int(name.split(pat, 1)[1].split(".", 1)[0]))
    return out


def inner_hf(student: Any) -> nn.Module:
    """The HF ``*ForCausalLM`` inside a PEFT model (LoRA layers injected in place)."""
    return student.base_model.model
