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
only the blocks above it run per checkpoint.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from tqdm.auto import tqdm

from steerlens import stats
from steerlens.activations import (
    StopForward,
    capture_blocks,
    length_batches,
    position_weights,
    record_activations,
)
from steerlens.checkpoints import Checkpoint, CheckpointSeries, first_changed_block
from steerlens.common import tqdm_disable
from steerlens.models import LoadedModel, as_model, cache_root, describe
from steerlens.prompts import (
    EncodedPrompt,
    PositionSpec,
    as_prompt,
    check_prompts,
    encode,
    pad_batch,
    position_indices,
    prompt_set_hash,
)
from steerlens.vectors import SteeringVector

_CACHE_FORMAT = 1
NullSpan = Literal["base", "shift"]


# ===================================================================================== results


def _nan_to_none(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, list):
        return [_nan_to_none(v) for v in x]
    return x


def _arr_json(a: np.ndarray) -> list[Any]:
    out: list[Any] = _nan_to_none(np.asarray(a, dtype=float).tolist())
    return out


def _arr_from(x: Any) -> np.ndarray:
    return np.array([[np.nan if v is None else v for v in row] for row in x], dtype=float)


_SERIES_ARRAYS = ("eas", "proj", "norm", "z_iso", "p_iso", "z_cov", "p_cov", "p_adj")


@dataclass
class SeriesTrack:
    """Per-checkpoint × per-layer arrays for one series (row i is ``steps[i]``; row 0 is the
    base, step 0, whose shift is zero)."""

    name: str
    steps: list[int]
    paths: list[str]
    eas: np.ndarray
    proj: np.ndarray
    norm: np.ndarray
    z_iso: np.ndarray
    p_iso: np.ndarray
    z_cov: np.ndarray
    p_cov: np.ndarray
    p_adj: np.ndarray
    first_block: list[int] = field(default_factory=list)

    def row(self, step: int) -> int:
        try:
            return self.steps.index(step)
        except ValueError:
            msg = f"series {self.name!r} has no step {step}; steps: {self.steps}"
            raise KeyError(msg) from None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "steps": self.steps,
            "paths": self.paths,
            "first_block": self.first_block,
        }
        for k in _SERIES_ARRAYS:
            out[k] = _arr_json(getattr(self, k))
        return out

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> SeriesTrack:
        arrays = {k: _arr_from(d[k]) for k in _SERIES_ARRAYS}
        return cls(
            d["name"],
            list(d["steps"]),
            list(d["paths"]),
            first_block=list(d.get("first_block", [])),
            **arrays,
        )


