"""A checkpoint series (:class:`CheckpointSeries`) and its loader (:class:`SeriesLoader`): one
checkpoint at a time over one in-memory base (PEFT adapters swapped onto it, full checkpoints
loaded into one reused copy), the base restored exactly on exit."""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from safetensors.torch import load_file
from torch import nn

from steerlens.checkpoints.checkpoint import (
    CHECKPOINT_DIR_RE,
    VOLATILE_CONFIG_KEYS,
    Checkpoint,
    check_safetensors_header,
    classify,
    fix_hint,
    read_json,
    step_of_single,
    validate,
)
from steerlens.core.precision import mark_autocast
from steerlens.core.results import Record
from steerlens.loading.models import LoadedModel, ModelLoadError, as_model, check_saved_version


@dataclass
class CheckpointSeries(Record):
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
            if p.is_dir() and (m := CHECKPOINT_DIR_RE.match(p.name))
        )
        _check_names(root, subs, on_error)
        if subs:
            for step, sub in subs:
                kind = classify(sub)
                if kind is None:
                    msg = (
                        f"{sub} is neither a model folder (config.json) nor a PEFT adapter "
                        f"(adapter_config.json). {fix_hint(sub)}"
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
            found.append(Checkpoint(step_of_single(root), root, kind))
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

    def summary(self) -> str:
        return (
            f"checkpoint series {self.path}: steps {self.steps} ({', '.join(sorted(self.kinds))})"
        )

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


def _check_names(root: Path, subs: list[tuple[int, Path]], on_error: str) -> None:
    """Refuse two folders for one step (``checkpoint-02`` beside ``checkpoint-2``), and a
    ``checkpoint-<name>`` model folder whose name gives no step (``checkpoint-final``), which
    would otherwise be left out in silence (a warning instead with ``on_error='skip'``)."""
    by_step: dict[int, list[str]] = {}
    for step, sub in subs:
        by_step.setdefault(step, []).append(sub.name)
    dup = {k: v for k, v in by_step.items() if len(v) > 1}
    if dup:
        step, names = next(iter(dup.items()))
        raise ModelLoadError(
            f"{root} has {len(names)} folders for step {step} ({', '.join(names)}): keep one, "
            "named checkpoint-N with N the step"
        )
    for p in sorted(root.glob("checkpoint-*")):
        if CHECKPOINT_DIR_RE.match(p.name) or p.name.endswith(".tmp") or not p.is_dir():
            continue
        if classify(p) is None:
            continue
        msg = (
            f"{p} holds a checkpoint but its name gives no training step: rename it "
            "checkpoint-N (N its step), or move it out of the series folder"
        )
        if on_error == "skip":
            warnings.warn(msg, stacklevel=3)
        else:
            raise ModelLoadError(msg)


def adapter_tensor_names(ckpt: Checkpoint) -> list[str]:
    """Names of the tensors in a PEFT adapter checkpoint (header read only)."""
    names: list[str] = []
    for f in ckpt.weight_files():
        if f.suffix == ".safetensors":
            names += check_safetensors_header(f)
        else:
            state = torch.load(f, map_location="cpu", weights_only=True)
            names += list(state)
    return names


def read_state_dict(ckpt: Checkpoint) -> dict[str, torch.Tensor]:
    """All tensors of a full checkpoint (safetensors or .bin, sharded or not), on CPU."""
    state: dict[str, torch.Tensor] = {}
    for f in ckpt.weight_files():
        try:
            if f.suffix == ".safetensors":
                state.update(load_file(str(f)))
            else:
                state.update(torch.load(f, map_location="cpu", weights_only=True))
        except Exception as exc:
            raise ModelLoadError(
                f"could not read weights {f} ({type(exc).__name__}: {exc}). {fix_hint(ckpt.path)}"
            ) from exc
    return state


def _config_key(path: Path) -> str:
    cfg = read_json(path / "config.json")
    for k in VOLATILE_CONFIG_KEYS:
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
        _check_finite(_adapter_tensors(ckpt), ckpt.path)
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
                f"base model. {fix_hint(ckpt.path)}"
            ) from exc
        self._active = name
        self._peft.eval()
        return LoadedModel(
            self._peft,
            self.base.tokenizer,
            f"{self.base.name}+{ckpt.name}",
            str(ckpt.path),
            self.base.layers_path,
            precision=self.base.precision,
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
                    f"{exc}). {fix_hint(ckpt.path)}"
                ) from exc
            _check_shape(self.base, model, ckpt.path)
            _check_finite(model.state_dict().items(), ckpt.path)
            self._full = model.eval()
            self._full.to(self.base.device)
            self._full_key = key
        else:
            state = read_state_dict(ckpt)
            _check_finite(state.items(), ckpt.path)
            _load_into(self._full, state, ckpt.path)
        mark_autocast(self._full, self.base.compute_precision.autocast)
        return LoadedModel(
            self._full,
            self.base.tokenizer,
            f"{self.base.name}@{ckpt.name}",
            str(ckpt.path),
            self.base.layers_path,
            precision=self.base.precision,
        )

    def close(self) -> None:
        self._drop_adapters()
        self._full = None
        self._full_key = None


def _adapter_tensors(ckpt: Checkpoint) -> list[tuple[str, torch.Tensor]]:
    out: list[tuple[str, torch.Tensor]] = []
    for f in ckpt.weight_files():
        try:
            if f.suffix == ".safetensors":
                out += list(load_file(str(f)).items())
            else:
                out += list(torch.load(f, map_location="cpu", weights_only=True).items())
        except Exception as exc:
            raise ModelLoadError(
                f"could not read weights {f} ({type(exc).__name__}: {exc}). {fix_hint(ckpt.path)}"
            ) from exc
    return out


def _check_finite(tensors: Any, path: Path) -> None:
    """Refuse a checkpoint whose weights hold NaN or inf, naming it and the first bad tensor."""
    for name, t in tensors:
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise ModelLoadError(
                f"checkpoint {path} has NaN or inf weights (first: {name}): the training "
                f"diverged or the file is damaged. {fix_hint(path)}"
            )


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
            f"{path} has weights this model does not ({sorted(unexpected)[:5]}…). {fix_hint(path)}"
        )
    if missing:
        params = dict(model.named_parameters(remove_duplicate=False))
        loaded_ptrs = {params[k].data_ptr() for k in state if k in params}
        untied = [k for k in missing if k not in params or params[k].data_ptr() not in loaded_ptrs]
        if untied:
            raise ModelLoadError(
                f"{path} lacks weights {untied[:5]}: an incomplete checkpoint. {fix_hint(path)}"
            )


# --------------------------------------------------------------- which blocks can change
