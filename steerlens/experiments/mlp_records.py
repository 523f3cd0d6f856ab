"""The typed results of the ``mlp-aux`` experiment (:mod:`steerlens.experiments.mlp_aux`):
``results.json`` is ``{"kind": "steerlens.mlp_aux", **MlpAuxResults.to_json()}``, and every part
of it is a :class:`~steerlens.core.results.Record` whose fields mirror the layout key by key (so
files of earlier runs load, and the file a run writes is the one it always wrote). The stages
build these; the verdict and the report read their attributes, parsed once
(``MlpAuxResults.from_json(results)``).

Notation (module doc of :mod:`~steerlens.experiments.mlp_aux`): per seed a teacher T, a
same-init student (``same``) and a different-init student (``diff``); over seeds the mean and
Student-t interval mean ± t_{0.975, n−1} · sd/√n (:func:`~.mlp_measure.t_interval`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from steerlens.core.results import OMIT, Record
from steerlens.track.results import ExcessAlignment, SeriesTrack

__all__ = [
    "KIND",
    "MlpAuxAccuracy",
    "MlpAuxBootstrap",
    "MlpAuxConfig",
    "MlpAuxCurves",
    "MlpAuxData",
    "MlpAuxEpochCurves",
    "MlpAuxFractions",
    "MlpAuxInitAcc",
    "MlpAuxInterval",
    "MlpAuxMargin",
    "MlpAuxPaperRow",
    "MlpAuxPermNull",
    "MlpAuxResults",
    "MlpAuxSeed",
    "MlpAuxSizes",
    "MlpAuxStudent",
    "MlpAuxSummary",
    "MlpAuxVerdict",
]

KIND = "steerlens.mlp_aux"
"""The ``kind`` of an mlp-aux ``results.json`` (the report picks its page by it)."""


# ------------------------------------------------------------------- over seeds


@dataclass
class MlpAuxInterval(Record):
    """mean and the Student-t interval [lo, hi] over n seeds (lo = hi = mean for one seed)."""

    mean: float = 0.0
    lo: float = 0.0
    hi: float = 0.0
    n: int = 0

    def summary(self) -> str:
        return f"{self.mean:.3f} [{self.lo:.3f}, {self.hi:.3f}] over {self.n}"


@dataclass
class MlpAuxBootstrap(Record):
    """A percentile bootstrap (:func:`steerlens.measures.stats.bootstrap`; also read from
    :func:`~steerlens.measures.stats.paired_bootstrap_mean`'s dict): the estimate on all items,
    the interval [lo, hi], the draws' sd ``se`` and their number."""

    estimate: float = 0.0
    lo: float = 0.0
    hi: float = 0.0
    se: float = 0.0
    n_boot: int = 0

    def summary(self) -> str:
        return f"{self.estimate:.3f} [{self.lo:.3f}, {self.hi:.3f}] ({self.n_boot} draws)"


@dataclass
class MlpAuxMargin(MlpAuxInterval):
    """Accuracy(same) − accuracy(different), paired by seed: its t-interval, the percentile
    bootstrap of its mean over seeds and the per-seed margins."""

    bootstrap_over_seeds: MlpAuxBootstrap = field(default_factory=MlpAuxBootstrap)
    per_seed: list[float] = field(default_factory=list)


@dataclass
class MlpAuxAccuracy(Record):
    """Test accuracy of the class logits over seeds: the teacher, the untrained init A₀ and
    the two students."""

    teacher: MlpAuxInterval = field(default_factory=MlpAuxInterval)
    init: MlpAuxInterval = field(default_factory=MlpAuxInterval)
    same_init: MlpAuxInterval = field(default_factory=MlpAuxInterval)
    different_init: MlpAuxInterval = field(default_factory=MlpAuxInterval)

    def summary(self) -> str:
        return (
            f"teacher {self.teacher.mean:.3f}, same-init {self.same_init.mean:.3f}, "
            f"different-init {self.different_init.mean:.3f}"
        )


@dataclass
class MlpAuxCurves(Record):
    """Per student kind, [site][tracked epoch] intervals over seeds of a track array."""

    same: list[list[MlpAuxInterval]] = field(default_factory=list)
    diff: list[list[MlpAuxInterval]] = field(default_factory=list)

    def summary(self) -> str:
        return f"{len(self.same)} sites × {len(self.same[0]) if self.same else 0} epochs"


@dataclass
class MlpAuxEpochCurves(Record):
    """Per student kind, [tracked epoch] intervals over seeds."""

    same: list[MlpAuxInterval] = field(default_factory=list)
    diff: list[MlpAuxInterval] = field(default_factory=list)

    def summary(self) -> str:
        return f"{len(self.same)} epochs"


@dataclass
class MlpAuxFractions(Record):
    """Per student kind, [site] fraction of seeds whose student beats a null (p < 0.05)."""

    same: list[float] = field(default_factory=list)
    diff: list[float] = field(default_factory=list)

    def summary(self) -> str:
        return f"same {self.same}, different {self.diff}"


@dataclass
class MlpAuxSummary(Record):
    """The ``summary`` block: accuracies, the margin and the alignment curves over seeds."""

    accuracy: MlpAuxAccuracy = field(default_factory=MlpAuxAccuracy)
    margin: MlpAuxMargin = field(default_factory=MlpAuxMargin)
    interval: str = ""
    epochs: list[int] = field(default_factory=list)
    sites: list[str] = field(default_factory=list)
    eas: MlpAuxCurves = field(default_factory=MlpAuxCurves)
    z_cov: MlpAuxCurves = field(default_factory=MlpAuxCurves)
    acc_by_epoch: MlpAuxEpochCurves = field(default_factory=MlpAuxEpochCurves)
    frac_seeds_beating_nulls_last_epoch: MlpAuxFractions = field(default_factory=MlpAuxFractions)
    #: None (written ``{}``) when some seed has no permutation null (files of earlier runs)
    frac_seeds_beating_permutation_null_last_epoch: MlpAuxFractions | None = None
    excess_last_epoch: list[MlpAuxInterval] = field(default_factory=list)
    iso_null_band: list[float] = field(default_factory=list)

    json_none: ClassVar[dict[str, Any]] = {"frac_seeds_beating_permutation_null_last_epoch": {}}

    def summary(self) -> str:
        m = self.margin
        return f"margin same − different {m.mean:+.3f} [{m.lo:+.3f}, {m.hi:+.3f}] over {m.n} seeds"


# ------------------------------------------------------------------- per seed


@dataclass
class MlpAuxInitAcc(Record):
    """Test accuracy of the untrained inits A₀ and B₀."""

    A: float = 0.0
    B: float = 0.0

    def summary(self) -> str:
        return f"init A {self.A:.3f}, B {self.B:.3f}"


@dataclass
class MlpAuxPermNull(Record):
    """The unit-permutation null (:func:`~.mlp_measure.permutation_null`): z and p,
    [tracked epoch][site]."""

    z: list[list[float]] = field(default_factory=list)
    p: list[list[float]] = field(default_factory=list)

    def summary(self) -> str:
        return f"permutation null, last epoch p {self.p[-1] if self.p else []}"


def _no_series() -> SeriesTrack:
    e = np.zeros((0, 0))
    return SeriesTrack("", [], [], e, e, e, e, e, e, e, e)


def _no_excess() -> ExcessAlignment:
    e = np.zeros((0, 0))
    return ExcessAlignment([], e, e, e, e)


@dataclass
class MlpAuxStudent(Record):
    """One student of one seed: its final and per-epoch accuracy, what it trained on (noise
    hash, init fingerprint), its alignment track and the permutation null (absent in files of
    earlier runs)."""

    acc: float = 0.0
    acc_by_epoch: list[float] = field(default_factory=list)
    noise_hash: str = ""
    init_fingerprint: str = ""
    track: SeriesTrack = field(default_factory=_no_series)
    perm_null: MlpAuxPermNull | None = None

    json_none: ClassVar[dict[str, Any]] = {"perm_null": OMIT}

    def summary(self) -> str:
        return f"accuracy {self.acc:.3f}; {self.track.summary()}"


@dataclass
class MlpAuxSeed(Record):
    """One seed (an element of ``seeds``): teacher, inits, both students, the excess
    alignment same − different and the isotropic null's 95% band of cos(·, vᵀ)."""

    seed: int = 0
    teacher_acc: float = 0.0
    init_acc: MlpAuxInitAcc = field(default_factory=MlpAuxInitAcc)
    teacher_shift_norm: dict[int, float] = field(default_factory=dict)
    epochs: list[int] = field(default_factory=list)
    same: MlpAuxStudent = field(default_factory=MlpAuxStudent)
    diff: MlpAuxStudent = field(default_factory=MlpAuxStudent)
    excess: ExcessAlignment = field(default_factory=_no_excess)
    iso_null_band: list[float] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"teacher {self.teacher_acc:.3f}, same-init {self.same.acc:.3f}, "
            f"different-init {self.diff.acc:.3f}"
        )


