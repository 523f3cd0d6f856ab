"""The :class:`Teacher`: the base model plus a system prompt, a steering edit, an ablation or a
fine-tune (DESIGN.md "Words": teacher), with its lineage (:meth:`Teacher.describe`) and the
model to run as the teacher (:meth:`Teacher.apply`)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import torch

from steerlens.core.common import sha256_bytes, sha256_file
from steerlens.core.vectors import SteeringVector
from steerlens.loading.models import (
    LoadedModel,
    ModelLoadError,
    check_same_shape,
    check_saved_version,
    load_model,
)
from steerlens.runtime.intervene import steer_model

__all__ = ["TEACHER_KINDS", "Teacher", "TeacherKind", "as_teacher", "vector_sha256"]

TeacherKind = Literal["base", "prompt", "steer", "ablate", "finetuned"]
TEACHER_KINDS: tuple[str, ...] = get_args(TeacherKind)
_POSITIONS = ("all", "prompt", "generated")
# the files of a model or adapter folder whose bytes fix its weights (hashed into the lineage)
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".json", ".model", ".txt")


def vector_sha256(vector: SteeringVector) -> str:
    """sha256 of a vector's per-layer float32 directions (layer numbers and bytes, in order)."""
    h = hashlib.sha256()
    for layer, v in sorted(vector.directions.items()):
        h.update(f"layer.{layer}:".encode())
        h.update(v.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()


def _folder_files(path: Path) -> dict[str, str]:
    """sha256 of each weight/config file of a model or adapter folder, by file name."""
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in _WEIGHT_SUFFIXES)
    skip = {"steerlens_state.json", "trainer_state.json", "README.md"}
    return {p.name: sha256_file(p) for p in files if p.name not in skip}


