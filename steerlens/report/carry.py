"""The carry-test section of a report: dose-response curves, the clean peak and its tables
(read from the run's :class:`~steerlens.carry.result.CarryResult`)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from steerlens.carry.peak import Peak
from steerlens.carry.result import CarryResult
from steerlens.core.results import OMIT, Record
from steerlens.report.figures import heatmap, lines_with_bands
from steerlens.report.page import Report
from steerlens.report.shape import folded, section
from steerlens.report.views import carry_level_class, num

__all__ = ["OwlNullSummary", "section_carry"]


@dataclass
class OwlNullSummary(Record):
    """What the report reads of a random-direction null of the carry test: its mean and its
    5% and 95% quantiles (each None, and left out of its JSON, where the null lacks it)."""

    mean: Any = None
    q05: Any = None
    q95: Any = None

    json_none: ClassVar[Mapping[str, Any]] = dict.fromkeys(("mean", "q05", "q95"), OMIT)

    @classmethod
    def of(cls, d: Any) -> OwlNullSummary:
        return cls.from_json(d) if isinstance(d, Mapping) else cls()

    def summary(self) -> str:
        return f"random mean {self.mean}, 5–95% [{self.q05}, {self.q95}]"


def _peak_row(name: str, p: Peak | None) -> dict[str, Any]:
    vs = None if p is None else p.vs_null
    nb = OwlNullSummary.of(None if vs is None else vs.null)
    return {
        "peak": name,
        "layer": None if p is None else p.layer,
        "α": None if p is None else p.alpha,
        "S": math.nan if p is None else num(p.sufficiency),
        "off-target KL (nats)": None if p is None else p.offtarget_kl,
        "tolerance (nats)": getattr(p, "tolerance", None),
        "random mean S": nb.mean,
        "random q95 S": nb.q95,
        "z": None if vs is None else vs.z,
        "p": None if vs is None else vs.p,
        "beats random": None if p is None else p.beats_null,
    }


def _carry_tables(rep: Report, c: CarryResult, units: str) -> None:
    peaks = [_peak_row("clean", c.clean_peak)]
    if c.raw_peak is not None:
        peaks.append({**_peak_row("raw", c.raw_peak), "tolerance (nats)": "(none)"})
    rep.text(
        "Peak sufficiency: the clean peak is the best S among grid cells whose off-target shift "
        "stays within the tolerance; the raw peak ignores the off-target check. Layer and α “—” "
        "mean no grid cell beat not steering (S = 0 at α = 0)."
    )
    rep.table(peaks)
    if c.clean_peak is not None and c.clean_peak.note:
        rep.text(str(c.clean_peak.note))
    nec = c.necessity
    if nec is not None and nec.per_layer:
        cells = [(str(k), v, v.reason or "") for k, v in nec.per_layer.items()]
        if (j := nec.joint) is not None:
            cells.append(("joint " + ", ".join(map(str, j.layers or [])), j, ""))
        rows = [
            {
                "layer": name,
                "N": v.value,
                "random mean N": OwlNullSummary.of(v.null).mean,
                "note": note,
            }
            for name, v, note in cells
        ]
        rep.text(
            "Necessity N = (B_teacher − B(teacher with v̂ projected out)) / (B_teacher − B_base); "
            f"mode {nec.mode}."
        )
        rep.table(rows, ["layer", "N", "random mean N", "note"])
    rep.table(
        {
            f"B_base ({units})": num(c.b_base),
            f"B_teacher ({units})": num(c.b_teacher),
            f"B_neutral ({units})": num(c.b_neutral),
            "off-target tolerance (nats)": c.offtarget_tol,
        }
    )


def section_carry(rep: Report, c: CarryResult) -> None:
    level = c.level.value
    why = c.verdict or c.undefined_reason or ""
    units = str(c.metric.get("units") or "nats").split(" (")[0]
    peak = c.clean_peak
    take = f"{level.capitalize()}."
    if (
        c.defined
        and peak is not None
        and math.isfinite(peak.sufficiency)
        and peak.layer is not None
    ):
        beats = "beats" if peak.beats_null else "does not beat"
        take = (
            f"{level.capitalize()}: adding α = {peak.alpha} × v at layer "
            f"{peak.layer} reproduces {peak.sufficiency:.0%} of the teacher's behavior "
            f"gap, which {beats} random directions of equal norm."
        )
    elif not c.defined:
        take = f"Carry test undefined: {why}"
    else:
        take = (
            f"{level.capitalize()}: no steering strength on the grid reproduced any of the "
            "teacher's behavior (sufficiency S = 0)"
        )
        nb = None if c.necessity is None else c.necessity.best
        n_best = math.nan if nb is None else num(nb.value)
        take += f"; necessity N = {n_best:.2f}." if math.isfinite(n_best) else "."
    section(rep, "Is the behavior carried by the vector? (carry test)", "carry", take)
    with folded(rep, "Carry verdict and numbers"):
        rep.verdict(level.capitalize(), [why], carry_level_class(level))
        if c.defined:
            _carry_tables(rep, c, units)
    if not c.defined:
        return
    layers, alphas = sorted(c.sufficiency), c.alphas
    unit = "vector" if c.settings is None else c.settings.alpha_unit
    alpha_x = f"α (multiples of v_ℓ; unit: {unit})"
    if layers and alphas:
        rep.figure(
            heatmap(
                [c.sufficiency[k] for k in layers],
                alphas,
                layers,
                title="Sufficiency S(ℓ, α)",
                xlabel=alpha_x,
                ylabel="layer (block index)",
                zlabel="S",
            )
        )
        best = max(layers, key=lambda k: max(c.sufficiency[k], default=-math.inf))
        nulls = [OwlNullSummary.of(b) for b in c.null_sufficiency.get(best, [])]
        bands = {}
        if len(nulls) == len(alphas):
            bands[f"random directions (ℓ{best}, 5–95%)"] = (
                [num(b.q05) for b in nulls],
                [num(b.q95) for b in nulls],
            )
        rep.figure(
            lines_with_bands(
                alphas,
                {f"layer {k}": c.sufficiency[k] for k in layers},
                bands=bands,
                title="Dose-response: sufficiency vs α",
                xlabel=alpha_x,
                ylabel="S (fraction of B_teacher − B_base)",
                hline=1.0,
            ),
            "S = 1 means adding α·v to the base reproduces the teacher's behavior; the grey band "
            "is random directions of equal norm (5–95%).",
        )