@dataclass
class ExcessAlignment:
    """EAS(main) − EAS(control) at common steps × layers, with bootstrap CIs over prompts and
    a one-sided bootstrap p = (1 + #{draws ≤ 0}) / (1 + n_boot)."""

    steps: list[int]
    estimate: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    p: np.ndarray
    level: float = 0.95
    n_boot: int = 1000

    def to_json(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "estimate": _arr_json(self.estimate),
            "lo": _arr_json(self.lo),
            "hi": _arr_json(self.hi),
            "p": _arr_json(self.p),
            "level": self.level,
            "n_boot": self.n_boot,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> ExcessAlignment:
        return cls(
            list(d["steps"]),
            _arr_from(d["estimate"]),
            _arr_from(d["lo"]),
            _arr_from(d["hi"]),
            _arr_from(d["p"]),
            d.get("level", 0.95),
            d.get("n_boot", 1000),
        )


@dataclass
class AlignmentTrack:
    """Alignment of student shifts with a teacher vector across checkpoints (see module doc).

    ``series["main"]`` (and ``series["control"]`` if given) hold [checkpoint × layer] arrays;
    ``excess`` holds EAS(main) − EAS(control) with CIs; ``settings`` and ``provenance`` say how
    and on what it was computed.
    """

    layers: list[int]
    series: dict[str, SeriesTrack]
    excess: ExcessAlignment | None
    settings: dict[str, Any]
    provenance: dict[str, Any]

    # ------------------------------------------------------------------------ access
    def _s(self, series: str) -> SeriesTrack:
        try:
            return self.series[series]
        except KeyError:
            raise KeyError(f"no series {series!r}; this track has {sorted(self.series)}") from None

    def steps(self, series: str = "main") -> list[int]:
        return list(self._s(series).steps)

    def eas(self, series: str = "main") -> np.ndarray:
        """EAS [checkpoint × layer]."""
        return self._s(series).eas

    def proj(self, series: str = "main") -> np.ndarray:
        """Projection of the shift on the unit teacher vector [checkpoint × layer]."""
        return self._s(series).proj

    def norm(self, series: str = "main") -> np.ndarray:
        """‖vˢ‖ [checkpoint × layer]."""
        return self._s(series).norm

    def significant(self, series: str = "main", alpha: float | None = None) -> np.ndarray:
        """Boolean [checkpoint × layer]: corrected p below ``alpha`` (default: settings)."""
        a = self.settings["alpha"] if alpha is None else alpha
        return self._s(series).p_adj < a

    def metric(self, name: str, series: str = "main") -> np.ndarray:
        """Any per-series array by name, or ``excess`` (over the excess steps)."""
        if name == "excess":
            if self.excess is None:
                raise ValueError("no control series was tracked, so there is no excess alignment")
            return self.excess.estimate
        if name not in _SERIES_ARRAYS:
            raise ValueError(f"unknown metric {name!r}: use one of {_SERIES_ARRAYS} or 'excess'")
        arr: np.ndarray = getattr(self._s(series), name)
        return arr

    def final(self, metric: str = "eas", series: str = "main") -> dict[int, float]:
        """The metric at the last checkpoint, per layer."""
        arr = self.metric(metric, series)
        return {layer: float(arr[-1, j]) for j, layer in enumerate(self.layers)}

    def best_layer(self, metric: str | None = None, series: str = "main") -> int:
        """The layer with the largest metric at the last checkpoint (default metric: ``excess``
        when a control series was tracked, else ``eas``)."""
        m = metric or ("excess" if self.excess is not None else "eas")
        vals = self.final(m, series)
        finite = {k: v for k, v in vals.items() if math.isfinite(v)}
        if not finite:
            raise ValueError(f"no finite {m} value at the last checkpoint")
        return max(finite, key=lambda k: finite[k])

    # ------------------------------------------------------------------------ output
    def summary(self) -> str:
        """A plain-text table of the last checkpoint, per layer."""
        main = self._s("main")
        ctrl = self.series.get("control")
        head = (
            f"alignment track: {len(main.steps) - 1} checkpoints (steps {main.steps[1:]}), "
            f"{len(self.layers)} layers, {self.provenance.get('n_prompts')} probe prompts, "
            f"position={self.settings.get('position')!r}"
        )
        cols = ["layer", "EAS", "proj", "norm", "p_adj"]
        if ctrl is not None:
            cols += ["EAS ctrl", "excess", "CI"]
        lines = [head, f"last step {main.steps[-1]}:", "  ".join(f"{c:>10}" for c in cols)]
        ex_row = None
        if self.excess is not None and main.steps[-1] in self.excess.steps:
            ex_row = self.excess.steps.index(main.steps[-1])
        for j, layer in enumerate(self.layers):
            cells = [
                f"{layer:>10d}",
                f"{main.eas[-1, j]:>10.3f}",
                f"{main.proj[-1, j]:>10.3g}",
                f"{main.norm[-1, j]:>10.3g}",
                f"{main.p_adj[-1, j]:>10.3g}",
            ]
            if ctrl is not None:
                r = ctrl.row(main.steps[-1]) if main.steps[-1] in ctrl.steps else -1
                cells.append(f"{ctrl.eas[r, j]:>10.3f}")
                if ex_row is not None and self.excess is not None:
                    e = self.excess
                    cells += [
                        f"{e.estimate[ex_row, j]:>10.3f}",
                        f"[{e.lo[ex_row, j]:.3f}, {e.hi[ex_row, j]:.3f}]",
                    ]
            mark = " *" if main.p_adj[-1, j] < self.settings["alpha"] else ""
            lines.append("  ".join(cells) + mark)
        lines.append(
            f"* corrected p < {self.settings['alpha']} against both the isotropic and the "
            f"covariance-matched null ({self.settings['correction']} across layers)"
        )
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": "steerlens.AlignmentTrack",
            "layers": self.layers,
            "series": {k: s.to_json() for k, s in self.series.items()},
            "excess": None if self.excess is None else self.excess.to_json(),
            "settings": self.settings,
            "provenance": json.loads(json.dumps(self.provenance, default=str)),
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> AlignmentTrack:
        return cls(
            list(d["layers"]),
            {k: SeriesTrack.from_json(v) for k, v in d["series"].items()},
            None if d.get("excess") is None else ExcessAlignment.from_json(d["excess"]),
            dict(d["settings"]),
            dict(d["provenance"]),
        )

    def save(self, path: str | os.PathLike[str]) -> Path:
        p = Path(path)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(self.to_json(), indent=1))
        return p

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> AlignmentTrack:
        return cls.from_json(json.loads(Path(path).read_text()))


# ============================================================================ statistics