@dataclass(frozen=True)
class Teacher:
    """What writes the teacher data and gives the soft labels: the base model plus

    - ``prompt``: a chat system prompt (``system``; today's teacher),
    - ``steer``: h ← h + α v at ``layers`` (default: the vector's layers) and ``positions``
      (DESIGN.md "Hook modes"), no system prompt unless ``system`` is given,
    - ``ablate``: h ← h − (h·v̂) v̂ after every block from ``layers[0]`` on, under ``system``
      (the vector's own direction at each of those layers where it has one, else its direction
      at ``layers[0]``),
    - ``finetuned``: a PEFT adapter folder or a full model folder of the same base
      (``model_path``), with ``system`` if given;

    ``base``: the base model as it is. Build one with the class methods; :func:`as_teacher`
    turns the old ``system=`` strings into a prompted teacher.
    """

    kind: TeacherKind
    system: str | None = None
    vector: SteeringVector | None = None
    alpha: float = 0.0
    layers: tuple[int, ...] | None = None
    positions: str = "all"
    model_path: Path | None = None

    def __post_init__(self) -> None:
        if self.kind not in TEACHER_KINDS:
            raise ValueError(f"unknown teacher kind {self.kind!r}: use one of {TEACHER_KINDS}")
        if self.positions not in _POSITIONS:
            raise ValueError(f"unknown positions {self.positions!r}: use one of {_POSITIONS}")
        if self.kind in ("steer", "ablate") and self.vector is None:
            raise ValueError(f"a {self.kind!r} teacher needs vector=: the direction to edit")
        if self.kind == "ablate" and not self.layers:
            raise ValueError("an 'ablate' teacher needs the layer it ablates from (from_layer)")
        if self.kind == "finetuned" and self.model_path is None:
            raise ValueError("a 'finetuned' teacher needs model_path=: an adapter or model folder")
        if self.kind == "prompt" and self.system is None:
            raise ValueError("a 'prompt' teacher needs system=: its system prompt")
        if self.layers is not None:
            object.__setattr__(self, "layers", tuple(int(x) for x in self.layers))
        if self.model_path is not None:
            object.__setattr__(self, "model_path", Path(self.model_path).expanduser())

    # ------------------------------------------------------------------ constructors
    @classmethod
    def base(cls) -> Teacher:
        """The base model, no system prompt, no edit."""
        return cls("base")

    @classmethod
    def prompted(cls, system: str) -> Teacher:
        """The base model with ``system`` as its system prompt."""
        if not isinstance(system, str):
            raise TypeError(f"system must be a string, got {type(system).__name__}")
        return cls("prompt", system=system)

    @classmethod
    def steered(
        cls,
        vector: SteeringVector,
        alpha: float,
        layers: int | tuple[int, ...] | list[int] | None = None,
        positions: str = "all",
        system: str | None = None,
    ) -> Teacher:
        """The base model with α·v added after the blocks ``layers`` (default: every layer of
        ``vector``); no system prompt unless ``system``."""
        lays = (layers,) if isinstance(layers, int) else layers
        return cls(
            "steer",
            system=system,
            vector=vector,
            alpha=float(alpha),
            layers=None if lays is None else tuple(lays),
            positions=positions,
        )

    @classmethod
    def ablated(cls, vector: SteeringVector, from_layer: int, system: str | None) -> Teacher:
        """The base model under ``system`` with v̂ projected out after every block from
        ``from_layer`` on."""
        return cls("ablate", system=system, vector=vector, layers=(int(from_layer),))

    @classmethod
    def finetuned(cls, path: str | Path, system: str | None = None) -> Teacher:
        """A fine-tune of the base: a PEFT adapter folder (merged into a copy of the base) or a
        full model folder with the base's shape and tokenizer."""
        p = Path(path).expanduser()
        if not p.is_dir():
            raise FileNotFoundError(
                f"no fine-tuned teacher at {p}: pass a PEFT adapter folder (adapter_config.json)"
                " or a model folder (config.json)"
            )
        if not ((p / "adapter_config.json").is_file() or (p / "config.json").is_file()):
            raise ValueError(
                f"{p} holds neither adapter_config.json nor config.json: not an adapter or "
                "model folder"
            )
        return cls("finetuned", system=system, model_path=p)

    # ------------------------------------------------------------------ lineage
    @property
    def name(self) -> str:
        """A short label: ``prompt``, ``steer(α=4, L=[12])``, ``ablate(L>=12)``, ..."""
        if self.kind == "steer":
            lays = list(self.layers) if self.layers else "v"
            return f"steer(α={self.alpha:g}, L={lays})"
        if self.kind == "ablate":
            assert self.layers is not None
            return f"ablate(L>={self.layers[0]})"
        if self.kind == "finetuned":
            assert self.model_path is not None
            return f"finetuned({self.model_path.name})"
        return self.kind

    def describe(self) -> dict[str, Any]:
        """The teacher's lineage as JSON values: kind, system prompt and its sha256, the
        vector's sha256 and layers, α, the edited layers, positions, and for a fine-tune its
        folder and the sha256 of each of its weight and config files."""
        v = self.vector
        files = None
        if self.model_path is not None:
            files = _folder_files(self.model_path) if self.model_path.is_dir() else {}
        return {
            "kind": self.kind,
            "name": self.name,
            "system": self.system,
            "system_sha256": None if self.system is None else sha256_bytes(self.system),
            "vector_sha256": None if v is None else vector_sha256(v),
            "vector_layers": None if v is None else v.layers,
            "vector_meta": None if v is None else _vector_meta(v),
            "alpha": self.alpha if self.kind == "steer" else None,
            "layers": None if self.layers is None else list(self.layers),
            "positions": self.positions if self.kind in ("steer", "ablate") else None,
            "model_path": None if self.model_path is None else str(self.model_path),
            "model_files": files,
        }

    def lineage(self) -> dict[str, Any]:
        """:meth:`describe` without what does not change the teacher's outputs (its label and
        the folder's location): what a resume or a cache key compares."""
        d = self.describe()
        for k in ("name", "model_path", "vector_meta"):
            d.pop(k)
        return d

    @classmethod
    def from_description(
        cls, desc: Mapping[str, Any], vector: SteeringVector | None = None
    ) -> Teacher:
        """The teacher a :meth:`describe` record names. A steered or ablated teacher needs its
        ``vector`` (checked against the recorded sha256); a fine-tune is re-read from its folder
        and its files checked against the recorded hashes."""
        kind = desc.get("kind")
        if kind not in TEACHER_KINDS:
            raise ValueError(f"not a teacher description (kind={kind!r}): {dict(desc)}")
        if desc.get("vector_sha256") is not None:
            if vector is None:
                raise ValueError(f"this {kind!r} teacher needs its vector: pass vector=")
            if vector_sha256(vector) != desc["vector_sha256"]:
                raise ValueError(
                    "the vector's sha256 differs from the recorded one: pass the vector the "
                    "teacher was built with"
                )
        path = desc.get("model_path")
        t = cls(
            kind,
            system=desc.get("system"),
            vector=vector if kind in ("steer", "ablate") else None,
            alpha=float(desc.get("alpha") or 0.0),
            layers=None if desc.get("layers") is None else tuple(desc["layers"]),
            positions=desc.get("positions") or "all",
            model_path=None if path is None else Path(path),
        )
        if t.model_path is not None and desc.get("model_files") is not None:
            now = _folder_files(t.model_path) if t.model_path.is_dir() else {}
            if now != desc["model_files"]:
                raise ValueError(
                    f"the files in {t.model_path} differ from the recorded ones (changed "
                    "since?): point model_path at the folder the teacher was recorded with"
                )
        return t

    # ------------------------------------------------------------------ running
    @contextmanager
    def apply(self, base: LoadedModel) -> Iterator[LoadedModel]:
        """The model to run as the teacher (its system prompt is the caller's to add:
        :attr:`system`). Edits are active only inside the ``with`` block and ``base`` is
        unchanged after; a fine-tune is loaded into a copy of ``base``."""
        if self.kind in ("base", "prompt"):
            yield base
        elif self.kind == "steer":
            assert self.vector is not None
            lays = None if self.layers is None else list(self.layers)
            with steer_model(
                base,
                self.vector,
                self.alpha,
                lays,
                "add",
                positions=self.positions,  # type: ignore[arg-type]
            ) as m:
                yield m
        elif self.kind == "ablate":
            dirs = self.ablation_directions(base.n_layers)
            with steer_model(
                base,
                dirs,
                1.0,
                sorted(dirs),
                "project_out",
                positions=self.positions,  # type: ignore[arg-type]
            ) as m:
                yield m
        else:
            yield self.load(base)

    def ablation_directions(self, n_layers: int) -> dict[int, torch.Tensor]:
        """{layer: direction} projected out by an ablated teacher of an ``n_layers`` model."""
        if self.kind != "ablate" or self.vector is None or not self.layers:
            raise ValueError("only an 'ablate' teacher has ablation directions")
        start = self.layers[0]
        if not 0 <= start < n_layers:
            raise ValueError(f"ablation layer {start} is out of range: blocks 0..{n_layers - 1}")
        dirs = self.vector.directions
        if start not in dirs:
            raise KeyError(f"the vector has no direction at layer {start}; it has {sorted(dirs)}")
        return {k: dirs.get(k, dirs[start]) for k in range(start, n_layers)}

    def load(self, base: LoadedModel) -> LoadedModel:
        """A fine-tuned teacher's model (adapter merged into a copy of ``base``, or the full
        model folder on ``base``'s device and dtype, with ``base``'s tokenizer)."""
        if self.model_path is None:
            raise ValueError(f"a {self.kind!r} teacher has no model folder to load")
        p = self.model_path
        if (p / "adapter_config.json").is_file():
            lm = load_model(p, base=base)
        else:
            lm = LoadedModel(_load_weights(p, base), base.tokenizer, p.name, str(p))
            check_same_shape(lm, base, ("fine-tuned teacher", "base"))
        vt = lm.model.get_input_embeddings().weight.shape[0]  # type: ignore[operator]
        vb = base.model.get_input_embeddings().weight.shape[0]  # type: ignore[operator]
        if vt != vb:
            raise ValueError(
                f"the fine-tuned teacher in {p} has {vt} token embeddings and the base {vb}: a "
                "teacher must share the base's tokenizer"
            )
        return lm


