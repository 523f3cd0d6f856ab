"""Typed views of the results dict the report draws (``results.json`` of ``steerlens demo``,
or the ``to_json()`` of one result). Each section's keys are read here, defensively, in one
place: a missing or malformed key gives an empty/NaN value, never a KeyError in a section."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "CARRY_LEVEL_CLASS",
    "BehaviorView",
    "CarryView",
    "ExcessView",
    "ScoreSeries",
    "ScreenView",
    "SeriesView",
    "TrackView",
    "VectorView",
    "carry_level_class",
    "num",
]

#: verdict box colour class of every level :func:`steerlens.carry.carry_test` can give
CARRY_LEVEL_CLASS: dict[str, str] = {
    "strongly carried": "strong",
    "weakly carried": "weak",
    "not carried": "none",
    "undefined": "undefined",
    "": "none",
}


def carry_level_class(level: str) -> str:
    """The colour class of a carry level; "weakly_carried" reads as "weakly carried"."""
    return CARRY_LEVEL_CLASS.get(level.replace("_", " ").strip().lower(), "none")


def num(x: Any) -> float:
    """A float, NaN for anything that is not a finite-able number (None, str)."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return float("nan")
    return float(x)


def _opt(x: Any) -> float | None:
    v = num(x)
    return v if math.isfinite(v) else None


def _map(d: Any) -> Mapping[str, Any]:
    return d if isinstance(d, Mapping) else {}


def _list(x: Any) -> list[Any]:
    return list(x) if isinstance(x, Sequence) and not isinstance(x, str) else []


def _grid(x: Any) -> list[list[float]]:
    return [[num(v) for v in _list(row)] for row in _list(x)]


def _layer_keyed(d: Any) -> dict[int, Any]:
    out: dict[int, Any] = {}
    for k, v in _map(d).items():
        try:
            out[int(k)] = v
        except (TypeError, ValueError):
            continue
    return dict(sorted(out.items()))


@dataclass
class VectorView:
    meta: Mapping[str, Any]
    norms: dict[int, float]
    split_half: dict[int, Mapping[str, Any]]

    @classmethod
    def of(cls, d: Mapping[str, Any]) -> VectorView:
        sh = _layer_keyed(_map(d.get("diagnostics")).get("split_half"))
        return cls(
            meta=_map(d.get("meta")),
            norms={k: num(v) for k, v in _layer_keyed(d.get("norms")).items()},
            split_half={k: _map(v) for k, v in sh.items()},
        )


@dataclass
class CarryView:
    level: str
    verdict: str
    defined: bool
    alphas: list[float]
    sufficiency: dict[int, list[float]]
    null_sufficiency: dict[int, list[Mapping[str, Any]]]
    necessity: Mapping[str, Any]
    clean_peak: Mapping[str, Any]
    raw_peak: Mapping[str, Any]
    b_base: float
    b_teacher: float
    b_neutral: float
    offtarget_tol: float | None
    units: str
    alpha_unit: str

    @classmethod
    def of(cls, c: Mapping[str, Any]) -> CarryView:
        settings = _map(c.get("settings"))
        return cls(
            level=str(c.get("level") or ""),
            verdict=str(c.get("verdict") or c.get("undefined_reason") or ""),
            defined=bool(c.get("defined", True)),
            alphas=[num(a) for a in _list(c.get("alphas"))],
            sufficiency={
                k: [num(v) for v in _list(r)] for k, r in _layer_keyed(c.get("sufficiency")).items()
            },
            null_sufficiency={
                k: [_map(b) for b in _list(r)]
                for k, r in _layer_keyed(c.get("null_sufficiency")).items()
            },
            necessity=_map(c.get("necessity")),
            clean_peak=_map(c.get("clean_peak")),
            raw_peak=_map(c.get("raw_peak")),
            b_base=num(c.get("b_base")),
            b_teacher=num(c.get("b_teacher")),
            b_neutral=num(c.get("b_neutral")),
            offtarget_tol=_opt(c.get("offtarget_tol")),
            units=str(_map(c.get("metric")).get("units") or "nats"),
            alpha_unit=str(settings.get("alpha_unit") or "vector"),
        )

    @property
    def short_units(self) -> str:
        """ "nats" of "nats (log-probability)"."""
        return self.units.split(" (")[0]

    @property
    def level_class(self) -> str:
        return carry_level_class(self.level)


@dataclass
class ScoreSeries:
    """One distilled series' trait score: B per checkpoint (step 0 = the base) and the
    per-prompt scores Bᵢ of its last checkpoint (empty when the metric has none)."""

    name: str
    steps: list[Any]
    scores: list[float]
    last_per_prompt: list[float] = field(default_factory=list)


def _score_series(b: Mapping[str, Any]) -> list[ScoreSeries]:
    """Every series of a behavior dict (a mapping with ``steps`` and ``scores``): the student
    (``main``) first, then the base control, then the rest (benign controls) in their order."""
    found = [
        ScoreSeries(
            str(k),
            _list(_map(v).get("steps")),
            [num(x) for x in _list(_map(v).get("scores"))],
            [num(x) for x in _list(_map(v).get("last_per_prompt"))],
        )
        for k, v in b.items()
        if isinstance(v, Mapping) and _list(v.get("steps")) and _list(v.get("scores"))
    ]
    rank = {"main": 0, "control": 1}
    return sorted(found, key=lambda s: rank.get(s.name, 2))