# ------------------------------------------------------------------- the run


@dataclass
class MlpAuxSizes(Record):
    """The per-dataset defaults filled in (``resolved``)."""

    teacher_epochs: int = 0
    student_epochs: int = 0
    n_noise: int = 0

    def summary(self) -> str:
        return (
            f"teacher {self.teacher_epochs} epochs, students {self.student_epochs} epochs of "
            f"{self.n_noise} noise images"
        )


@dataclass
class MlpAuxData(Record):
    """The data set: name, source, input width and split sizes (``data``)."""

    name: str = ""
    source: str = ""
    d_in: int = 0
    n_train: int = 0
    n_test: int = 0

    def summary(self) -> str:
        return f"{self.name} ({self.n_train} train / {self.n_test} test, d_in {self.d_in})"


@dataclass
class MlpAuxPaperRow(Record):
    """What a reference run reports for the two students (text: ``">0.50"``, ``"≈0.10"``)."""

    same_init: str = ""
    different_init: str = ""

    def summary(self) -> str:
        return f"same-init {self.same_init}, different-init {self.different_init}"


@dataclass
class MlpAuxVerdict(Record):
    """The headline, the lines it rests on and its strength (strong or none)."""

    headline: str = ""
    lines: list[str] = field(default_factory=list)
    strength: str = "weak"

    def summary(self) -> str:
        return "\n".join([self.headline, *(f"  {x}" for x in self.lines)])