def _load_weights(folder: Path, base: LoadedModel) -> Any:
    """The model in a full model folder (its weights only: the teacher keeps the base's
    tokenizer), on ``base``'s device and dtype."""
    from transformers import AutoModelForCausalLM

    if not (folder / "config.json").is_file():
        raise ValueError(f"{folder} has no config.json: not a model folder")
    check_saved_version(folder)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            folder, dtype=base.dtype, local_files_only=True
        )
    except Exception as exc:
        raise ModelLoadError(f"could not load the fine-tuned teacher in {folder}: {exc}") from exc
    return model.to(base.device).eval()  # type: ignore[arg-type]


def _vector_meta(v: SteeringVector) -> dict[str, Any]:
    keep = ("name", "kind", "trait", "model", "model_fingerprint", "method")
    return json.loads(json.dumps({k: v.meta.get(k) for k in keep}, default=str))


def as_teacher(x: Teacher | str | None) -> Teacher:
    """A :class:`Teacher` from what the old API took: a system prompt (a prompted teacher),
    None (the base), or a teacher (itself)."""
    if isinstance(x, Teacher):
        return x
    if x is None:
        return Teacher.base()
    if isinstance(x, str):
        return Teacher.prompted(x)
    raise TypeError(
        f"a teacher is a Teacher, a system-prompt string or None, got {type(x).__name__}"
    )
