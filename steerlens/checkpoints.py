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
"""

from __future__ import annotations

import hashlib
import json
import re
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from steerlens.models import LoadedModel, ModelLoadError, as_model, check_saved_version

CheckpointKind = Literal["full", "adapter", "base"]
_CKPT_RE = re.compile(r"^checkpoint-(\d+)$")
_FULL_WEIGHTS = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
_ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
# Config keys that do not change the computation (ignored when deciding to reuse a model copy).
_VOLATILE_CONFIG_KEYS = ("transformers_version", "_name_or_path", "torch_dtype", "dtype")


def _fix_hint(path: Path) -> str:
    return (
        f"Re-save it (trainer.save_model / model.save_pretrained), or move {path} out of the "
        "series folder to skip it (CheckpointSeries.discover(..., on_error='skip') skips it "
        "with a warning)"
    )


@dataclass(frozen=True)
class Checkpoint:
    """One member of a series: its training step, folder and kind."""

    step: int
    path: Path
    kind: CheckpointKind

    @property
    def name(self) -> str:
        return "base" if self.kind == "base" else f"checkpoint-{self.step}"

    def weight_files(self) -> list[Path]:
        """The files holding this checkpoint's weights (shards resolved from an index)."""
        if self.kind == "base":
            return []
        names = _ADAPTER_WEIGHTS if self.kind == "adapter" else _FULL_WEIGHTS
        for name in names:
            f = self.path / name
            if not f.is_file():
                continue
            if name.endswith(".index.json"):
                index = _read_json(f)
                shards = sorted(set(index.get("weight_map", {}).values()))
                if not shards:
                    raise ModelLoadError(f"{f} lists no weight shards. {_fix_hint(self.path)}")
                return [self.path / s for s in shards]
            return [f]
        raise ModelLoadError(
            f"checkpoint {self.path} has no weights file (looked for {', '.join(names)}). "
            f"{_fix_hint(self.path)}"
        )

    def signature(self) -> str:
        """A content key: sha256 over the resolved path and each config/weight file's name,
        size and modification time (cheap; a re-saved checkpoint gets a new key)."""
        if self.kind == "base":
            return "base"
        h = hashlib.sha256(str(self.path.resolve()).encode())
        cfg = "adapter_config.json" if self.kind == "adapter" else "config.json"
        for f in [self.path / cfg, *self.weight_files()]:
            st = f.stat()
            h.update(f"{f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
        return h.hexdigest()[:16]


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelLoadError(
            f"unreadable {path.name} in {path.parent}: {exc}. {_fix_hint(path.parent)}"
        ) from exc
    if not isinstance(data, dict):
        raise ModelLoadError(f"{path} is not a JSON object. {_fix_hint(path.parent)}")
    return data


def _check_safetensors_header(path: Path) -> list[str]:
    """Read only the header of a safetensors file (detects truncation); return tensor names."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return list(f.keys())
    except Exception as exc:
        raise ModelLoadError(
            f"corrupt or truncated weights file {path} ({type(exc).__name__}: {exc}). "
            f"{_fix_hint(path.parent)}"
        ) from exc


def classify(path: Path) -> CheckpointKind | None:
    """``adapter`` if ``path`` holds adapter_config.json, ``full`` if config.json, else None."""
    if (path / "adapter_config.json").is_file():
        return "adapter"
    if (path / "config.json").is_file():
        return "full"
    return None


def validate(ckpt: Checkpoint) -> None:
    """Cheap integrity check: configs parse, weight files exist, safetensors headers are whole.
    Raises :class:`ModelLoadError` naming the folder and the fix."""
    if ckpt.kind == "base":
        return
    _read_json(ckpt.path / ("adapter_config.json" if ckpt.kind == "adapter" else "config.json"))
    for f in ckpt.weight_files():
        if not f.is_file():
            raise ModelLoadError(f"missing weight shard {f}. {_fix_hint(ckpt.path)}")
        if f.suffix == ".safetensors":
            _check_safetensors_header(f)
        elif f.stat().st_size == 0:
            raise ModelLoadError(f"empty weights file {f}. {_fix_hint(ckpt.path)}")


def _step_of_single(path: Path) -> int:
    m = _CKPT_RE.match(path.name)
    if m:
        return int(m.group(1))
    state = path / "trainer_state.json"
    if state.is_file():
        try:
            return int(json.loads(state.read_text()).get("global_step", 1))
        except (OSError, ValueError, TypeError):
            pass
    return 1


@dataclass
class CheckpointSeries:
    """The checkpoints of one training run, ordered by step (step 0, the base, is implicit:
    :meth:`open`'s loader returns the base for step 0 unless a ``checkpoint-0`` folder exists)."""

    path: Path
    checkpoints: list[Checkpoint] = field(default_factory=list)

    @classmethod
    def discover(
        cls, path: str | Path, *, on_error: Literal["raise", "skip"] = "raise"
    ) -> CheckpointSeries:
        """Find the ``checkpoint-N`` subfolders of ``path`` (ordered by N), or treat ``path``
        itself as a single model/adapter. Each is validated cheaply (configs parse, safetensors
        headers whole); a bad one raises :class:`ModelLoadError`, or is skipped with a warning
        when ``on_error='skip'``."""
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        root = Path(path).expanduser()
        if not root.is_dir():
            raise ModelLoadError(
                f"checkpoint series folder {root} does not exist or is not a folder: pass the "
                "training output folder holding checkpoint-N subfolders (or one model folder)"
            )
        found: list[Checkpoint] = []
        subs = sorted(
            (int(m.group(1)), p)
            for p in root.iterdir()
            if p.is_dir() and (m := _CKPT_RE.match(p.name))
        )
        if subs:
            for step, sub in subs:
                kind = classify(sub)
                if kind is None:
                    msg = (
                        f"{sub} is neither a model folder (config.json) nor a PEFT adapter "
                        f"(adapter_config.json). {_fix_hint(sub)}"
                    )
                    if on_error == "skip":
                        warnings.warn(msg, stacklevel=2)
                        continue
                    raise ModelLoadError(msg)
                found.append(Checkpoint(step, sub, kind))
        else:
            kind = classify(root)
            if kind is None:
                raise ModelLoadError(
                    f"{root} holds no checkpoint-N subfolders and is not itself a model folder "
                    "(config.json) or a PEFT adapter (adapter_config.json): pass the folder "
                    "your trainer wrote checkpoints into"
                )
            found.append(Checkpoint(_step_of_single(root), root, kind))
        good: list[Checkpoint] = []
        for ck in found:
            try:
                validate(ck)
            except ModelLoadError as exc:
                if on_error == "skip":
                    warnings.warn(f"skipping {ck.path}: {exc}", stacklevel=2)
                    continue
                raise
            good.append(ck)
        if not good:
            raise ModelLoadError(f"no usable checkpoints in {root}")
        return cls(root, good)

    @classmethod
    def from_paths(
        cls, paths: Sequence[str | Path], steps: Sequence[int] | None = None
    ) -> CheckpointSeries:
        """A series from explicit checkpoint folders (steps default to their order, 1, 2, …)."""
        if steps is not None and len(steps) != len(paths):
            raise ValueError(f"got {len(paths)} paths but {len(steps)} steps")
        cks = []
        for i, p in enumerate(paths):
            folder = Path(p).expanduser()
            kind = classify(folder)
            if kind is None:
                raise ModelLoadError(
                    f"{folder} is neither a model folder (config.json) nor a PEFT adapter "
                    "(adapter_config.json)"
                )
            ck = Checkpoint(int(steps[i]) if steps is not None else i + 1, folder, kind)
            validate(ck)
            cks.append(ck)
        cks.sort(key=lambda c: c.step)
        root = Path(paths[0]).expanduser().parent if paths else Path(".")
        return cls(root, cks)

    # ------------------------------------------------------------------------- access
    @property
    def steps(self) -> list[int]:
        return [c.step for c in self.checkpoints]

    @property
    def kinds(self) -> set[str]:
        return {c.kind for c in self.checkpoints}

    def __len__(self) -> int:
        return len(self.checkpoints)

    def __iter__(self) -> Iterator[Checkpoint]:
        return iter(self.checkpoints)

    def __getitem__(self, i: int) -> Checkpoint:
        return self.checkpoints[i]

    def by_step(self, step: int) -> Checkpoint:
        for c in self.checkpoints:
            if c.step == step:
                return c
        if step == 0:
            return Checkpoint(0, self.path, "base")
        raise KeyError(f"no checkpoint at step {step}; steps are {self.steps}")

    def to_json(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "checkpoints": [
                {"step": c.step, "path": str(c.path), "kind": c.kind} for c in self.checkpoints
            ],
        }

    @contextmanager
    def open(self, base: Any) -> Iterator[SeriesLoader]:
        """Yield a loader ``load(checkpoint | step) -> LoadedModel`` over the in-memory
        ``base``. Only the most recently loaded checkpoint is valid; the base is restored
        exactly on exit (also after an exception)."""
        loader = SeriesLoader(as_model(base))
        try:
            yield loader
        finally:
            loader.close()


def adapter_tensor_names(ckpt: Checkpoint) -> list[str]:
    """Names of the tensors in a PEFT adapter checkpoint (header read only)."""
    names: list[str] = []
    for f in ckpt.weight_files():
        if f.suffix == ".safetensors":
            names += _check_safetensors_header(f)
        else:
            state = torch.load(f, map_location="cpu", weights_only=True)
            names += list(state)
    return names


def read_state_dict(ckpt: Checkpoint) -> dict[str, torch.Tensor]:
    """All tensors of a full checkpoint (safetensors or .bin, sharded or not), on CPU."""
    from safetensors.torch import load_file

    state: dict[str, torch.Tensor] = {}
    for f in ckpt.weight_files():
        try:
            if f.suffix == ".safetensors":
                state.update(load_file(str(f)))
            else:
                state.update(torch.load(f, map_location="cpu", weights_only=True))
        except Exception as exc:
            raise ModelLoadError(
                f"could not read weights {f} ({type(exc).__name__}: {exc}). {_fix_hint(ckpt.path)}"
            ) from exc
    return state


def _config_key(path: Path) -> str:
    cfg = _read_json(path / "config.json")
    for k in _VOLATILE_CONFIG_KEYS:
        cfg.pop(k, None)
    return json.dumps(cfg, sort_keys=True)


class SeriesLoader:
    """Loads checkpoints over one base (see :meth:`CheckpointSeries.open`). Call it with a
    :class:`Checkpoint` (or ``0`` for the base)."""

    def __init__(self, base: LoadedModel) -> None:
        from peft import PeftModel

        if isinstance(base.model, PeftModel):
            raise ValueError(
                "the base model is already a PeftModel: pass the plain base model (e.g. "
                "peft_model.unload() or load it without the adapter)"
            )
        self.base = base
        self._grad = {n: p.requires_grad for n, p in base.model.named_parameters()}
        self._training = {n: m.training for n, m in base.model.named_modules()}
        self._peft: Any = None
        self._active: str | None = None
        self._full: nn.Module | None = None
        self._full_key: str | None = None
        self.loads = 0

    def __call__(self, ckpt: Checkpoint | int) -> LoadedModel:
        if isinstance(ckpt, int):
            if ckpt != 0:
                raise ValueError("pass a Checkpoint, or 0 for the base model")
            ckpt = Checkpoint(0, Path(self.base.source or "."), "base")
        self.loads += 1
        if ckpt.kind == "base":
            self._drop_adapters()
            return self.base
        if ckpt.kind == "adapter":
            return self._load_adapter(ckpt)
        return self._load_full(ckpt)

    # --------------------------------------------------------------------- adapters
    def _load_adapter(self, ckpt: Checkpoint) -> LoadedModel:
        from peft import PeftModel

        name = f"steerlens_step{ckpt.step}_{ckpt.signature()[:8]}"
        try:
            if self._peft is None:
                self._peft = PeftModel.from_pretrained(
                    self.base.model, str(ckpt.path), adapter_name=name, is_trainable=False
                )
            else:
                self._peft.load_adapter(str(ckpt.path), adapter_name=name, is_trainable=False)
                self._peft.set_adapter(name)
                if self._active is not None and self._active != name:
                    self._peft.delete_adapter(self._active)
        except Exception as exc:
            raise ModelLoadError(
                f"could not load the PEFT adapter in {ckpt.path} onto {self.base.name} "
                f"({type(exc).__name__}: {exc}). Check that the adapter was trained on this "
                f"base model. {_fix_hint(ckpt.path)}"
            ) from exc
        self._active = name
        self._peft.eval()
        return LoadedModel(
            self._peft,
            self.base.tokenizer,
            f"{self.base.name}+{ckpt.name}",
            str(ckpt.path),
            self.base.layers_path,
        )

    def _drop_adapters(self) -> None:
        if self._peft is not None:
            self._peft.unload()
            self._peft = None
            self._active = None
        self._restore_flags()

    def _restore_flags(self) -> None:
        for n, p in self.base.model.named_parameters():
            if n in self._grad:
                p.requires_grad_(self._grad[n])
        for n, m in self.base.model.named_modules():
            if n in self._training:
                m.training = self._training[n]

    # ------------------------------------------------------------------------- full
    def _load_full(self, ckpt: Checkpoint) -> LoadedModel:
        from transformers import AutoModelForCausalLM

        self._drop_adapters()
        check_saved_version(ckpt.path)
        key = _config_key(ckpt.path)
        if self._full is None or key != self._full_key:
            self._full = None
            try:
                model = AutoModelForCausalLM.from_pretrained(
                    ckpt.path, dtype=self.base.dtype, local_files_only=True
                )
            except Exception as exc:
                raise ModelLoadError(
                    f"could not load the checkpoint in {ckpt.path} ({type(exc).__name__}: "
                    f"{exc}). {_fix_hint(ckpt.path)}"
                ) from exc
            _check_shape(self.base, model, ckpt.path)
            self._full = model.eval()
            self._full.to(self.base.device)
            self._full_key = key
        else:
            _load_into(self._full, read_state_dict(ckpt), ckpt.path)
        return LoadedModel(
            self._full,
            self.base.tokenizer,
            f"{self.base.name}@{ckpt.name}",
            str(ckpt.path),
            self.base.layers_path,
        )

    def close(self) -> None:
        self._drop_adapters()
        self._full = None
        self._full_key = None


def _check_shape(base: LoadedModel, model: nn.Module, path: Path) -> None:
    lm = LoadedModel(model, base.tokenizer, str(path), str(path), base.layers_path)
    if (lm.hidden_size, lm.n_layers) != (base.hidden_size, base.n_layers):
        raise ModelLoadError(
            f"the checkpoint in {path} has hidden size {lm.hidden_size} and {lm.n_layers} "
            f"blocks, but the base {base.name} has {base.hidden_size} and {base.n_layers}: "
            "pass the base model this series was trained from"
        )


def _load_into(model: nn.Module, state: dict[str, torch.Tensor], path: Path) -> None:
    """Copy ``state`` into ``model`` in place; missing keys are allowed only for tied weights."""
    with torch.no_grad():
        missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected:
        raise ModelLoadError(
            f"{path} has weights this model does not ({sorted(unexpected)[:5]}…). {_fix_hint(path)}"
        )
    if missing:
        params = dict(model.named_parameters(remove_duplicate=False))
        loaded_ptrs = {params[k].data_ptr() for k in state if k in params}
        untied = [k for k in missing if k not in params or params[k].data_ptr() not in loaded_ptrs]
        if untied:
            raise ModelLoadError(
                f"{path} lacks weights {untied[:5]}: an incomplete checkpoint. {_fix_hint(path)}"
            )


# --------------------------------------------------------------- which blocks can change


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
        cfg = _read_json(ckpt.path / "adapter_config.json")
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


_IGNORED_CONFIG_KEYS = (*_VOLATILE_CONFIG_KEYS, "architectures", "use_cache", "output_attentions")


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
    from safetensors import safe_open

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
        for name in _check_safetensors_header(f):
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