def _opt(default: Any, help: str, **kw: Any) -> Any:
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class MlpAuxConfig:
    """Settings of the run. The architecture and optimiser are the paper's (hidden 256 × 2,
    3 auxiliary logits, Adam 3e-4, batch 1024); epochs and noise size default per dataset:
    Fashion-MNIST the paper's 5 teacher and 5 student epochs on 60000 noise images; the 8×8
    digits (1347 training images: 2 steps an epoch) 100 teacher epochs (200 steps) and 50
    student epochs of 16384 noise images (800 steps), tuned so the effect shows (it does not at
    5 epochs: see benchmarks/results/mlp_aux.json)."""

    dataset: str = _opt("digits", "data set", choices=("digits", "fashion-mnist"))
    n_seeds: int = _opt(5, "seeds (teacher + two students each)")
    hidden: int = _opt(256, "hidden width of both layers")
    n_aux: int = _opt(3, "auxiliary logits")
    lr: float = _opt(3e-4, "Adam learning rate")
    batch_size: int = _opt(1024, "training batch size")
    teacher_epochs: int | None = _opt(None, "teacher epochs (none: 5 fashion-mnist, 100 digits)")
    student_epochs: int | None = _opt(None, "student epochs (none: 5 fashion-mnist, 50 digits)")
    n_noise: int | None = _opt(None, "noise images (none: 60000 fashion-mnist, 16384 digits)")
    loss: str = _opt("mse", "distillation loss on the aux logits", choices=("mse", "kl"))
    n_track: int = _opt(10, "student epochs tracked (evenly spaced, the last included)")
    n_probe: int = _opt(2000, "held-out test images the shifts are measured on (at most)")
    n_null: int = _opt(1000, "random directions of the alignment nulls")
    n_boot: int = _opt(1000, "bootstrap resamples of the excess alignment")
    seed: int = _opt(0, "seed for every random choice")
    device: str = _opt("cpu", "cpu only: the networks are tiny", choices=("cpu",))

    @classmethod
    def for_device(cls, device: str | None = None, **overrides: Any) -> MlpAuxConfig:
        return dataclasses.replace(cls(), **overrides)

    @classmethod
    def quick(cls, **overrides: Any) -> MlpAuxConfig:
        """A smoke-test size (seconds): 3 seeds, 20 teacher and 4 student epochs of 2048 noise
        images; every stage runs, the numbers are too small to show the effect."""
        base = cls(
            n_seeds=3,
            teacher_epochs=20,
            student_epochs=4,
            n_noise=2048,
            n_track=2,
            n_probe=200,
            n_null=200,
            n_boot=200,
        )
        return dataclasses.replace(base, **overrides)

    def resolved(self) -> MlpAuxSizes:
        """The per-dataset defaults filled in."""
        fashion = self.dataset == "fashion-mnist"
        return MlpAuxSizes(
            teacher_epochs=self.teacher_epochs or (5 if fashion else 100),
            student_epochs=self.student_epochs or (5 if fashion else 50),
            n_noise=self.n_noise or (60000 if fashion else 16384),
        )


@dataclass
class MlpAuxResults(Record):
    """``results.json`` less its ``kind`` (:data:`KIND`, written beside): the run's config,
    sizes, data, the paper's numbers, the summary over seeds (key ``summary``), every seed,
    the verdict and the timings."""

    steerlens_version: str = ""
    config: MlpAuxConfig = field(default_factory=MlpAuxConfig)
    resolved: MlpAuxSizes = field(default_factory=MlpAuxSizes)
    data: MlpAuxData = field(default_factory=MlpAuxData)
    paper: dict[str, MlpAuxPaperRow] = field(default_factory=dict)
    over_seeds: MlpAuxSummary = field(default_factory=MlpAuxSummary)
    seeds: list[MlpAuxSeed] = field(default_factory=list)
    verdict: MlpAuxVerdict = field(default_factory=MlpAuxVerdict)
    timings_s: dict[str, float] = field(default_factory=dict)

    json_keys: ClassVar[dict[str, str]] = {"over_seeds": "summary"}

    def summary(self) -> str:
        return self.verdict.summary()

    def results_json(self) -> dict[str, Any]:
        """The ``results.json`` dict: ``{"kind": KIND, **to_json()}``."""
        return {"kind": KIND, **self.to_json()}
