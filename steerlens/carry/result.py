"""The carry test's result: :class:`CarryResult` and its typed parts (:class:`CarrySettings`,
peaks in :mod:`steerlens.carry.peak`, necessity in :mod:`steerlens.carry.necessity`).

Both are :class:`~steerlens.core.results.Record` s: the JSON the report and the demo's results.json
read (layer keys as strings, non-finite floats as None, parts not run as ``{}``) is derived
from the fields.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from steerlens.carry.levels import CarryLevel, EffectLevel
from steerlens.carry.necessity import Necessity
from steerlens.carry.nulls import NullBand
from steerlens.carry.peak import CleanPeak, Peak
from steerlens.core.results import OMIT, Record, html_table

__all__ = ["CarryResult", "CarrySettings", "CarryUndefinedError"]


class CarryUndefinedError(ValueError):
    """B_teacher − B_base is ~0, so sufficiency and necessity fractions are undefined."""


@dataclass(frozen=True)
class CarrySettings(Record):
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
    precision: dict[str, str] | None = None

    json_none: ClassVar[dict[str, Any]] = {"targets": OMIT, "precision": OMIT}

    def summary(self) -> str:
        return (
            f"carry settings: model {self.model}, teacher {self.teacher}, {self.n_random} "
            f"random directions, seed {self.seed}, α in {self.alpha_unit} units"
        )


@dataclass
class CarryResult(Record):
    """Every number of a carry test. Dict keys of per-layer fields are layer indices.

    ``sufficiency[ℓ][j]`` is S(ℓ, alphas[j]); ``behavior`` the raw B there; ``offtarget_kl`` the
    off-target shift; ``null_sufficiency[ℓ][j]`` / ``null_offtarget_kl`` the random-direction
    bands; ``clean_peak`` / ``raw_peak`` with their null comparison (None when undefined);
    ``necessity`` per layer and joint (None: not tested); ``verdict`` a sentence with the
    numbers, ``level`` its category (:class:`~steerlens.carry.levels.CarryLevel`, equal to its
    string value).

    ``kind`` (the test's: ``"teacher"``, ``"student"`` …) is saved as ``"carry_kind"``, so it
    never collides with the file's kind; older files (``kind`` the test's, or no kind at
    all: the pipeline's ``carry.json``) still load.
    """

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

    json_keys: ClassVar[dict[str, str]] = {"kind": "carry_kind"}
    json_none: ClassVar[dict[str, Any]] = {
        "clean_peak": {},
        "raw_peak": {},
        "necessity": {},
        "settings": {},
    }

    @classmethod
    def _is_legacy(cls, d: Mapping[str, Any]) -> bool:
        """Files of older releases: the test's kind (or none) beside the carry's numbers."""
        kind = d.get("kind")
        own = kind is None or not str(kind).startswith("steerlens.")
        return own and {"verdict", "level", "sufficiency"} <= set(d)

    @classmethod
    def _upgrade(cls, d: dict[str, Any]) -> dict[str, Any]:
        """Older files carry the test's kind as ``kind``."""
        if "carry_kind" not in d and not str(d.get("kind")).startswith("steerlens."):
            d["carry_kind"] = d.get("kind")
        return d

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
        from steerlens.core.plots import heatmap

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