@dataclass
class BehaviorView:
    steps: list[Any]
    scores: list[float]
    control_steps: list[Any]
    control_scores: list[float]
    teacher: float | None
    benign_teacher: float | None
    metric: str
    units: str
    benign_steps: list[Any] = field(default_factory=list)
    benign_scores: list[float] = field(default_factory=list)
    #: every series (student first, then the base control, then benign controls)
    series: list[ScoreSeries] = field(default_factory=list)
    #: per-prompt scores of the base model
    base_per_prompt: list[float] = field(default_factory=list)
    #: the behavior deltas (``main_vs_control``, ``main_vs_benign_replicates``, …)
    deltas: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    n_prompts: int | None = None

    @classmethod
    def of(cls, b: Mapping[str, Any]) -> BehaviorView:
        main, ctrl, metric = _map(b.get("main")), _map(b.get("control")), _map(b.get("metric"))
        return cls(
            steps=_list(main.get("steps")),
            scores=[num(v) for v in _list(main.get("scores"))],
            control_steps=_list(ctrl.get("steps")),
            control_scores=[num(v) for v in _list(ctrl.get("scores"))],
            teacher=_opt(b.get("teacher")),
            benign_teacher=_opt(b.get("benign_teacher")),
            metric=str(metric.get("metric") or "score"),
            units=str(metric.get("units") or "nats"),
            benign_steps=_list(_map(b.get("benign")).get("steps")),
            benign_scores=[num(v) for v in _list(_map(b.get("benign")).get("scores"))],
            series=_score_series(b),
            base_per_prompt=[num(v) for v in _list(b.get("base_per_prompt"))],
            deltas={str(k): _map(v) for k, v in _map(b.get("deltas")).items() if _map(v)},
            n_prompts=n if isinstance(n := metric.get("n_prompts"), int) else None,
        )


@dataclass
class SeriesView:
    """One tracked series: per checkpoint (rows) × layer (columns) arrays."""

    steps: list[Any]
    eas: list[list[float]]
    proj: list[list[float]]
    norm: list[list[float]]
    z_iso: list[list[float]]
    z_cov: list[list[float]]
    p_adj: list[list[float]]

    @classmethod
    def of(cls, s: Any) -> SeriesView | None:
        s = _map(s)
        steps, eas = _list(s.get("steps")), _grid(s.get("eas"))
        if not steps or len(eas) != len(steps):
            return None
        return cls(
            steps=steps,
            eas=eas,
            proj=_grid(s.get("proj")),
            norm=_grid(s.get("norm")),
            z_iso=_grid(s.get("z_iso")),
            z_cov=_grid(s.get("z_cov")),
            p_adj=_grid(s.get("p_adj")),
        )


@dataclass
class ExcessView:
    steps: list[Any]
    estimate: list[list[float]]
    lo: list[list[float]]
    hi: list[list[float]]


@dataclass
class TrackView:
    layers: list[int]
    main: SeriesView | None
    control: SeriesView | None
    excess: ExcessView | None
    hidden_size: int | None
    correction: str

    @classmethod
    def of(cls, t: Mapping[str, Any]) -> TrackView:
        series, ex = _map(t.get("series")), _map(t.get("excess"))
        excess = None
        if _list(ex.get("estimate")):
            excess = ExcessView(
                steps=_list(ex.get("steps")),
                estimate=_grid(ex.get("estimate")),
                lo=_grid(ex.get("lo")),
                hi=_grid(ex.get("hi")),
            )
        return cls(
            layers=[int(x) for x in _list(t.get("layers")) if isinstance(x, int)],
            main=SeriesView.of(series.get("main")),
            control=SeriesView.of(series.get("control")),
            excess=excess,
            hidden_size=_hidden_size(_map(t.get("provenance"))),
            correction=str(_map(t.get("settings")).get("correction") or "multiplicity"),
        )


def _hidden_size(prov: Mapping[str, Any]) -> int | None:
    """d of the base model: ``provenance["base"]["hidden_size"]`` (what tracking writes), else
    a top-level ``provenance["hidden_size"]``."""
    for d in (_map(prov.get("base")).get("hidden_size"), prov.get("hidden_size")):
        if isinstance(d, int) and not isinstance(d, bool) and d > 0:
            return d
    return None


@dataclass
class ScreenView:
    layer: int | None
    layers: list[int]
    delta: list[float] = field(default_factory=list)
    datasets: list[str] = field(default_factory=list)
    responses: list[str] = field(default_factory=list)
    summary: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    @classmethod
    def of(cls, s: Mapping[str, Any]) -> ScreenView:
        layers = [int(x) for x in _list(s.get("layers")) if isinstance(x, int)]
        layer = s.get("layer") if isinstance(s.get("layer"), int) else None
        view = cls(layer=layer, layers=layers)
        if layer is None or layer not in layers:
            return view
        j = layers.index(layer)
        rows = _list(s.get("delta"))
        view.delta = [num(_list(r)[j]) if len(_list(r)) > j else math.nan for r in rows]
        view.datasets = [str(x) for x in _list(s.get("datasets"))]
        view.responses = [str(_map(x).get("response") or "") for x in _list(s.get("samples"))]
        view.summary = {str(k): _map(v) for k, v in _map(s.get("summary")).items()}
        return view
