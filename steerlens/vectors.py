"""SteeringVector: per-layer directions with the record of where they were read.

Saved as safetensors (one tensor ``layer.{ℓ}`` per layer) with the provenance as JSON in the
file's metadata, so a vector never travels without its model, site, position, method, prompt
hashes, seed and library version. ``save("v.gguf")`` writes llama.cpp's control-vector GGUF
instead, :meth:`SteeringVector.save_pretrained` a hub-style folder, and ``to_repeng`` /
``to_steering_vectors`` (and ``from_*``) convert to the objects of those libraries (see
:mod:`steerlens.core.vector_formats` for the layouts and layer numbering).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

import steerlens.core.vector_formats as fmt
from steerlens.core.common import atomic_write_text, jsonable, write_json
from steerlens.core.plots import lines_with_bands
from steerlens.core.results import FORMAT_VERSION, Record, html_table, result_html
from steerlens.core.sites import SITE_TEMPLATE
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


ZERO_NORM_ATOL = 1e-12
"""A direction whose norm is at most this is zero (it edits nothing)."""
ZERO_NORM_RTOL = 1e-8
"""A direction whose norm is below this fraction of the vector's largest layer norm is
negligible: adding it (at any sensible α) edits nothing a float32 forward can see."""


def zero_layers(directions: Mapping[int, torch.Tensor]) -> list[int]:
    """The layers of ``directions`` whose direction is zero or negligible (see
    :data:`ZERO_NORM_ATOL`, :data:`ZERO_NORM_RTOL`)."""
    norms = {k: float(v.detach().double().norm()) for k, v in directions.items()}
    if not norms:
        return []
    limit = max(ZERO_NORM_ATOL, ZERO_NORM_RTOL * max(norms.values()))
    return [k for k, n in norms.items() if not n > limit]


def check_nonzero(directions: Mapping[int, torch.Tensor]) -> None:
    """Refuse a zero (or negligible) direction, naming its layer: steering with it, adding,
    projecting out or replacing, edits nothing (the project's rule: an edit that changes
    nothing is an error). A :class:`SteeringVector` refuses to be built with every layer zero;
    a vector measured on every layer may hold a zero layer (a steered teacher minus the base,
    below the steered layer), which :func:`steerlens.steer` refuses to apply (a carry test
    reads such a layer's cells as the base, making no edit)."""
    bad = zero_layers(directions)
    if bad:
        n = float(directions[bad[0]].detach().double().norm())
        raise ValueError(
            f"zero vector at layer {bad[0]} (norm {n:.3g}; zero or negligible layers: {bad}): "
            "a steering direction that is zero edits nothing; re-extract the vector (are the "
            "positive and negative prompts the same?) or drop those layers"
        )


def _check_kind(blob: Mapping[str, Any], path: Path) -> None:
    """A vector file's metadata: the protocol's kind (none: written before it had one) and a
    format this steerlens reads."""
    kind, version = blob.get("kind"), blob.get("format_version", 1)
    if kind not in (None, "steerlens.SteeringVector"):
        raise ValueError(f"{path} holds a {kind!r}, not a steerlens.SteeringVector")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValueError(
            f"{path} was written in result format {version!r}; this steerlens reads up to "
            f"{FORMAT_VERSION}: upgrade steerlens to read it"
        )


@dataclass
class SteeringVector(Record):
    """Per-layer direction tensors (float32, shape (d,)) plus provenance metadata.

    ``meta`` holds at least: model, model_fingerprint, site, position, method, seed,
    prompt hashes and steerlens_version; ``diagnostics`` holds per-layer reliability numbers.
    ``to_json`` (the protocol's) writes the provenance, the per-layer norms and the
    diagnostics; the tensors travel in the safetensors file of :meth:`save`, whose JSON
    metadata carries the protocol's kind and format version.
    """

    directions: dict[int, torch.Tensor] = field(metadata={"json": False})
    meta: dict[str, Any] = field(default_factory=dict)
    diagnostics: dict[str, Any] = field(default_factory=dict)

    derived_json = ("norms",)

    def __post_init__(self) -> None:
        if not self.directions:
            raise ValueError("a SteeringVector needs at least one layer")
        dims = {int(v.shape[-1]) for v in self.directions.values()}
        if len(dims) != 1 or any(v.dim() != 1 for v in self.directions.values()):
            raise ValueError(f"all directions must be 1-D of one size, got sizes {sorted(dims)}")
        self.directions = {
            int(k): v.detach().to("cpu", torch.float32) for k, v in sorted(self.directions.items())
        }
        bad = [k for k, v in self.directions.items() if not torch.isfinite(v).all()]
        if bad:
            raise ValueError(
                f"the direction at layer {bad[0]} holds NaN or inf (non-finite layers: {bad}): "
                "a steering vector must be finite; re-extract it or drop those layers"
            )
        if len(zero_layers(self.directions)) == len(self.directions):
            check_nonzero(self.directions)  # every layer zero: a vector that edits nothing
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

    def __str__(self) -> str:
        return repr(self)

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
        """Write safetensors with provenance and diagnostics in the JSON metadata; a ``.gguf``
        path writes llama.cpp's control-vector GGUF (provenance in ``steerlens.meta``)."""
        p = Path(path)
        if p.suffix == ".gguf":
            return fmt.write_gguf(p, self.directions, self.meta, self.diagnostics)
        p.parent.mkdir(parents=True, exist_ok=True)
        tensors = {f"layer.{k}": v.contiguous().clone() for k, v in self.directions.items()}
        head = {"kind": self.result_kind, "format_version": FORMAT_VERSION}
        blob = json.dumps(jsonable({**head, "meta": self.meta, "diagnostics": self.diagnostics}))
        save_file(tensors, str(p), metadata={_META_KEY: blob})
        return p

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> SteeringVector:
        p = Path(path)
        if p.is_dir():
            return cls.from_pretrained(p)
        if not p.is_file():
            raise FileNotFoundError(f"no steering vector at {p}")
        with p.open("rb") as f:
            if f.read(4) == b"GGUF":
                return cls(*fmt.read_gguf(p))
        try:
            tensors = load_file(str(p))
            with safe_open(str(p), framework="pt") as f:
                md = f.metadata() or {}
        except Exception as exc:
            raise ValueError(f"{p} is not a readable safetensors file: {exc}") from exc
        try:
            blob = json.loads(md.get(_META_KEY, "{}"))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{p}: its steerlens metadata is not valid JSON ({exc})") from None
        if not isinstance(blob, dict) or not isinstance(blob.get("meta", {}), dict):
            raise ValueError(f"{p}: its steerlens metadata is not a JSON object")
        _check_kind(blob, p)
        check_meta(blob.get("meta", {}), p)
        dirs = {}
        for name, t in tensors.items():
            tail = name.split(".", 1)[1] if name.startswith("layer.") else ""
            if not tail.isdigit():
                raise ValueError(f"{p}: unexpected tensor {name!r}; not a steerlens vector")
            dirs[int(tail)] = t
        try:
            return cls(dirs, blob.get("meta", {}), blob.get("diagnostics", {}))
        except ValueError as exc:
            raise ValueError(f"{p}: {exc}") from None

    def save_pretrained(self, folder: str | os.PathLike[str]) -> Path:
        """Write a hub-style folder, offline: ``steering_vector.safetensors``, ``config.json``
        (layers, size, site, provenance), ``README.md`` (model card with the provenance) and,
        when the vector has no layer 0, ``control_vector.gguf`` for llama.cpp."""
        d = Path(folder)
        d.mkdir(parents=True, exist_ok=True)
        files = [fmt.WEIGHTS_NAME]
        self.save(d / fmt.WEIGHTS_NAME)
        if 0 not in self.directions:
            self.save(d / fmt.GGUF_NAME)
            files.append(fmt.GGUF_NAME)
        files += [fmt.CONFIG_NAME, "README.md"]
        write_json(d / fmt.CONFIG_NAME, fmt.folder_config(self.directions, self.meta, files))
        atomic_write_text(d / "README.md", fmt.model_card(self.meta, self.norms(), files))
        return d

    @classmethod
    def from_pretrained(cls, folder: str | os.PathLike[str]) -> SteeringVector:
        """Read a folder written by :meth:`save_pretrained`."""
        p = Path(folder) / fmt.WEIGHTS_NAME
        if not p.is_file():
            raise FileNotFoundError(
                f"{folder} has no {fmt.WEIGHTS_NAME}: not a folder from save_pretrained()"
            )
        return cls.load(p)

    def to_repeng(self, cls: Any = None) -> Any:
        """A repeng ``ControlVector`` (same layer indices; ``cls``: the class to build)."""
        return fmt.to_repeng(self.directions, self.meta, cls)

    @classmethod
    def from_repeng(cls, obj: Any) -> SteeringVector:
        """A SteeringVector from a repeng ``ControlVector``."""
        return cls(*fmt.from_repeng(obj))

    def to_steering_vectors(self, cls: Any = None) -> Any:
        """A steering-vectors ``SteeringVector`` (``layer_type="decoder_block"``)."""
        return fmt.to_steering_vectors(self.directions, cls)

    @classmethod
    def from_steering_vectors(cls, obj: Any) -> SteeringVector:
        """A SteeringVector from a steering-vectors ``SteeringVector``."""
        return cls(*fmt.from_steering_vectors(obj))

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

    def main_figure(self) -> Any:
        """Split-half reliability per layer with its 95% band when diagnostics were computed,
        else ‖v‖ per layer."""
        split = self.diagnostics.get("split_half", {})
        sh = [split.get(k, split.get(str(k))) for k in self.layers]
        if all(isinstance(r, Mapping) and r.get("n_boot") for r in sh):
            name = "split-half cosine"
            return lines_with_bands(
                self.layers,
                {name: [float(r["mean"]) for r in sh]},
                bands={name: ([r["lo"] for r in sh], [r["hi"] for r in sh])},
                title="Reliability: cosine of vectors from two halves of the prompts",
                xlabel="layer (block index)",
                ylabel="cosine (−1…1)",
            )
        return lines_with_bands(
            self.layers,
            {"‖v‖": list(self.norms().values())},
            title="Vector norm per layer",
            xlabel="layer (block index)",
            ylabel="‖v‖ (residual-stream units)",
        )

    def _repr_html_(self) -> str:
        table = html_table(
            ["layer", "norm", "split-half reliability", "mean~pca cosine"], self._layer_rows()
        )
        return result_html("SteeringVector", self.summary(), table, self.main_figure())


def check_meta(meta: Mapping[str, Any], path: Path) -> None:
    """Refuse a vector file this steerlens cannot interpret: a site other than the residual
    stream after a block (the one site steerlens reads and writes), or a file written by a newer
    major (or, before 1.0, minor) version of steerlens."""
    site = meta.get("site", SITE_TEMPLATE)
    if site != SITE_TEMPLATE and not (isinstance(site, str) and _is_resid_site(site)):
        raise ValueError(
            f"{path}: the vector was read at site {site!r}, but steerlens reads and steers only "
            f"{SITE_TEMPLATE!r}; re-extract it with steerlens"
        )
    written = str(meta.get("steerlens_version", __version__))
    if _release(written) > _release(__version__):
        raise ValueError(
            f"{path}: written by steerlens {written}, newer than this steerlens {__version__} "
            "(its format may differ): upgrade steerlens to read it"
        )


def _is_resid_site(site: str) -> bool:
    return site.startswith("blocks.") and site.endswith(".hook_resid_post")


def _release(version: str) -> tuple[int, ...]:
    """The part of a version that may change the file format: (major,) from 1.0, else
    (0, minor)."""
    nums = []
    for part in version.split(".")[:2]:
        digits = "".join(c for c in part if c.isdigit())
        nums.append(int(digits) if digits else 0)
    while len(nums) < 2:
        nums.append(0)
    return (nums[0],) if nums[0] >= 1 else (0, nums[1])


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """cos(a, b) = a·b / (‖a‖‖b‖), in float64; 0 where either is zero."""
    a64, b64 = a.double().reshape(-1), b.double().reshape(-1)
    den = float(a64.norm() * b64.norm())
    return 0.0 if den == 0.0 else float(a64 @ b64) / den