def cov_null_cosines(v: torch.Tensor, span_rows: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """cos(v, r_k) for r_k = Dᵀg_k/‖Dᵀg_k‖, g_k ~ N(0, I): the same draws as
    ``stats.cosines(v, stats.span_directions(D, n, seed))``, computed through the Gram matrix
    when D has fewer rows than columns (no (n, d) matrix of directions is formed)."""
    d64 = span_rows.double()
    m, dim = d64.shape
    if m > dim:
        return stats.cosines(v, stats.span_directions(span_rows, n, seed))
    g = torch.randn(n, m, generator=torch.Generator().manual_seed(int(seed)), dtype=torch.float64)
    v64 = v.double().reshape(-1)
    num = g @ (d64 @ v64)
    r_norm = ((g @ (d64 @ d64.T)) * g).sum(1).clamp_min(0).sqrt()
    den = r_norm * v64.norm()
    return torch.where(den > 1e-300, num / den.clamp_min(1e-300), torch.zeros_like(den))


@dataclass(frozen=True)
class NullConfig:
    n_null: int = 1000
    seed: int = 0
    alternative: str = "greater"


def layer_stats(
    shift_mean: torch.Tensor,
    teacher: torch.Tensor,
    iso_dirs: torch.Tensor,
    span_rows: torch.Tensor,
    cfg: NullConfig,
) -> dict[str, float]:
    """EAS, projection, norm and the two nulls' z and p for one layer and checkpoint.

    ``shift_mean`` is vˢ, ``teacher`` vᵀ, ``iso_dirs`` (n, d) unit directions for the
    isotropic null, ``span_rows`` the (m, d) rows whose centred span gives the
    covariance-matched null."""
    vs = shift_mean.double()
    vt = teacher.double()
    t_norm = float(vt.norm())
    s_norm = float(vs.norm())
    eas = float(vs @ vt) / (s_norm * t_norm) if s_norm > 0 and t_norm > 0 else 0.0
    proj = float(vs @ vt) / t_norm if t_norm > 0 else 0.0
    iso = stats.cosines(vs, iso_dirs)
    centred = span_rows.double() - span_rows.double().mean(0, keepdim=True)
    cov = cov_null_cosines(vs, centred, cfg.n_null, cfg.seed + 1)
    z_iso, p_iso = stats.z_and_p(eas, iso, cfg.alternative)
    z_cov, p_cov = stats.z_and_p(eas, cov, cfg.alternative)
    return {
        "eas": eas,
        "proj": proj,
        "norm": s_norm,
        "z_iso": z_iso,
        "p_iso": p_iso,
        "z_cov": z_cov,
        "p_cov": p_cov,
    }


def excess_bootstrap(
    main_rows: torch.Tensor,
    ctrl_rows: torch.Tensor,
    teacher: torch.Tensor,
    *,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, float]:
    """EAS(main) − EAS(control) from paired (n, d) shift rows, with a percentile bootstrap
    over prompts (the same resampled prompts for both series) and p = (1 + #{draw ≤ 0}) /
    (1 + n_boot). Vectorised: each draw's mean shift is a row of W·D with W the (n_boot, n)
    resampling counts / n (its norm taken through the Gram matrix DDᵀ when n < d)."""
    if main_rows.shape != ctrl_rows.shape:
        raise ValueError(
            f"main and control shift rows differ in shape ({tuple(main_rows.shape)} vs "
            f"{tuple(ctrl_rows.shape)}): they must come from the same probe prompts"
        )
    n = main_rows.shape[0]
    vt = teacher.double()
    vt = vt / vt.norm().clamp_min(1e-300)

    def eas_of(rows: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        r = rows.double()
        if r.shape[0] > r.shape[1]:
            means = w @ r
            return (means @ vt) / means.norm(dim=1).clamp_min(1e-300)
        # through the (n, n) Gram matrix: ‖wᵀR‖² = wᵀ(RRᵀ)w, no (n_boot, d) matrix formed
        sq = ((w @ (r @ r.T)) * w).sum(1).clamp_min(0)
        return (w @ (r @ vt)) / sq.sqrt().clamp_min(1e-300)

    ones = torch.full((1, n), 1.0 / n, dtype=torch.float64)
    est = float(eas_of(main_rows, ones)[0] - eas_of(ctrl_rows, ones)[0])
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n))
    counts = np.zeros((n_boot, n))
    np.add.at(counts, (np.repeat(np.arange(n_boot), n), idx.reshape(-1)), 1.0)
    w = torch.from_numpy(counts / n)
    draws = (eas_of(main_rows, w) - eas_of(ctrl_rows, w)).numpy()
    lo, hi = np.quantile(draws, [(1 - level) / 2, 1 - (1 - level) / 2])
    p = (1 + int((draws <= 0).sum())) / (1 + n_boot)
    return {"estimate": est, "lo": float(lo), "hi": float(hi), "p": p}


# =========================================================================== activations


