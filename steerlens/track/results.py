"""Tracking results: per-series arrays, the excess alignment and the whole track.

Each is a :class:`~steerlens.core.results.Record` (``to_json`` / ``from_json`` / ``save`` / ``load``
derived from the fields). The JSON layout is the one every earlier release wrote (NaN as null),
so saved tracks and the report keep loading.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from steerlens.core.results import Record, html_table

__all__ = ["SERIES_ARRAYS", "AlignmentTrack", "ExcessAlignment", "SeriesTrack"]


SERIES_ARRAYS = ("eas", "proj", "norm", "z_iso", "p_iso", "z_cov", "p_cov", "p_adj")


@dataclass
class SeriesTrack(Record):
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

    def summary(self) -> str:
        """One line: the series, its steps and the last step's EAS range over layers."""
        last = self.eas[-1] if len(self.eas) else np.array([])
        finite = last[np.isfinite(last)]
        span = f"{finite.min():.3f}..{finite.max():.3f}" if finite.size else "n/a"
        return f"series {self.name!r}: steps {self.steps}, last-step EAS over layers {span}"

    def row(self, step: int) -> int:
        try:
            return self.steps.index(step)
        except ValueError:
            msg = f"series {self.name!r} has no step {step}; steps: {self.steps}"
            raise KeyError(msg) from None


@dataclass
class ExcessAlignment(Record):
    """EAS(main) − EAS(control) at common steps × layers, with bootstrap CIs over prompts and
    a one-sided bootstrap p = (1 + #{draws ≤ 0}) / (1 + n_boot)."""

    steps: list[int]
    estimate: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    p: np.ndarray
    level: float = 0.95
    n_boot: int = 1000

    def summary(self) -> str:
        """One line: the steps and the last step's excess range over layers."""
        last = self.estimate[-1] if len(self.estimate) else np.array([])
        finite = last[np.isfinite(last)]
        span = f"{finite.min():.3f}..{finite.max():.3f}" if finite.size else "n/a"
        return (
            f"excess alignment at steps {self.steps} ({self.level:.0%} bootstrap CI, "
            f"{self.n_boot} draws): last-step estimate over layers {span}"
        )


@dataclass
class AlignmentTrack(Record):
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

    #: the kind in its own JSON too (the layout earlier releases wrote, embedded in results.json)
    kind_in_json = True

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
        if name not in SERIES_ARRAYS:
            raise ValueError(f"unknown metric {name!r}: use one of {SERIES_ARRAYS} or 'excess'")
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

    def main_figure(self) -> Any:
        """Excess alignment of the best layer over steps with its CI (with a control series),
        else EAS as a layer × checkpoint heatmap."""
        from steerlens.core.plots import heatmap, lines_with_bands

        ex = self.excess
        if ex is not None and len(ex.estimate) and np.isfinite(ex.estimate[-1]).any():
            j = self.layers.index(self.best_layer("excess"))
            name = f"excess alignment, layer {self.layers[j]}"
            return lines_with_bands(
                ex.steps,
                {name: ex.estimate[:, j].tolist()},
                bands={name: (ex.lo[:, j].tolist(), ex.hi[:, j].tolist())},
                title=f"EAS(main) − EAS(control), {ex.level:.0%} bootstrap CI",
                xlabel="training step",
                ylabel="excess EAS (cosine units)",
                hline=0.0,
            )
        main = self._s("main")
        return heatmap(
            main.eas.T.tolist(),
            main.steps,
            self.layers,
            title="EAS: alignment of the student shift with the teacher vector",
            xlabel="training step",
            ylabel="layer (block index)",
            zlabel="EAS",
        )

    def _html_details(self) -> str:
        """Per-layer table at the last checkpoint: EAS, projection, norm, corrected p (and the
        control's EAS and the excess with its CI when a control was tracked)."""
        main = self._s("main")
        ctrl = self.series.get("control")
        last = main.steps[-1]
        header = ["layer", "EAS", "proj", "norm", "p_adj"]
        ex_row = None
        if self.excess is not None and last in self.excess.steps:
            ex_row = self.excess.steps.index(last)
        if ctrl is not None and last in ctrl.steps:
            header.append("EAS ctrl")
        if ex_row is not None:
            header += ["excess", "CI lo", "CI hi"]
        rows = []
        for j, layer in enumerate(self.layers):
            row: list[Any] = [layer, main.eas[-1, j], main.proj[-1, j], main.norm[-1, j]]
            row.append(main.p_adj[-1, j])
            if ctrl is not None and last in ctrl.steps:
                row.append(ctrl.eas[ctrl.row(last), j])
            if ex_row is not None and self.excess is not None:
                e = self.excess
                row += [e.estimate[ex_row, j], e.lo[ex_row, j], e.hi[ex_row, j]]
            rows.append([float(x) if isinstance(x, np.floating) else x for x in row])
        return f"<div>last step {last}</div>" + html_table(header, rows)
