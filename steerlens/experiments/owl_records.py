"""The owl experiment's ``results.json``, typed: :class:`OwlResults` is parsed once (at the
edge: the verdict, the report, :class:`~steerlens.experiments.result.ExperimentResult`) and
read by attribute downstream.

The parts the library already types are its own results: ``track`` an
:class:`~steerlens.track.results.AlignmentTrack`, ``carry`` a
:class:`~steerlens.carry.result.CarryResult`, ``screen`` a
:class:`~steerlens.screen.result.ScreenResult`, ``signature`` a
:class:`~steerlens.pipeline.signature.SignatureTest`. The rest (behavior per checkpoint with its
deltas, the teacher vector's numbers, the verdict) are the records below, each mirroring the
JSON the pipeline writes. :meth:`OwlResults.parse` is lenient: a part that is missing or
malformed is None (a partial or older file still reads), and the few required fields a partial
part lacks read as empty.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from steerlens.carry.result import CarryResult, CarrySettings
from steerlens.core.results import OMIT, Record, from_jsonable
from steerlens.pipeline.signature import SignatureTest
from steerlens.screen.result import ScreenResult
from steerlens.track.results import SERIES_ARRAYS, AlignmentTrack

__all__ = [
    "OwlAlignment",
    "OwlAnyLayer",
    "OwlBand",
    "OwlBehavior",
    "OwlDelta",
    "OwlExcessRow",
    "OwlLineage",
    "OwlModel",
    "OwlNamedDeltas",
    "OwlPower",
    "OwlResults",
    "OwlScores",
    "OwlSeriesRow",
    "OwlVector",
    "OwlVectorChecks",
    "OwlVerdict",
    "OwlVerdictNumbers",
    "carry_json",
    "parse_part",
]

NAN = math.nan
_BAD = (KeyError, TypeError, ValueError, IndexError, AttributeError)


# ------------------------------------------------------------------ behavior per checkpoint


@dataclass
class OwlDelta(Record):
    """A behavior delta: the paired bootstrap mean of per-prompt differences with its CI and
    sign-flip p (``<X>_vs_base``, ``main_vs_<C>``), or the prediction t-test of the student
    against the benign replicates (``main_vs_benign_replicates``: ``t``, ``df``, ``k`` …);
    keys a delta lacks are left out of its JSON."""

    estimate: float = NAN
    lo: float | None = None
    hi: float | None = None
    se: float | None = None
    n: int | None = None
    n_boot: int | None = None
    level: float | None = None
    t: float | None = None
    df: float | None = None
    k: float | None = None
    p: float = NAN
    replicate_mean: float | None = None
    replicate_sd: float | None = None
    pi_lo: float | None = None
    pi_hi: float | None = None
    test: str | None = None
    series: list[str] | None = None

    json_none: ClassVar[Mapping[str, Any]] = dict.fromkeys(
        ("lo", "hi", "se", "n", "n_boot", "level", "t", "df", "k", "replicate_mean"),
        OMIT,
    ) | dict.fromkeys(("replicate_sd", "pi_lo", "pi_hi", "test", "series"), OMIT)

    def summary(self) -> str:
        return f"delta {self.estimate:+.3f} [{self.lo}, {self.hi}], p={self.p:.2g}"


@dataclass
class OwlScores(Record):
    """One series' trait score B per checkpoint (step 0 = the base) and the per-prompt scores
    of its last checkpoint (None when the metric has none)."""

    steps: list[int] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    last_per_prompt: list[float] | None = None

    def summary(self) -> str:
        return f"B per checkpoint {self.scores} at steps {self.steps}"


@dataclass(frozen=True)
class OwlNamedDeltas:
    """The deltas of the student the verdict reads by name (None where not measured)."""

    main_vs_base: OwlDelta | None = None
    main_vs_control: OwlDelta | None = None
    main_vs_benign_replicates: OwlDelta | None = None

    @classmethod
    def of(cls, deltas: Mapping[str, OwlDelta]) -> OwlNamedDeltas:
        return cls(*(deltas.get(f.name) for f in dataclasses.fields(cls)))


def _series_key(k: str, v: Any) -> bool:
    return isinstance(v, Mapping) and "scores" in v and k != "metric"


@dataclass
class OwlBehavior(Record):
    """The behavior part: every series' scores (``series``: the student ``main`` first, then
    the base ``control``, then the benign controls; in the JSON each series sits at its own
    key beside the rest), the base's per-prompt scores, the teachers' B and the deltas."""

    series: dict[str, OwlScores] = field(default_factory=dict, metadata={"json": False})
    base_per_prompt: list[float] | None = None
    teacher: float = NAN
    benign_teacher: float = NAN
    metric: dict[str, Any] = field(default_factory=dict)
    deltas: dict[str, OwlDelta] = field(default_factory=dict)
    series_roles: dict[str, str] | None = None

    json_none: ClassVar[Mapping[str, Any]] = {"series_roles": OMIT}

    @classmethod
    def _upgrade(cls, d: dict[str, Any]) -> dict[str, Any]:
        """The series (keys whose value has ``scores``) gathered under ``series``."""
        found = {k: v for k, v in d.items() if _series_key(k, v)}
        rank = {"main": 0, "control": 1}
        return {**d, "series": dict(sorted(found.items(), key=lambda kv: rank.get(kv[0], 2)))}

    @property
    def main(self) -> OwlScores | None:  # the student's series (None: not measured)
        return self.series.get("main")

    @property
    def control(self) -> OwlScores | None:  # the base control's
        return self.series.get("control")

    @property
    def metric_name(self) -> str:
        return str(self.metric.get("metric") or "score")

    @property
    def units(self) -> str:
        return str(self.metric.get("units") or "nats")

    @property
    def n_prompts(self) -> int | None:
        n = self.metric.get("n_prompts")
        return n if isinstance(n, int) else None

    def summary(self) -> str:
        return f"behavior of {list(self.series)} ({self.metric_name}); deltas {list(self.deltas)}"


# ------------------------------------------------------------------ the teacher vector


@dataclass
class OwlBand(Record):
    """A bootstrap mean with its interval (the split-half cosine of one layer)."""

    mean: float = NAN
    lo: float = NAN
    hi: float = NAN
    n_boot: int | None = None

    json_none: ClassVar[Mapping[str, Any]] = {"n_boot": OMIT}

    def summary(self) -> str:
        return f"{self.mean:.3f} [{self.lo:.3f}, {self.hi:.3f}]"


@dataclass
class OwlVectorChecks(Record):
    """The teacher vector's diagnostics: split-half reliability and agreement per layer, and
    the prompt counts."""

    split_half: dict[int, OwlBand] = field(default_factory=dict)
    agreement: dict[str, Any] | None = None
    n_pos: int | None = None
    n_neg: int | None = None

    json_none: ClassVar[Mapping[str, Any]] = dict.fromkeys(("agreement", "n_pos", "n_neg"), OMIT)

    def summary(self) -> str:
        return f"split-half reliability at layers {sorted(self.split_half)}"


@dataclass
class OwlVector(Record):
    """The teacher vector's numbers in the results (``SteeringVector.to_json()`` without its
    directions): provenance, diagnostics and norms per layer."""

    meta: dict[str, Any] = field(default_factory=dict)
    diagnostics: OwlVectorChecks = field(default_factory=OwlVectorChecks)
    norms: dict[int, float] = field(default_factory=dict)

    def summary(self) -> str:
        return f"teacher vector at layers {list(self.norms)}"


# ------------------------------------------------------------------ lineage


@dataclass
class OwlModel(Record):
    """A model's provenance (``steerlens.loading.models.describe``): name, source, fingerprint,
    shape, architecture and precision."""

    name: str | None = None
    source: str | None = None
    fingerprint: str | None = None
    n_layers: int | None = None
    hidden_size: int | None = None
    architecture: str | None = None
    precision: dict[str, Any] | None = None
    dtype: str | None = None
    device: str | None = None

    json_none: ClassVar[Mapping[str, Any]] = {"dtype": OMIT, "device": OMIT}

    def summary(self) -> str:
        return f"{self.name} ({self.architecture}, {self.n_layers} layers, d={self.hidden_size})"


@dataclass
class OwlLineage(Record):
    """A run's ``lineage`` (:func:`steerlens.pipeline.lineage_json`): the base model, the
    teachers (``teacher``/``benign_teacher``, or svd's ``teachers`` by name), each series'
    data record and its source, the keyword filter's counts, every student's record
    ({name: record}, or svd's {loss: {teacher: record}}), the seeds and the version. Parts
    an experiment does not record are left out."""

    base: OwlModel = field(default_factory=OwlModel)
    teacher: dict[str, Any] | None = None
    benign_teacher: dict[str, Any] | None = None
    teachers: dict[str, dict[str, Any]] | None = None
    data: dict[str, dict[str, Any]] | None = None
    data_source: dict[str, str | None] | None = None
    filter: dict[str, dict[str, Any]] | None = None
    students: dict[str, dict[str, Any]] | None = None
    seeds: dict[str, Any] | None = None
    steerlens_version: str | None = None

    json_none: ClassVar[Mapping[str, Any]] = dict.fromkeys(
        ("teacher", "benign_teacher", "teachers", "data", "data_source", "filter", "students"),
        OMIT,
    ) | dict.fromkeys(("seeds", "steerlens_version"), OMIT)

    def summary(self) -> str:
        return f"lineage of {len(self.students or {})} students from {self.base.name}"


# ------------------------------------------------------------------ the verdict


@dataclass
class OwlSeriesRow(Record):
    """One series' alignment at ℓ*, last checkpoint: EAS, the null z and p, the Holm p, the
    one-sided p = max(p_iso, p_cov) and the two-sided normal p from the z-scores."""

    eas: float = NAN
    z_iso: float = NAN
    p_iso: float = NAN
    z_cov: float = NAN
    p_cov: float = NAN
    p_adj: float = NAN
    p: float = NAN
    p_two_sided: float = NAN
    step: int = 0

    def summary(self) -> str:
        return f"EAS {self.eas:+.3f} at step {self.step} (p={self.p:.2g})"


@dataclass
class OwlExcessRow(Record):
    """EAS(student) − EAS(control) at ℓ*, last step: estimate, bootstrap CI and p."""

    estimate: float = NAN
    lo: float = NAN
    hi: float = NAN
    p: float = NAN
    level: float = 0.95

    def summary(self) -> str:
        return f"excess {self.estimate:+.3f} [{self.lo:+.3f}, {self.hi:+.3f}], p={self.p:.2g}"


@dataclass
class OwlAnyLayer(Record):
    """The any-layer test (reported only): the smallest adjusted p and where."""

    min_p_adj: float = NAN
    layer: int | None = None
    n_significant: int = 0
    n_layers: int = 0
    correction: str = "holm"

    def summary(self) -> str:
        return f"{self.n_significant}/{self.n_layers} layers; min p_adj {self.min_p_adj:.2g}"


@dataclass
class OwlAlignment(Record):
    """The alignment at the headline layer ℓ* (fixed from the teacher side) and the rule that
    chose it; ``signature`` the activation claim (``signature_rule``: the model-level
    detector, when there was one)."""

    layer: int | None = None
    rule: str = ""
    selection: str = ""
    student: OwlSeriesRow | None = None
    control: OwlSeriesRow | None = None
    excess_vs_control: OwlExcessRow | None = None
    any_layer: OwlAnyLayer | None = None
    benign: OwlSeriesRow | None = None
    excess_vs_benign: OwlExcessRow | None = None
    signature: bool = False
    signature_rule: str | None = None

    json_none: ClassVar[Mapping[str, Any]] = {
        "benign": OMIT,
        "excess_vs_benign": OMIT,
        "signature_rule": OMIT,
    }

    def summary(self) -> str:
        return f"layer {self.layer} ({self.rule}): signature {self.signature}"


@dataclass
class OwlPower(Record):
    """The measured power of the rules that decided: text, detail and (not saved) the short."""

    text: str = ""
    detail: str = ""
    short: str = field(default="", metadata={"json": False})

    def summary(self) -> str:
        return self.text


@dataclass
class OwlVerdictNumbers(Record):
    """The numbers the verdict rests on (and the earlier keys, kept for older readers)."""

    signature: SignatureTest | None = None
    alpha: float = 0.05
    claim: str = ""
    behavior: dict[str, OwlDelta] = field(default_factory=dict)
    alignment: OwlAlignment | None = None
    carry_level: str | None = None
    excess_alignment: float | None = None
    excess_layer: int | None = None
    significant_layers: int | None = None

    def summary(self) -> str:
        return f"claim {self.claim!r} at α={self.alpha:g}"


@dataclass
class OwlVerdict(Record):
    """The plain-words verdict (:func:`steerlens.experiments.verdict.verdict`)."""

    headline: str = ""
    lines: list[str] = field(default_factory=list)
    strength: str = ""
    claim: str = ""
    flags: list[str] = field(default_factory=list)
    power: OwlPower | None = None
    numbers: OwlVerdictNumbers = field(default_factory=OwlVerdictNumbers)

    def summary(self) -> str:
        return "\n".join([self.headline, *(f"  {x}" for x in self.lines)])


# ------------------------------------------------------------------ the whole results


_SETTINGS = {f.name for f in dataclasses.fields(CarrySettings) if f.default is dataclasses.MISSING}


def carry_json(d: Mapping[str, Any]) -> dict[str, Any]:
    """A carry part with the fields a partial one lacks (its level in words, "_" as " ")."""
    out: dict[str, Any] = {"trait": None, "metric": {}, "b_base": None, "b_teacher": None}
    level = str(d.get("level") or "not carried").replace("_", " ").strip().lower()
    peak, settings = d.get("clean_peak"), d.get("settings") or {}
    fixed = {"level": level, "clean_peak": {} if peak is None else peak}
    fixed["settings"] = settings if set(settings) >= _SETTINGS else {}  # a partial one: none
    return out | {"gap": None, "defined": True, "verdict": "", **d, **fixed}


def _track_json(d: Mapping[str, Any]) -> dict[str, Any]:
    """A track part with the fields a partial one lacks (series names, paths, arrays)."""
    empty: dict[str, list[Any]] = {k: [] for k in (*SERIES_ARRAYS, "paths", "first_block")}
    series = {k: {"name": k, **empty, **s} for k, s in (d.get("series") or {}).items()}
    ex = d.get("excess")
    excess = {"p": [], **ex} if ex else None
    return {"settings": {}, "provenance": {}, **d, "series": series, "excess": excess}


def _screen_json(d: Mapping[str, Any]) -> dict[str, Any]:
    """A screen part whose samples may lack their prompt or the base's response (and its
    projections, unknown then)."""
    samples = [{"user": "", "base_response": "", **s} for s in d.get("samples") or []]
    unknown = [[None for _ in row] for row in d.get("delta") or []]
    return {"proj_train": unknown, "proj_base": unknown, **d, "samples": samples}


_FILL = dict(carry=carry_json, track=_track_json, track_benign=_track_json, screen=_screen_json)


def parse_part(tp: Any, d: Any, fill: Any = None) -> Any:
    """``d`` read as a ``tp`` (after ``fill``), or None where it is missing or malformed."""
    if not d:
        return None
    try:
        return from_jsonable(tp, fill(d) if fill else d)
    except _BAD:
        return None


@dataclass
class OwlResults(Record):
    """The owl experiment's ``results.json`` (and any subset of it: a report of one part).

    Every key but the file's ``kind`` (the experiment's name, read by
    :class:`~steerlens.experiments.result.ExperimentResult`). ``config`` is the run's config
    as JSON; ``timings_s`` seconds per stage."""

    steerlens_version: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    trait: str | None = None
    lineage: OwlLineage | None = None
    teacher_vector: OwlVector | None = None
    carry: CarryResult | None = None
    behavior: OwlBehavior | None = None
    track: AlignmentTrack | None = None
    track_benign: AlignmentTrack | None = None
    screen: ScreenResult | None = None
    signature: SignatureTest | None = None
    verdict: OwlVerdict | None = None
    timings_s: dict[str, float] = field(default_factory=dict)

    json_none: ClassVar[Mapping[str, Any]] = dict.fromkeys(
        ("trait", "lineage", "teacher_vector", "carry", "behavior", "track", "track_benign"),
        OMIT,
    ) | dict.fromkeys(("screen", "verdict"), OMIT)

    @classmethod
    def parse(cls, d: Mapping[str, Any]) -> OwlResults:
        """:meth:`from_json`, leniently: each part that is missing or malformed is None."""
        hints = typing.get_type_hints(cls)
        kw = {
            f.name: parse_part(hints[f.name], d[f.name], _FILL.get(f.name))
            for f in dataclasses.fields(cls)
            if isinstance(d, Mapping) and d.get(f.name) is not None
        }
        return cls(**{k: v for k, v in kw.items() if v is not None})

    @property
    def alpha(self) -> float:
        """The significance level of every claim (the config's ``alpha``, 0.05 without)."""
        return float(self.config.get("alpha", 0.05))

    @property
    def loss(self) -> str:
        return str(self.config.get("loss", "kl"))

    def parts(self) -> dict[str, Record]:
        """The typed sub-results this run holds (track, carry, screen), by name."""
        found = {"track": self.track, "carry": self.carry, "screen": self.screen}
        return {k: v for k, v in found.items() if v is not None}

    def summary(self) -> str:
        if self.verdict is None:
            return "no verdict"
        return self.verdict.summary()
