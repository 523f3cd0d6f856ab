"""SteeringVector: per-layer directions with the record of where they were read.

Saved as safetensors (one tensor ``layer.{ℓ}`` per layer) with the provenance as JSON in the
file's metadata, so a vector never travels without its model, site, position, method, prompt
hashes, seed and library version.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from steerlens.common import jsonable
from steerlens.results import html_table
from steerlens.sites import SITE_TEMPLATE
from steerlens.version import __version__

_META_KEY = "steerlens"


@dataclass(frozen=True)
class Provenance:
    """Where a vector was read, typed (a view of :attr:`SteeringVector.meta`, which keeps every
    key for JSON and for keys a caller adds): the model and its weights' fingerprint, the site
    (``blocks.{ℓ}.hook_resid_post``), the position set, the method, the seed, the hashes of the
    two prompt sets, what kind of contrast it is, and the steerlens version that read it."""

    model: str | None
    model_fingerprint: str | None
    site: str
    position: str | None
    method: str | None
    seed: int | None
    pos_prompts_hash: str | None
    neg_prompts_hash: str | None
    kind: str | None
    steerlens_version: str
    precision: dict[str, str] | None = None

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any]) -> Provenance:
        seed = meta.get("seed")
        return cls(
            model=meta.get("model"),
            model_fingerprint=meta.get("model_fingerprint"),
            site=str(meta.get("site", SITE_TEMPLATE)),
            position=meta.get("position"),
            method=meta.get("method"),
            seed=None if seed is None else int(seed),
            pos_prompts_hash=meta.get("pos_prompts_hash"),
            neg_prompts_hash=meta.get("neg_prompts_hash"),
            kind=meta.get("kind"),
            steerlens_version=str(meta.get("steerlens_version", __version__)),
            precision=meta.get("precision"),
        )


@dataclass
class SteeringVector:
    """Per-layer direction tensors (float32, shape (d,)) plus provenance metadata.

    ``meta`` holds at least: model, model_fingerprint, site, position, method, seed,
    prompt hashes and steerlens_version; ``diagnostics`` holds per-layer reliability numbers.
    """

    directions: dict[int, torch.Tensor]
    meta: dict[str, Any] = field(default_factory=dict)
    diagnostics: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.directions:
            raise ValueError("a SteeringVector needs at least one layer")
        dims = {int(v.shape[-1]) for v in self.directions.values()}
        if len(dims) != 1 or any(v.dim() != 1 for v in self.directions.values()):
            raise ValueError(f"all directions must be 1-D of one size, got sizes {sorted(dims)}")
        self.directions = {
            int(k): v.detach().to("cpu", torch.float32) for k, v in sorted(self.directions.items())
        }
        self.meta.setdefault("site", SITE_TEMPLATE)
        self.meta.setdefault("steerlens_version", __version__)

    @property
    def provenance(self) -> Provenance:
        """The typed record of where the vector was read (:class:`Provenance`)."""
        return Provenance.from_meta(self.meta)

    # ----------------------------------------------------------------------- access
    @property
    def layers(self) -> list[int]:
        return list(self.directions)

    @property
    def hidden_size(self) -> int:
        return int(next(iter(self.directions.values())).shape[0])

    def __getitem__(self, layer: int) -> torch.Tensor:
        try:
            return self.directions[layer]
        except KeyError:
            raise KeyError(
                f"this vector has no layer {layer}; it has layers {self.layers}"
            ) from None

    def __contains__(self, layer: object) -> bool:
        return layer in self.directions

    def __len__(self) -> int:
        return len(self.directions)

    def norms(self) -> dict[int, float]:
        return {k: float(v.norm()) for k, v in self.directions.items()}

    def select(self, layers: Iterable[int]) -> SteeringVector:
        return SteeringVector({k: self[k] for k in layers}, dict(self.meta), dict(self.diagnostics))

    def __repr__(self) -> str:
        norms = ", ".join(f"{k}: {n:.3g}" for k, n in list(self.norms().items())[:6])
        more = "" if len(self) <= 6 else f", … ({len(self)} layers)"
        return (
            f"SteeringVector(method={self.meta.get('method')!r}, model={self.meta.get('model')!r}, "
            f"d={self.hidden_size}, norms={{{norms}{more}}})"
        )

    # ------------------------------------------------------------------- arithmetic
    def _binary(self, other: SteeringVector, op: Any, name: str) -> SteeringVector:
        common = [k for k in self.layers if k in other.directions]
        if not common:
            raise ValueError("the two vectors share no layer")
        if other.hidden_size != self.hidden_size:
            raise ValueError(f"hidden size mismatch: {self.hidden_size} vs {other.hidden_size}")
        meta = {"method": name, "operands": [self.meta, other.meta], "site": self.meta["site"]}
        for key in ("model", "model_fingerprint", "position"):
            if self.meta.get(key) == other.meta.get(key):
                meta[key] = self.meta.get(key)
        return SteeringVector({k: op(self[k], other[k]) for k in common}, meta)

    def __add__(self, other: SteeringVector) -> SteeringVector:
        return self._binary(other, torch.add, "sum")

    def __sub__(self, other: SteeringVector) -> SteeringVector:
        return self._binary(other, torch.sub, "difference")

    def __mul__(self, alpha: float) -> SteeringVector:
        meta = dict(self.meta, scale=float(alpha) * float(self.meta.get("scale", 1.0)))
        return SteeringVector({k: v * alpha for k, v in self.directions.items()}, meta)

    __rmul__ = __mul__

    def __neg__(self) -> SteeringVector:
        return self * -1.0

    def __truediv__(self, alpha: float) -> SteeringVector:
        return self * (1.0 / alpha)

    def normalize(self) -> SteeringVector:
        """Unit norm at every layer."""
        out = {}
        for k, v in self.directions.items():
            n = v.norm()
            if n == 0:
                raise ValueError(f"layer {k} has a zero vector, which cannot be normalised")
            out[k] = v / n
        return SteeringVector(out, dict(self.meta, normalized=True), dict(self.diagnostics))

    def cosine(self, other: SteeringVector | Mapping[int, torch.Tensor]) -> dict[int, float]:
        """Per-layer cosine similarity over the layers both have."""
        dirs = other.directions if isinstance(other, SteeringVector) else other
        return {k: cosine(v, dirs[k]) for k, v in self.directions.items() if k in dirs}

    # ------------------------------------------------------------------------- I/O
    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write safetensors with provenance and diagnostics in the JSON metadata."""
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        tensors = {f"layer.{k}": v.contiguous() for k, v in self.directions.items()}
        blob = json.dumps(jsonable({"meta": self.meta, "diagnostics": self.diagnostics}))
        save_file(tensors, str(p), metadata={_META_KEY: blob})
        return p

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> SteeringVector:
        from safetensors import safe_open

        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"no steering vector at {p}")
        try:
            tensors = load_file(str(p))
            with safe_open(str(p), framework="pt") as f:
                md = f.metadata() or {}
        except Exception as exc:
            raise ValueError(f"{p} is not a readable safetensors file: {exc}") from exc
        blob = json.loads(md.get(_META_KEY, "{}"))
        dirs = {}
        for name, t in tensors.items():
            if not name.startswith("layer."):
                raise ValueError(f"{p}: unexpected tensor {name!r}; not a steerlens vector")
            dirs[int(name.split(".", 1)[1])] = t
        return cls(dirs, blob.get("meta", {}), blob.get("diagnostics", {}))

    def to_json(self) -> dict[str, Any]:
        """Provenance, per-layer norms and diagnostics as JSON values (the tensors themselves
        travel in the safetensors file of :meth:`save`)."""
        return {
            "meta": jsonable(self.meta),
            "norms": self.norms(),
            "diagnostics": jsonable(self.diagnostics),
        }

    def _layer_rows(self) -> list[list[Any]]:
        split = self.diagnostics.get("split_half", {})
        agree = self.diagnostics.get("agreement", {})
        rows = []
        for k, n in self.norms().items():
            sh = split.get(k, split.get(str(k), {}))
            ag = agree.get(k, agree.get(str(k), {}))
            rel = sh.get("mean") if isinstance(sh, Mapping) else None
            mp = ag.get("mean~pca") if isinstance(ag, Mapping) else None
            rows.append([k, n, rel, mp])
        return rows

    def summary(self) -> str:
        """Plain words: what the vector is, where it was read, and its per-layer numbers."""
        pv = self.provenance
        rows = self._layer_rows()
        lines = [
            f"steering vector ({pv.method or 'unknown method'}, {pv.kind or 'contrast'}) of "
            f"{pv.model or 'an unnamed model'} at {pv.site}, position {pv.position}, "
            f"{len(self)} layer(s), d={self.hidden_size}",
        ]
        for k, n, rel, mp in rows[:8]:
            extra = "" if rel is None else f", split-half reliability {rel:.3f}"
            extra += "" if mp is None else f", mean~pca cosine {mp:.3f}"
            lines.append(f"  layer {k}: norm {n:.3g}{extra}")
        if len(rows) > 8:
            lines.append(f"  … {len(rows) - 8} more layers")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        head = self.summary().splitlines()[0]
        table = html_table(
            ["layer", "norm", "split-half reliability", "mean~pca cosine"], self._layer_rows()
        )
        return f"<div class='steerlens-result'><b>{head}</b>{table}</div>"


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """cos(a, b) = a·b / (‖a‖‖b‖), in float64; 0 where either is zero."""
    a64, b64 = a.double().reshape(-1), b.double().reshape(-1)
    den = float(a64.norm() * b64.norm())
    return 0.0 if den == 0.0 else float(a64 @ b64) / den
