"""The carry test's result: :class:`CarryResult` and its typed parts (:class:`CarrySettings`,
peaks in :mod:`steerlens.carry.peak`, necessity in :mod:`steerlens.carry.necessity`).

``to_json()`` keeps the JSON schema the report and the demo's results.json read (layer keys as
strings, non-finite floats as None); ``from_json()`` inverts it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, cast

from steerlens.carry.levels import CarryLevel, EffectLevel
from steerlens.carry.necessity import Necessity
from steerlens.carry.nulls import NullBand
from steerlens.carry.peak import CleanPeak, Peak
from steerlens.common import jsonable, read_json, write_json
from steerlens.results import ResultMixin, html_table

__all__ = ["CarryResult", "CarrySettings", "CarryUndefinedError"]


class CarryUndefinedError(ValueError):
    """B_teacher − B_base is ~0, so sufficiency and necessity fractions are undefined."""


@dataclass(frozen=True)
class CarrySettings:
    """How a carry test was run (the JSON ``settings``); ``targets`` only for the logprob
    metric of a trait."""

    alpha_unit: str
    alpha_unit_doc: str
    n_random: int
    seed: int
    min_gap: float
    offtarget_measure: str | None
    offtarget_tol_rule: str
    teacher: str
    necessity_mode: str
    positions: str
    thresholds: dict[str, float]
    model: str
    model_fingerprint: str | None
    vector: dict[str, Any]
    trait: dict[str, Any] | None
    targets: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        if self.targets is None:
            del out["targets"]
        return cast(dict[str, Any], jsonable(out))

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> CarrySettings:
        kw: dict[str, Any] = {f.name: d.get(f.name) for f in fields(cls)}
        return cls(**kw)


_LAYER_KEYED = (
    "vector_norms",
    "residual_norms",
    "behavior",
    "sufficiency",
    "offtarget_kl",
    "null_sufficiency",
    "null_offtarget_kl",
)


@dataclass
class CarryResult(ResultMixin):
    """Every number of a carry test. Dict keys of per-layer fields are layer indices.

    ``sufficiency[ℓ][j]`` is S(ℓ, alphas[j]); ``behavior`` the raw B there; ``offtarget_kl`` the
    off-target shift; ``null_sufficiency[ℓ][j]`` / ``null_offtarget_kl`` the random-direction
    bands; ``clean_peak`` / ``raw_peak`` with their null comparison (None when undefined);
    ``necessity`` per layer and joint (None: not tested); ``verdict`` a sentence with the
    numbers, ``level`` its category (:class:`~steerlens.carry.levels.CarryLevel`, equal to its
    string value).
    """

    result_kind = "carry"

    kind: str
    trait: str | None
    metric: dict[str, Any]
    b_base: float
    b_teacher: float
    gap: float
    defined: bool
    level: CarryLevel
    verdict: str
    layers: list[int] = field(default_factory=list)
    alphas: list[float] = field(default_factory=list)
    b_neutral: float | None = None
    undefined_reason: str | None = None
    vector_norms: dict[int, float] = field(default_factory=dict)
    residual_norms: dict[int, float] = field(default_factory=dict)
    behavior: dict[int, list[float]] = field(default_factory=dict)
    sufficiency: dict[int, list[float]] = field(default_factory=dict)
    offtarget_kl: dict[int, list[float]] = field(default_factory=dict)
    null_sufficiency: dict[int, list[NullBand]] = field(default_factory=dict)
    null_offtarget_kl: dict[int, list[NullBand]] = field(default_factory=dict)
    offtarget_kl_teacher: float | None = None
    offtarget_tol: float | None = None
    clean_peak: CleanPeak | None = None
    raw_peak: Peak | None = None
    necessity: Necessity | None = None
    sufficiency_level: EffectLevel = EffectLevel.NONE
    necessity_level: EffectLevel | None = None
    settings: CarrySettings | None = None

    def require_defined(self) -> CarryResult:
        """Return self, or raise :class:`CarryUndefinedError` with the reason."""
        if not self.defined:
            raise CarryUndefinedError(self.undefined_reason or "carry test undefined")
        return self

    def dose_response(self, layer: int) -> list[dict[str, Any]]:
        """Per α at ``layer``: S, raw B, off-target KL, and the random-direction band of S."""
        if layer not in self.sufficiency:
            raise KeyError(f"layer {layer} is not in the grid {self.layers}")
        out = []
        for j, a in enumerate(self.alphas):
            nb = self._null_band(layer, j)
            out.append(
                {
                    "alpha": a,
                    "S": self.sufficiency[layer][j],
                    "B": self.behavior[layer][j],
                    "offtarget_kl": self.offtarget_kl[layer][j] if self.offtarget_kl else None,
                    "null_mean": nb.get("mean"),
                    "null_q05": nb.get("q05"),
                    "null_q95": nb.get("q95"),
                }
            )
        return out

    def _null_band(self, layer: int, j: int) -> NullBand:
        bands = self.null_sufficiency.get(layer)
        return bands[j] if bands else NullBand()

    # ------------------------------------------------------------------ JSON

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict (layer keys as strings, non-finite floats as None; parts not run
        as ``{}``)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            val = getattr(self, f.name)
            if f.name in ("clean_peak", "raw_peak", "necessity", "settings"):
                val = {} if val is None else val.to_json()
            elif isinstance(val, (CarryLevel, EffectLevel)):
                val = val.value
            out[f.name] = val
        return cast(dict[str, Any], json.loads(json.dumps(jsonable(out))))

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> CarryResult:
        """Inverse of :meth:`to_json` (layer keys back to ints)."""
        kw: dict[str, Any] = {f.name: d[f.name] for f in fields(cls) if f.name in d}
        for name in _LAYER_KEYED:
            kw[name] = {int(k): v for k, v in (d.get(name) or {}).items()}
        kw["layers"] = [int(x) for x in d.get("layers", [])]
        kw["level"] = CarryLevel(d["level"])
        kw["sufficiency_level"] = EffectLevel(d.get("sufficiency_level", "none"))
        nl = d.get("necessity_level")
        kw["necessity_level"] = None if nl is None else EffectLevel(nl)
        cp, rp, nec, st = (d.get(k) for k in ("clean_peak", "raw_peak", "necessity", "settings"))
        kw["clean_peak"] = CleanPeak.from_json(cp) if cp else None
        kw["raw_peak"] = Peak.from_json(rp) if rp else None
        kw["necessity"] = Necessity.from_json(nec) if nec else None
        kw["settings"] = CarrySettings.from_json(st) if st else None
        return cls(**kw)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write :meth:`to_json` as JSON (the demo's ``carry.json``; its ``kind`` is the test's
        kind, teacher or student)."""
        return write_json(path, self.to_json())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> CarryResult:
        """Read a file written by :meth:`save` (or the demo's ``carry.json``)."""
        d = read_json(path)
        if not isinstance(d, dict) or not {"verdict", "level", "sufficiency"} <= set(d):
            raise ValueError(f"{path} holds no carry test result (no verdict/level/sufficiency)")
        return cls.from_json(d)

    # ------------------------------------------------------------------ text and HTML

    def summary(self) -> str:
        """The verdict, the reference behaviors, the S(ℓ, α) grid and necessity, in words."""
        trait = f", trait {self.trait}" if self.trait else ""
        lines = [
            f"carry test ({self.kind}{trait}; metric {self.metric.get('metric')}): {self.verdict}"
        ]
        if not self.defined:
            return "\n".join(lines)
        ref = f"B_base={self.b_base:.3f}, B_teacher={self.b_teacher:.3f}"
        if self.b_neutral is not None:
            ref += f", B_neutral={self.b_neutral:.3f}"
        lines.append(ref)
        if self.offtarget_tol is not None:
            lines.append(
                f"off-target tolerance {self.offtarget_tol:.3f} nats "
                f"(teacher's own shift {self.offtarget_kl_teacher:.3f})"
            )
        lines.append("sufficiency S (random mean) [off-target KL]:")
        lines.append("layer |‖v‖ " + " ".join(f"α={a:<6g}" for a in self.alphas))
        lines.extend(self._grid_line(layer) for layer in self.layers)
        if self.necessity is not None:
            lines.append(self._necessity_line(self.necessity))
        return "\n".join(lines)

    def _grid_line(self, layer: int) -> str:
        cells = []
        for j in range(len(self.alphas)):
            nm = self._null_band(layer, j).get("mean")
            kl = self.offtarget_kl[layer][j] if self.offtarget_kl else None
            cell = f"{self.sufficiency[layer][j]:+.2f}"
            if nm is not None:
                cell += f"({nm:+.2f})"
            if kl is not None:
                cell += f"[{kl:.2f}]"
            cells.append(cell)
        return f"{layer:>5} |{self.vector_norms.get(layer, float('nan')):.3g} " + " ".join(cells)

    @staticmethod
    def _necessity_line(nec: Necessity) -> str:
        parts = []
        for key, val in nec.per_layer.items():
            if val.value is not None:
                parts.append(
                    f"ℓ{key}: {val.value:+.2f} (random {val.null['mean']:+.2f})"
                    if val.null.get("n")
                    else f"ℓ{key}: {val.value:+.2f}"
                )
        if nec.joint is not None and nec.joint.value is not None:
            parts.append(f"joint: {nec.joint.value:+.2f}")
        return f"necessity N ({nec.mode}): " + ", ".join(parts)

    def main_figure(self) -> Any:
        """Sufficiency S(ℓ, α) as a layer × α heatmap (None when the test is undefined)."""
        if not self.defined or not self.layers or not self.alphas:
            return None
        from steerlens.plots import heatmap

        return heatmap(
            [self.sufficiency[k] for k in self.layers],
            self.alphas,
            self.layers,
            title=f"Sufficiency S(ℓ, α): {self.level.value}",
            xlabel="α (multiples of v_ℓ)",
            ylabel="layer (block index)",
            zlabel="S",
        )

    def _html_details(self) -> str:
        """Per-layer sufficiency S(ℓ, α) with ‖v‖, and the clean and raw peaks."""
        if not self.defined:
            gap_rows = [["B_base", self.b_base], ["B_teacher", self.b_teacher], ["gap", self.gap]]
            return html_table(["reference", "value"], gap_rows)
        header = ["layer", "‖v‖", *(f"S at α={a:g}" for a in self.alphas)]
        rows = [
            [layer, self.vector_norms.get(layer), *self.sufficiency.get(layer, [])]
            for layer in self.layers
        ]
        out = html_table(header, rows)
        peaks = [("clean peak", self.clean_peak), ("raw peak", self.raw_peak)]
        peak_rows = [
            [name, p.sufficiency, p.layer, p.alpha, p.offtarget_kl, p.beats_null]
            for name, p in peaks
            if p is not None
        ]
        if peak_rows:
            head = ["peak", "S", "layer", "α", "off-target KL", "beats null"]
            out += html_table(head, peak_rows)
        return out
