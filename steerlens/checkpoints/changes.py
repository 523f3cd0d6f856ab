"""Which blocks a checkpoint changed relative to the base (:func:`first_changed_block`), so
tracking runs only the blocks above."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn

from steerlens.checkpoints.checkpoint import (
    VOLATILE_CONFIG_KEYS,
    Checkpoint,
    check_safetensors_header,
    read_json,
)
from steerlens.checkpoints.series import adapter_tensor_names
from steerlens.loading.models import LoadedModel


def _block_index_fn(layout_path: str) -> Callable[[str], int | None]:
    """Map a tensor name to the decoder block it belongs to (None if outside the blocks)."""
    last = re.escape(layout_path.split(".")[-1])
    pat = re.compile(rf"(?:^|\.){last}\.(\d+)\.")

    def block_of(name: str) -> int | None:
        m = pat.search(name)
        return int(m.group(1)) if m else None

    return block_of


_FINAL_NORMS = (
    "model.norm",
    "transformer.ln_f",
    "gpt_neox.final_layer_norm",
    "decoder.final_layer_norm",
)


def _after_blocks_names(model: nn.Module) -> set[str]:
    """Parameter names used only after the decoder blocks (output head, final norm)."""
    names: set[str] = set()
    get_out = getattr(model, "get_output_embeddings", None)
    get_inp = getattr(model, "get_input_embeddings", None)
    out = get_out() if callable(get_out) else None
    inp = get_inp() if callable(get_inp) else None
    for mod_name, mod in model.named_modules():
        final_norm = mod_name.endswith(_FINAL_NORMS)
        is_head = out is not None and mod is out and out is not inp
        if final_norm or is_head:
            for pn, p in mod.named_parameters():
                if inp is not None and any(p is q for q in inp.parameters()):
                    continue  # tied to the input embedding: it matters
                names.add(f"{mod_name}.{pn}")
    return names


def first_changed_block(base: LoadedModel, ckpt: Checkpoint) -> int:
    """The lowest decoder block whose computation a checkpoint may change; every block below
    it (and the embeddings) is identical to the base, so their outputs can be computed once.

    Adapters: the lowest block holding an adapter tensor or named in ``layers_to_transform``
    (0 if an adapter touches anything outside the blocks but the output head, or if it is
    injected on every layer with a non-zero initialisation). Full checkpoints: tensors are compared with the
    base's, block by block, reading only as far as the first difference. Returns
    ``base.n_layers`` when nothing before the output head changes.
    """
    from peft import PeftModel

    if ckpt.kind == "base":
        return base.n_layers
    block_of = _block_index_fn(base.layout.path)
    inner = base.model.get_base_model() if isinstance(base.model, PeftModel) else base.model
    if ckpt.kind == "adapter":
        cfg = read_json(ckpt.path / "adapter_config.json")
        lowest = base.n_layers
        for name in adapter_tensor_names(ckpt):
            b = block_of(name)
            if b is None:
                if "lm_head" in name:
                    continue
                return 0
            lowest = min(lowest, b)
        chosen = cfg.get("layers_to_transform")
        if isinstance(chosen, int):
            chosen = [chosen]
        if chosen:
            return min(lowest, *[int(x) for x in chosen])
        if cfg.get("init_lora_weights", True) is not True:
            # adapters injected on every layer; ones missing from the file would keep a
            # non-zero initialisation, so assume every block may change
            return 0
        return lowest
    return _first_changed_full(inner, ckpt, block_of, base.n_layers)


_IGNORED_CONFIG_KEYS = (*VOLATILE_CONFIG_KEYS, "architectures", "use_cache", "output_attentions")


def _same_config(model: nn.Module, path: Path) -> bool:
    """Whether a checkpoint's config equals the model's, up to keys that change no numbers."""
    from transformers import AutoConfig

    cfg = getattr(model, "config", None)
    if cfg is None:
        return False
    try:
        other = AutoConfig.from_pretrained(path, local_files_only=True)
    except Exception:  # noqa: BLE001 - any unreadable config means 'not the same'
        return False
    a, b = cfg.to_diff_dict(), other.to_diff_dict()
    for d in (a, b):
        for k in _IGNORED_CONFIG_KEYS:
            d.pop(k, None)
    return bool(a == b)


def _first_changed_full(
    model: nn.Module, ckpt: Checkpoint, block_of: Callable[[str], int | None], n_layers: int
) -> int:
    files = ckpt.weight_files()
    if any(f.suffix != ".safetensors" for f in files):
        return 0  # .bin checkpoints: no lazy reads, assume everything may change
    if not _same_config(model, ckpt.path):
        return 0
    base_state = model.state_dict(keep_vars=True)
    after = _after_blocks_names(model)
    by_block: dict[int, list[tuple[Path, str]]] = {}
    outside: list[tuple[Path, str]] = []
    for f in files:
        for name in check_safetensors_header(f):
            b = block_of(name)
            (outside if b is None else by_block.setdefault(b, [])).append((f, name))

    def same(f: Path, name: str) -> bool:
        ref = base_state.get(name)
        if ref is None:
            return False
        with safe_open(str(f), framework="pt") as fh:
            t = fh.get_tensor(name)
        return t.shape == ref.shape and torch.equal(t.to(ref.dtype), ref.detach().cpu())

    for f, name in outside:
        if name not in after and not same(f, name):
            return 0
    for b in sorted(by_block):
        if not all(same(f, name) for f, name in by_block[b]):
            return b
        n_base = sum(1 for k in base_state if block_of(k) == b)
        if n_base != len(by_block[b]):
            return b
    return n_layers
