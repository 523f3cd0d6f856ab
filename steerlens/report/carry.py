"""The carry-test section of a report: dose-response curves, the clean peak and its tables
(read through :class:`steerlens.report.views.CarryView`)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from steerlens.report.figures import heatmap, lines_with_bands
from steerlens.report.page import Report
from steerlens.report.shape import folded, section
from steerlens.report.views import CarryView, num

__all__ = ["section_carry"]


def _m(d: Any) -> Mapping[str, Any]:
    return d if isinstance(d, Mapping) else {}


def _peak_row(name: str, p: Mapping[str, Any]) -> dict[str, Any]:
    nb = _m(p.get("null"))
    return {
        "peak": name,
        "layer": p.get("layer"),
        "α": p.get("alpha"),
        "S": num(p.get("S")),
        "off-target KL (nats)": p.get("offtarget_kl"),
        "tolerance (nats)": p.get("tolerance"),
        "random mean S": nb.get("mean"),
        "random q95 S": nb.get("q95"),
        "z": p.get("z"),
        "p": p.get("p"),
        "beats random": p.get("beats_null"),
    }


def _carry_tables(rep: Report, c: CarryView) -> None:
    peaks = [_peak_row("clean", c.clean_peak)]
    if c.raw_peak:
        peaks.append({**_peak_row("raw", c.raw_peak), "tolerance (nats)": "(none)"})
    rep.text(
        "Peak sufficiency: the clean peak is the best S among grid cells whose off-target shift "
        "stays within the tolerance; the raw peak ignores the off-target check. Layer and α “—” "
        "mean no grid cell beat not steering (S = 0 at α = 0)."
    )
    rep.table(peaks)
    if c.clean_peak.get("note"):
        rep.text(str(c.clean_peak["note"]))
    nec = c.necessity
    per_layer = _m(nec.get("per_layer"))
    if per_layer:
        rows = [
            {
                "layer": k,
                "N": _m(v).get("N"),
                "random mean N": _m(_m(v).get("null")).get("mean"),
                "note": _m(v).get("reason", ""),
            }
            for k, v in per_layer.items()
        ]
        joint = _m(nec.get("joint"))
        if joint:
            rows.append(
                {
                    "layer": "joint " + ", ".join(map(str, joint.get("layers", []))),
                    "N": joint.get("N"),
                    "random mean N": _m(joint.get("null")).get("mean"),
                    "note": "",
                }
            )
        rep.text(
            "Necessity N = (B_teacher − B(teacher with v̂ projected out)) / (B_teacher − B_base); "
            f"mode {nec.get('mode')}."
        )
        rep.table(rows, ["layer", "N", "random mean N", "note"])
    rep.table(
        {
            f"B_base ({c.short_units})": c.b_base,
            f"B_teacher ({c.short_units})": c.b_teacher,
            f"B_neutral ({c.short_units})": c.b_neutral,
            "off-target tolerance (nats)": c.offtarget_tol,
        }
    )


def section_carry(rep: Report, c: CarryView) -> None:
    level = c.level.replace("_", " ").strip() or "carry test"
    peak = c.clean_peak
    take = f"{level.capitalize()}."
    if c.defined and num(peak.get("S")) == num(peak.get("S")) and peak.get("layer") is not None:
        beats = "beats" if peak.get("beats_null") else "does not beat"
        take = (
            f"{level.capitalize()}: adding α = {peak.get('alpha')} × v at layer "
            f"{peak.get('layer')} reproduces {num(peak.get('S')):.0%} of the teacher's behavior "
            f"gap, which {beats} random directions of equal norm."
        )
    elif not c.defined:
        take = f"Carry test undefined: {c.verdict}"
    else:
        take = (
            f"{level.capitalize()}: no steering strength on the grid reproduced any of the "
            "teacher's behavior (sufficiency S = 0)"
        )
        n_best = num(_m(c.necessity.get("best")).get("N"))
        take += f"; necessity N = {n_best:.2f}." if math.isfinite(n_best) else "."
    section(rep, "Is the behavior carried by the vector? (carry test)", "carry", take)
    with folded(rep, "Carry verdict and numbers"):
        rep.verdict(level.capitalize(), [c.verdict], c.level_class)
        if c.defined:
            _carry_tables(rep, c)
    if not c.defined:
        return
    layers, alphas = list(c.sufficiency), c.alphas
    alpha_x = f"α (multiples of v_ℓ; unit: {c.alpha_unit})"
    s_y = "S (fraction of B_teacher − B_base)"
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
        best = max(layers, key=lambda k: max((v for v in c.sufficiency[k]), default=-math.inf))
        bands = {}
        if len(c.null_sufficiency.get(best, [])) == len(alphas):
            bands[f"random directions (ℓ{best}, 5–95%)"] = (
                [num(b.get("q05")) for b in c.null_sufficiency[best]],
                [num(b.get("q95")) for b in c.null_sufficiency[best]],
            )
        rep.figure(
            lines_with_bands(
                alphas,
                {f"layer {k}": c.sufficiency[k] for k in layers},
                bands=bands,
                title="Dose-response: sufficiency vs α",
                xlabel=alpha_x,
                ylabel=s_y,
                hline=1.0,
            ),
            "S = 1 means adding α·v to the base reproduces the teacher's behavior; the grey band "
            "is random directions of equal norm (5–95%).",
        )