@dataclass
class BlockInputs:
    """What decoder block ``start`` and the blocks above it received on the base pass, per
    length batch: the hidden state entering ``start`` and each block's other call arguments
    (attention mask, rotary embeddings, …, exactly as the model built them)."""

    start: int
    batches: list[list[int]]
    hidden: list[torch.Tensor] = field(default_factory=list)
    calls: list[dict[int, tuple[tuple[Any, ...], dict[str, Any], bool]]] = field(
        default_factory=list
    )


def _reduce(
    encs: Sequence[EncodedPrompt], idx: Sequence[int], h: torch.Tensor, position: PositionSpec
) -> torch.Tensor:
    """(B, d) float32 per-prompt means over the selected positions of a (B, T, d) batch, the
    same reduction as ``record_activations``."""
    w = position_weights(encs, idx, h.shape[1], position)
    if w is None:
        return h[:, -1, :].float()
    return torch.einsum("bt,btd->bd", w.to(device=h.device, dtype=torch.float32), h.float())


def base_pass(
    lm: LoadedModel,
    encs: Sequence[EncodedPrompt],
    batches: list[list[int]],
    layers: Sequence[int],
    position: PositionSpec,
    capture_from: int | None = None,
    *,
    progress: bool | None = None,
) -> tuple[dict[int, torch.Tensor], BlockInputs | None]:
    """Per-prompt rows (float32, input order) of the base at ``layers`` and, with
    ``capture_from``, the inputs of blocks ``capture_from..max(layers)`` for replay."""
    blocks = lm.layout.blocks
    deepest = max(layers)
    n, d = len(encs), lm.hidden_size
    rows = {layer: torch.empty(n, d) for layer in layers}
    inputs = None
    if capture_from is not None:
        if not 0 < capture_from <= deepest:
            raise ValueError(f"capture_from must be in 1..{deepest}, got {capture_from}")
        inputs = BlockInputs(capture_from, batches)
    current: dict[int, tuple[tuple[Any, ...], dict[str, Any], bool]] = {}
    entry: list[torch.Tensor] = []

    def make_pre(i: int) -> Any:
        def pre(_m: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            as_kw = not args
            hidden = kwargs["hidden_states"] if as_kw else args[0]
            rest = args[1:]
            kw = {k: v for k, v in kwargs.items() if k != "hidden_states"}
            current[i] = (rest, kw, as_kw)
            if inputs is not None and i == inputs.start:
                entry.append(hidden.detach())

        return pre

    handles = []
    try:
        if inputs is not None:
            for i in range(inputs.start, deepest + 1):
                handles.append(blocks[i].register_forward_pre_hook(make_pre(i), with_kwargs=True))
        with torch.inference_mode():
            for idx in tqdm(batches, desc="base", disable=tqdm_disable(progress), leave=False):
                current.clear()
                entry.clear()
                ids, mask, pos = pad_batch(
                    [encs[i] for i in idx], lm.tokenizer.pad_token_id, lm.device
                )
                with capture_blocks(lm, layers) as store, contextlib.suppress(StopForward):
                    lm.model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False)
                index = torch.tensor(idx)
                for layer in layers:
                    rows[layer][index] = _reduce(encs, idx, store[layer], position).cpu()
                if inputs is not None:
                    if len(entry) != 1 or len(current) != deepest + 1 - inputs.start:
                        raise RuntimeError("block inputs were not captured once per block")
                    inputs.hidden.append(entry[0])
                    inputs.calls.append(dict(current))
    finally:
        for h in handles:
            h.remove()
    return rows, inputs


def replay_rows(
    lm: LoadedModel,
    inputs: BlockInputs,
    encs: Sequence[EncodedPrompt],
    layers: Sequence[int],
    position: PositionSpec,
    base_rows: Mapping[int, torch.Tensor],
    *,
    max_batches: int | None = None,
) -> dict[int, torch.Tensor]:
    """Per-prompt rows of ``lm`` computed by running only blocks ``inputs.start..max(layers)``
    on the captured base inputs; layers below ``inputs.start`` are copied from ``base_rows``
    (they are identical by construction)."""
    blocks = lm.layout.blocks
    deepest = max(layers)
    wanted = set(layers)
    rows = {layer: base_rows[layer].clone() for layer in layers}
    pairs = list(zip(inputs.batches, inputs.hidden, inputs.calls, strict=True))
    if max_batches is not None:
        pairs = pairs[:max_batches]
    with torch.inference_mode():
        for idx, hidden, calls in pairs:
            h = hidden
            index = torch.tensor(idx)
            for i in range(inputs.start, deepest + 1):
                rest, kw, as_kw = calls[i]
                block = blocks[i]
                out = block(*rest, hidden_states=h, **kw) if as_kw else block(h, *rest, **kw)
                h = out[0] if isinstance(out, tuple) else out
                if i in wanted:
                    rows[i][index] = _reduce(encs, idx, h, position).cpu()
    return rows


def _checkpoint_rows(
    lm: LoadedModel,
    prompts: Sequence[str | Any],
    encs: Sequence[EncodedPrompt],
    layers: Sequence[int],
    position: PositionSpec,
    batch_size: int,
    inputs: BlockInputs | None,
    base_rows: Mapping[int, torch.Tensor],
) -> dict[int, torch.Tensor]:
    """One checkpoint's per-prompt rows (float32): the replay fast path when ``inputs`` is
    given, else ``record_activations`` (a truncated forward per length batch)."""
    if inputs is not None:
        return replay_rows(lm, inputs, encs, layers, position, base_rows)
    # the same computation as the base pass (no shared prefix), so a block the checkpoint
    # leaves unchanged gives exactly zero shift instead of rounding noise
    acts = record_activations(
        lm,
        prompts,
        layers,
        position,
        batch_size=batch_size,
        keep_rows=True,
        progress=False,
        share_prefix=False,
    )
    assert acts.rows is not None
    return {layer: acts.rows[layer] for layer in layers}


# ================================================================================= cache


class RowCache:
    """Per-checkpoint rows on disk: ``<key>.safetensors`` (``rows.{ℓ}``) and ``<key>.json``
    (the full key, shapes and the sha256 of the safetensors file). Written atomically, JSON
    last; an entry whose JSON is missing, unparsable, for another key, or whose checksum or
    shapes do not match is recomputed (with a warning), never reused."""

    def __init__(self, root: Path | None, common: Mapping[str, Any]) -> None:
        self.root = root
        self.common = dict(common)
        if root is not None:
            root.mkdir(parents=True, exist_ok=True)

    def fields(self, signature: str) -> dict[str, Any]:
        return dict(self.common, checkpoint=signature, format=_CACHE_FORMAT)

    def key(self, signature: str) -> str:
        blob = json.dumps(self.fields(signature), sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:24]

    def paths(self, signature: str) -> tuple[Path, Path]:
        assert self.root is not None
        k = self.key(signature)
        return self.root / f"{k}.safetensors", self.root / f"{k}.json"

    def load(
        self, signature: str, layers: Sequence[int], n: int, d: int
    ) -> dict[int, torch.Tensor] | None:
        if self.root is None:
            return None
        from safetensors.torch import load_file

        st_path, js_path = self.paths(signature)
        if not js_path.is_file():
            return None
        try:
            meta = json.loads(js_path.read_text())
            if meta.get("key") != json.loads(json.dumps(self.fields(signature), default=str)):
                raise ValueError("the entry was written for another key")
            if _sha256(st_path) != meta.get("sha256"):
                raise ValueError("checksum mismatch (truncated or modified file)")
            tensors = load_file(str(st_path))
            rows = {layer: tensors[f"rows.{layer}"].float() for layer in layers}
            for layer, r in rows.items():
                if tuple(r.shape) != (n, d) or not torch.isfinite(r).all():
                    raise ValueError(f"layer {layer} rows: shape {tuple(r.shape)}, want {(n, d)}")
        except Exception as exc:  # noqa: BLE001 - any broken entry is recomputed
            warnings.warn(
                f"ignoring corrupt cache entry {st_path.name} ({exc}); recomputing", stacklevel=3
            )
            return None
        return rows

    def save(self, signature: str, rows: Mapping[int, torch.Tensor], dtype: torch.dtype) -> None:
        if self.root is None:
            return
        from safetensors.torch import save_file

        st_path, js_path = self.paths(signature)
        tmp = st_path.with_name(st_path.name + f".{os.getpid()}.tmp")
        save_file({f"rows.{k}": v.to(dtype).contiguous() for k, v in rows.items()}, str(tmp))
        os.replace(tmp, st_path)
        meta = {
            "key": self.fields(signature),
            "sha256": _sha256(st_path),
            "written": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        tmp_js = js_path.with_name(js_path.name + f".{os.getpid()}.tmp")
        tmp_js.write_text(json.dumps(meta, default=str))
        os.replace(tmp_js, js_path)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _tokenizer_key(tok: Any) -> str:
    parts = [
        type(tok).__name__,
        str(len(tok)),
        str(getattr(tok, "chat_template", "")),
        str(getattr(tok, "name_or_path", "")),
    ]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


# ================================================================================== main


def probe_prompts(trait_or_prompts: Any) -> list[str | Any]:
    """Probe prompts from a trait (anything with ``probe_chats(system=None)``, called with no
    system prompt) or a plain prompt list."""
    if hasattr(trait_or_prompts, "probe_chats"):
        items = list(trait_or_prompts.probe_chats(system=None))
    elif isinstance(trait_or_prompts, (str, bytes)):
        raise TypeError("pass a list of probe prompts (or a trait spec), not a single string")
    else:
        items = list(trait_or_prompts)
    return check_prompts(items, "track_checkpoints probes")


def _as_series(x: Any) -> CheckpointSeries:
    if isinstance(x, CheckpointSeries):
        return x
    if isinstance(x, (str, os.PathLike)):
        return CheckpointSeries.discover(Path(x))
    if isinstance(x, Sequence):
        return CheckpointSeries.from_paths(list(x))
    raise TypeError(
        f"a checkpoint series must be a folder path, a list of checkpoint folders or a "
        f"CheckpointSeries, got {type(x).__name__}"
    )


def _as_vector(vector: Any) -> SteeringVector:
    if isinstance(vector, SteeringVector):
        return vector
    if isinstance(vector, Mapping):
        return SteeringVector(dict(vector))
    raise TypeError(
        f"the teacher vector must be a SteeringVector or a {{layer: tensor}} dict, got "
        f"{type(vector).__name__}"
    )


def _check_vector(lm: LoadedModel, vec: SteeringVector, layers: Sequence[int] | None) -> list[int]:
    if vec.hidden_size != lm.hidden_size:
        raise ValueError(
            f"hidden size mismatch: the teacher vector has d={vec.hidden_size} but "
            f"{lm.name} has d={lm.hidden_size}. Extract the vector on the base model of this "
            "series."
        )
    too_deep = [layer for layer in vec.layers if layer >= lm.n_layers]
    if too_deep:
        raise ValueError(
            f"layer count mismatch: the teacher vector has layers {too_deep} but {lm.name} has "
            f"only {lm.n_layers} blocks (0..{lm.n_layers - 1}). Extract the vector on the base "
            "model of this series."
        )
    fp = vec.meta.get("model_fingerprint")
    if fp is not None and fp != lm.fingerprint:
        warnings.warn(
            f"the teacher vector was extracted on a model with fingerprint {fp}, not this base "
            f"({lm.fingerprint}); alignment assumes both share the base",
            stacklevel=3,
        )
    wanted = vec.layers if layers is None else [int(x) for x in layers]
    missing = [layer for layer in wanted if layer not in vec]
    if missing:
        raise ValueError(f"the teacher vector has no layers {missing}; it has {vec.layers}")
    return sorted(set(wanted))


def _default_position(vec: SteeringVector) -> str:
    pos = vec.meta.get("position")
    return pos if pos in ("last", "prompt", "all") else "last"


def track_checkpoints(
    model: Any,
    series: str | os.PathLike[str] | CheckpointSeries | Sequence[str | os.PathLike[str]],
    vector: SteeringVector | Mapping[int, torch.Tensor],
    trait_or_prompts: Any,
    *,
    control: str | os.PathLike[str] | CheckpointSeries | None = None,
    layers: Sequence[int] | None = None,
    position: PositionSpec | None = None,
    batch_size: int = 32,
    cache_dir: str | os.PathLike[str] | Literal[False] | None = None,
    n_null: int = 1000,
    n_boot: int = 1000,
    null_span: NullSpan = "base",
    null_rows: Mapping[int, torch.Tensor] | None = None,
    correction: str = "holm",
    alpha: float = 0.05,
    alternative: str = "greater",
    level: float = 0.95,
    seed: int = 0,
    rows_dtype: torch.dtype = torch.float32,
    fast: bool = True,
    progress: bool | None = None,
) -> AlignmentTrack:
    """Track EAS, projection and norm of the student shift against ``vector`` per checkpoint
    and layer, against nulls, and (with ``control``) the excess alignment over a control run.

    ``model`` is the base θ₀ (a :class:`LoadedModel` or HF model); ``series``/``control`` are
    folders of ``checkpoint-N`` subfolders (full weights or PEFT adapters), checkpoint lists or
    :class:`CheckpointSeries`. ``trait_or_prompts`` gives the probe prompts: a prompt list or a
    trait spec (its ``probe_chats(system=None)``: no system prompt). ``position`` defaults to
    the vector's recorded position ("last" if none). ``cache_dir`` defaults to
    ``~/.cache/steerlens/track`` (``False``: no cache). ``fast`` enables running only the
    blocks above the lowest changed block. See the module docstring for every formula.
    """
    t_start = time.perf_counter()
    lm = as_model(model)
    vec = _as_vector(vector)
    track_layers = _check_vector(lm, vec, layers)
    prompts = probe_prompts(trait_or_prompts)
    pos: PositionSpec = position if position is not None else _default_position(vec)
    if null_span not in ("base", "shift"):
        raise ValueError(f"null_span must be 'base' or 'shift', got {null_span!r}")
    if correction not in ("holm", "bh"):
        raise ValueError(f"unknown correction {correction!r}: use 'holm' or 'bh'")
    if n_null < 1 or n_boot < 1:
        raise ValueError("n_null and n_boot must be >= 1")
    all_series = {"main": _as_series(series)}
    if control is not None:
        all_series["control"] = _as_series(control)

    encs = [encode(lm.tokenizer, p) for p in prompts]
    for i, e in enumerate(encs):
        if len(e) == 0:
            raise ValueError(f"probe prompt {i} tokenizes to no tokens")
        position_indices(e, pos, i)
    batches = length_batches(encs, batch_size)
    n, d = len(encs), lm.hidden_size

    # ---------------------------------------------------------------------- cache
    cache_on = cache_dir is not False and isinstance(pos, str)
    root = None
    if cache_on:
        root = Path(cache_dir).expanduser() if cache_dir else cache_root() / "track"
    common = {
        "base": lm.fingerprint,
        "tokenizer": _tokenizer_key(lm.tokenizer),
        "prompts": prompt_set_hash(prompts),
        "layers": track_layers,
        "position": pos if isinstance(pos, str) else "custom",
        "rows_dtype": str(rows_dtype),
    }
    cache = RowCache(root, common)

    # ------------------------------------------------ which checkpoints need computing
    todo: dict[str, list[Checkpoint]] = {}
    cached: dict[tuple[str, int], dict[int, torch.Tensor]] = {}
    for name, ser in all_series.items():
        todo[name] = []
        for ck in ser:
            hit = cache.load(ck.signature(), track_layers, n, d)
            if hit is None:
                todo[name].append(ck)
            else:
                cached[(name, ck.step)] = hit
    first: dict[tuple[str, int], int] = {}
    for name, cks in todo.items():
        for ck in cks:
            first[(name, ck.step)] = first_changed_block(lm, ck) if fast else 0
    deepest = max(track_layers)
    starts = [s for s in first.values() if 0 < s <= deepest]
    capture = min(starts) if (fast and starts) else None

    # ------------------------------------------------------------------- base pass
    t_base = time.perf_counter()
    base_rows = cache.load("base", track_layers, n, d)
    inputs: BlockInputs | None = None
    if base_rows is None or capture is not None:
        fresh, inputs = base_pass(lm, encs, batches, track_layers, pos, capture, progress=progress)
        if inputs is not None and not _replay_self_check(
            lm, inputs, encs, track_layers, pos, fresh
        ):
            warnings.warn(
                f"replaying blocks from {inputs.start} did not reproduce the base activations "
                f"of {type(lm.model).__name__}; using full truncated forwards instead",
                stacklevel=2,
            )
            inputs = None
        if base_rows is None:
            cache.save("base", fresh, rows_dtype)
            base_rows = {k: v.to(rows_dtype).float() for k, v in fresh.items()}
        del fresh
    t_base = time.perf_counter() - t_base

    # ------------------------------------------------------------------ checkpoints
    timings: dict[str, list[float]] = {}
    rows_by: dict[tuple[str, int], dict[int, torch.Tensor]] = {}
    total = sum(len(v) for v in todo.values())
    bar = tqdm(total=total, desc="checkpoints", disable=tqdm_disable(progress), leave=False)
    try:
        for name, ser in all_series.items():
            timings[name] = []
            if todo[name]:
                with ser.open(lm) as load:
                    for ck in todo[name]:
                        t0 = time.perf_counter()
                        s = first[(name, ck.step)]
                        if s > deepest:
                            rows = {k: v.clone() for k, v in base_rows.items()}
                        else:
                            m = load(ck)
                            use = inputs if (inputs is not None and s >= inputs.start) else None
                            rows = _checkpoint_rows(
                                m, prompts, encs, track_layers, pos, batch_size, use, base_rows
                            )
                            del m
                        cache.save(ck.signature(), rows, rows_dtype)
                        rows_by[(name, ck.step)] = {
                            k: v.to(rows_dtype).float() for k, v in rows.items()
                        }
                        timings[name].append(time.perf_counter() - t0)
                        bar.update(1)
    finally:
        bar.close()
    rows_by.update(cached)

    # ------------------------------------------------------------------- statistics
    cfg = NullConfig(n_null, seed, alternative)
    iso_dirs = stats.random_directions(d, n_null, seed)
    base_means = {k: base_rows[k].double().mean(0) for k in track_layers}
    tracks: dict[str, SeriesTrack] = {}
    shifts: dict[tuple[str, int], dict[int, torch.Tensor]] = {}
    for name, ser in all_series.items():
        steps = [0, *ser.steps] if 0 not in ser.steps else ser.steps
        arr = {k: np.full((len(steps), len(track_layers)), np.nan) for k in _SERIES_ARRAYS}
        for r, step in enumerate(steps):
            if step == 0 and (name, 0) not in rows_by:
                sh = {k: torch.zeros(n, d) for k in track_layers}
            else:
                sh = {k: rows_by[(name, step)][k] - base_rows[k] for k in track_layers}
            shifts[(name, step)] = sh
            pvals = []
            for j, layer in enumerate(track_layers):
                if null_rows is not None and layer in null_rows:
                    span = null_rows[layer]
                else:
                    span = base_rows[layer] if null_span == "base" else sh[layer]
                mean_shift = (
                    rows_by[(name, step)][layer].double().mean(0) - base_means[layer]
                    if (name, step) in rows_by
                    else torch.zeros(d, dtype=torch.float64)
                )
                st = layer_stats(mean_shift, vec[layer], iso_dirs, span, cfg)
                for k, v in st.items():
                    arr[k][r, j] = v
                pvals.append(max(st["p_iso"], st["p_cov"]))
            arr["p_adj"][r] = stats.correct(pvals, correction)
        paths = [str(ser.by_step(s).path) if s != 0 or 0 in ser.steps else "base" for s in steps]
        fb = [first.get((name, s), -1) for s in steps]
        tracks[name] = SeriesTrack(name, steps, paths, first_block=fb, **arr)

    excess = None
    if "control" in tracks:
        common_steps = [s for s in tracks["main"].steps if s in tracks["control"].steps and s != 0]
        if not common_steps:
            warnings.warn(
                f"main steps {tracks['main'].steps} and control steps "
                f"{tracks['control'].steps} share no checkpoint step: no excess alignment",
                stacklevel=2,
            )
        else:
            shape = (len(common_steps), len(track_layers))
            ex = {k: np.full(shape, np.nan) for k in ("estimate", "lo", "hi", "p")}
            for r, step in enumerate(common_steps):
                for j, layer in enumerate(track_layers):
                    b = excess_bootstrap(
                        shifts[("main", step)][layer],
                        shifts[("control", step)][layer],
                        vec[layer],
                        n_boot=n_boot,
                        seed=seed + r,
                        level=level,
                    )
                    for k, v in b.items():
                        ex[k][r, j] = v
            excess = ExcessAlignment(
                common_steps, ex["estimate"], ex["lo"], ex["hi"], ex["p"], level, n_boot
            )

    settings = {
        "position": pos if isinstance(pos, str) else "custom",
        "layers": track_layers,
        "batch_size": batch_size,
        "n_null": n_null,
        "n_boot": n_boot,
        "null_span": "custom" if null_rows is not None else null_span,
        "correction": correction,
        "alpha": alpha,
        "alternative": alternative,
        "level": level,
        "seed": seed,
        "rows_dtype": str(rows_dtype),
        "fast": fast,
        "decision": "p = max(p_iso, p_cov), corrected across layers per checkpoint",
    }
    from steerlens.version import __version__

    provenance = {
        "base": describe(lm),
        "vector": {"meta": vec.meta, "norms": vec.norms()},
        "series": {k: s.to_json() for k, s in all_series.items()},
        "signatures": {k: {c.step: c.signature() for c in s} for k, s in all_series.items()},
        "prompts_hash": common["prompts"],
        "n_prompts": n,
        "probe_examples": [str(as_prompt(p))[:200] for p in prompts[:3]],
        "cache_dir": str(root) if root is not None else None,
        "computed": {k: [c.step for c in v] for k, v in todo.items()},
        "replay_start_block": inputs.start if inputs is not None else None,
        "seconds": {
            "base_pass": t_base,
            "checkpoints": timings,
            "total": time.perf_counter() - t_start,
        },
        "steerlens_version": __version__,
    }
    return AlignmentTrack(track_layers, tracks, excess, settings, provenance)


def _replay_self_check(
    lm: LoadedModel,
    inputs: BlockInputs,
    encs: Sequence[EncodedPrompt],
    layers: Sequence[int],
    position: PositionSpec,
    reference: Mapping[int, torch.Tensor],
) -> bool:
    """Replay the first batch on the base itself and compare with the rows the base pass
    computed: a guard against architectures whose blocks read state the capture missed."""
    idx = inputs.batches[0]
    got = replay_rows(lm, inputs, encs, layers, position, reference, max_batches=1)
    for layer in layers:
        ref = reference[layer][idx]
        scale = float(ref.abs().max()) + 1e-6
        if not torch.allclose(got[layer][idx], ref, atol=1e-4 * scale, rtol=1e-4):
            return False
    return True
