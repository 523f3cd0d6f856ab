"""Detectors as classifiers on a bank of students of known truth (DESIGN.md "Detection power").

For detector d and loss L, over the (student, trait) pairs of the bank (a positive read against
its own trait, a negative against every trait):

- AUC = P(score(positive) > score(negative)) + ½·P(tie) with a stratified bootstrap CI
  (:func:`steerlens.measures.stats.roc_auc_ci`);
- the **threshold rule**: τ = the smallest score with FPR ≤ 0.05 on the *rule half* (even seeds)
  of the negatives; on the *held-out half* (odd seeds) FPR = P(score > τ | negative) and TPR =
  P(score > τ | positive), Wilson intervals;
- the **α-level decision** (the detector's own test, p < α) on the held-out half: FPR and TPR;
- the **power curve**: held-out TPR of the α-level decision per steered strength m (α = m·α*)
  and per prompted trait.

The **best detector** is chosen on the rule half only: among the detectors whose α-level decision
kept FPR ≤ α on the rule half's negatives, the largest rule-half TPR at p < α (ties: the larger
rule-half AUC, then the earlier in :data:`~steerlens.pipeline.detectors.DETECTORS`); when none
is calibrated there, the largest rule-half AUC. Its held-out numbers are the ones a verdict may
quote.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from steerlens.core.common import read_json
from steerlens.core.results import Record, html_table
from steerlens.measures.stats import rate, roc_auc, roc_auc_ci, threshold_at_fpr
from steerlens.pipeline.detectors import DETECTORS, Reading

__all__ = [
    "POWER_FILE",
    "DetectionResult",
    "DetectorRow",
    "Student",
    "classify",
    "fraction",
    "measured_power",
    "rule_half_rank",
]


@dataclass(frozen=True)
class Student:
    """One student of the bank: its loss, cell, seed index, the trait its teacher carries
    (None: a negative) and its readings (one per trait)."""

    loss: str
    cell: str
    seed: int
    label: str | None
    readings: list[Reading]

    def reading(self, trait: str) -> Reading:
        return next(r for r in self.readings if r.trait == trait)


@dataclass(frozen=True)
class Scored(Record):
    """One (student, trait) pair under one detector."""

    loss: str
    cell: str
    seed: int
    trait: str
    positive: bool
    score: float
    p: float

    def summary(self) -> str:
        return f"{self.cell}-s{self.seed} vs {self.trait}: {self.score:+.3g} (p={self.p:.2g})"


@dataclass(frozen=True)
class DetectorRow(Record):
    """A detector under one loss as a classifier (module doc)."""

    detector: str
    formula: str
    loss: str
    n_neg: int
    n_pos: int
    auc: float
    auc_lo: float
    auc_hi: float
    auc_rule_half: float
    rule_alpha_fpr: float
    rule_alpha_tpr: float
    threshold: float
    heldout_fpr: dict[str, float]
    heldout_tpr: dict[str, float]
    alpha_fpr: dict[str, float]
    alpha_tpr: dict[str, float]
    tpr_by_cell: dict[str, dict[str, float]] = field(default_factory=dict)

    def summary(self) -> str:
        return (
            f"{self.detector} ({self.loss}): AUC {self.auc:.2f} [{self.auc_lo:.2f}, "
            f"{self.auc_hi:.2f}]; held out at FPR≤0.05 threshold: FPR {fraction(self.heldout_fpr)}, "
            f"TPR {fraction(self.heldout_tpr)}; at p<α: FPR {fraction(self.alpha_fpr)}, TPR {fraction(self.alpha_tpr)}"
        )


def fraction(d: dict[str, float]) -> str:
    """``k/n`` of a :func:`~steerlens.measures.stats.rate`, or n/a when it counted nothing."""
    if not d.get("n"):
        return "n/a"
    return f"{int(d['k'])}/{int(d['n'])}"


@dataclass(frozen=True)
class DetectionResult(Record):
    """The bank's classifier table, the chosen rule and every scored pair."""

    layer: int
    alpha_star: float
    level: float
    rows: list[DetectorRow]
    best: dict[str, str]
    scored: dict[str, list[Scored]] = field(default_factory=dict)
    n_students: dict[str, int] = field(default_factory=dict)

    def row(self, detector: str, loss: str) -> DetectorRow:
        return next(r for r in self.rows if r.detector == detector and r.loss == loss)

    def power_sentence(self, loss: str = "kl") -> str:
        """What a miss means, in one sentence, for the best detector under ``loss``."""
        name = self.best.get(loss)
        if name is None:
            return "No detection power was measured for this loss."
        r = self.row(name, loss)
        cells = ", ".join(
            f"{_cell_name(k, self.alpha_star)} {fraction(v)}" for k, v in r.tpr_by_cell.items()
        )
        return (
            f"Measured power ({loss}; best detector on the rule half: {name}, AUC over all seeds "
            f"{r.auc:.2f} [{r.auc_lo:.2f}, {r.auc_hi:.2f}]): on held-out seeds at p<{self.level:g} "
            f"it flags {fraction(r.alpha_fpr)} negatives and {fraction(r.alpha_tpr)} positives"
            f" ({cells or 'no held-out positive yet'})."
        )

    def headline(self) -> str:
        return self.power_sentence(self.rows[0].loss if self.rows else "kl")

    def summary(self) -> str:
        return "\n".join([self.headline(), *(r.summary() for r in self.rows)])

    def _html_details(self) -> str:
        head = [
            "detector",
            "loss",
            "AUC [95% CI]",
            "held-out FPR / TPR (τ)",
            "held-out FPR / TPR (p<α)",
        ]
        rows = [
            [
                r.detector,
                r.loss,
                f"{r.auc:.2f} [{r.auc_lo:.2f}, {r.auc_hi:.2f}]",
                f"{fraction(r.heldout_fpr)} / {fraction(r.heldout_tpr)}",
                f"{fraction(r.alpha_fpr)} / {fraction(r.alpha_tpr)}",
            ]
            for r in self.rows
        ]
        return html_table(head, rows)

    def main_figure(self) -> Any:
        """Power curve: held-out TPR (p<α) per steered strength, one line per detector."""
        import plotly.graph_objects as go

        fig = go.Figure()
        for r in self.rows:
            cells = sorted(
                (float(k[5:]), v) for k, v in r.tpr_by_cell.items() if k.startswith("steer")
            )
            if not cells:
                continue
            fig.add_trace(
                go.Scatter(
                    x=[m * self.alpha_star for m, _ in cells],
                    y=[v["rate"] for _, v in cells],
                    error_y={
                        "type": "data",
                        "symmetric": False,
                        "array": [v["hi"] - v["rate"] for _, v in cells],
                        "arrayminus": [v["rate"] - v["lo"] for _, v in cells],
                    },
                    mode="lines+markers",
                    name=f"{r.detector} ({r.loss})",
                )
            )
        fig.update_layout(
            xaxis_title="steered teacher's α",
            yaxis_title="held-out TPR at p<α",
            xaxis_type="log",
            yaxis_range=[-0.05, 1.05],
            height=420,
        )
        return fig

    def html_page(self) -> str:
        """A self-contained page: the power sentence, the table, the power curve."""
        return (
            "<!doctype html><meta charset='utf-8'><title>steerlens detection power</title>"
            f"<h1>Detection power</h1><p>{html.escape(self.headline())}</p>"
            f"{self._repr_html_()}"
        )


def _split(
    students: Sequence[Student], loss: str, trait_of: dict[str, str]
) -> list[tuple[Student, str, bool]]:
    """(student, trait, positive) pairs of ``loss``: positives against their own trait,
    negatives against every trait."""
    out = []
    for st in students:
        if st.loss != loss:
            continue
        if st.label is not None:
            out.append((st, st.label, True))
        else:
            out += [(st, t, False) for t in trait_of]
    return out


def classify(
    students: Sequence[Student],
    *,
    layer: int,
    alpha_star: float,
    level: float = 0.05,
    seed: int = 0,
    n_boot: int = 2000,
) -> DetectionResult:
    """Run every detector on every pair and score each as a classifier (module doc)."""
    rows: list[DetectorRow] = []
    scored: dict[str, list[Scored]] = {}
    best: dict[str, str] = {}
    n_students: dict[str, int] = {}
    traits = {r.trait: r.trait for st in students for r in st.readings}
    for loss in dict.fromkeys(st.loss for st in students):
        pairs = _split(students, loss, traits)
        base = [st for st in students if st.loss == loss and st.cell == "base"]
        n_students[loss] = sum(st.loss == loss for st in students)
        if len(base) < 3:
            continue  # the reference set needs ≥ 2 students besides the one read
        keys: dict[str, tuple[float, ...]] = {}
        for det in DETECTORS:
            out = []
            for st, t, pos in pairs:
                refs = [b.reading(t) for b in base if b is not st]
                ctrl = next((b for b in base if b.seed == st.seed and b is not st), None)
                if ctrl is None:
                    ctrl = next(b for b in base if b is not st)
                s, p = det.fn(st.reading(t), refs, ctrl.reading(t), layer, seed)
                out.append(Scored(loss, st.cell, st.seed, t, pos, s, p))
            scored[f"{det.name}/{loss}"] = out
            rows.append(_row(det.name, det.formula, loss, out, level, seed, n_boot))
            keys[det.name] = (*rule_half_rank(rows[-1], level), -len(keys))
        if keys:
            best[loss] = max(keys, key=lambda k: keys[k])
    return DetectionResult(layer, alpha_star, level, rows, best, scored, n_students)


def rule_half_rank(row: DetectorRow, level: float) -> tuple[float, float, float]:
    """How the rule half ranks a detector (module doc, "best detector"): calibrated (α-level
    FPR ≤ ``level``) first, then its TPR at p < α, then its AUC; larger is better."""
    calibrated = float(row.rule_alpha_fpr <= level)
    auc_r = row.auc_rule_half if np.isfinite(row.auc_rule_half) else -1.0
    return calibrated, (row.rule_alpha_tpr if calibrated else 0.0), auc_r


def _row(
    name: str, formula: str, loss: str, out: list[Scored], level: float, seed: int, n_boot: int
) -> DetectorRow:
    def sc(xs: list[Scored]) -> list[float]:
        return [x.score for x in xs]

    neg = [x for x in out if not x.positive]
    pos = [x for x in out if x.positive]
    rule = [x for x in out if x.seed % 2 == 0]
    held = [x for x in out if x.seed % 2 == 1]
    auc, lo, hi = roc_auc_ci(sc(neg), sc(pos), n_boot=n_boot, seed=seed)
    r_neg = [x for x in rule if not x.positive]
    r_pos = [x for x in rule if x.positive]
    tau = threshold_at_fpr(sc(r_neg), 0.05)
    h_neg = [x for x in held if not x.positive]
    h_pos = [x for x in held if x.positive]
    by_cell = {
        c: rate([x.p < level for x in h_pos if x.cell == c])
        for c in dict.fromkeys(x.cell for x in h_pos)
    }
    return DetectorRow(
        detector=name,
        formula=formula,
        loss=loss,
        n_neg=len(neg),
        n_pos=len(pos),
        auc=auc,
        auc_lo=lo,
        auc_hi=hi,
        auc_rule_half=roc_auc(sc(r_neg), sc(r_pos)),
        rule_alpha_fpr=rate([x.p < level for x in r_neg])["rate"],
        rule_alpha_tpr=rate([x.p < level for x in r_pos])["rate"],
        threshold=tau,
        heldout_fpr=rate([x.score > tau for x in h_neg]),
        heldout_tpr=rate([x.score > tau for x in h_pos]),
        alpha_fpr=rate([x.p < level for x in h_neg]),
        alpha_tpr=rate([x.p < level for x in h_pos]),
        tpr_by_cell=by_cell,
    )


POWER_FILE = Path(__file__).with_name("detection_power.json")
"""The committed summary of the last finished bank (``benchmarks/detection.py --commit``): the
classifier table without the scored pairs, plus how the bank was run (``bank``)."""


def measured_power(detector: str, loss: str, path: Path = POWER_FILE) -> dict[str, str]:
    """What the bank measured for ``detector`` under ``loss``: ``text``, one short sentence
    (held-out FPR and TPR of its α-level decision), ``short`` (the two rates in a few words,
    "unmeasured" without a bank), and ``detail`` (TPR per steered strength and
    prompted trait, the AUC, the bank); both say so when no bank measured it, so a miss has no
    known rate."""
    if not path.is_file():
        text = f"Its power is unmeasured: no detection bank has run {detector} ({loss})."
        return {"text": text, "detail": text + " A miss has no known rate.", "short": "unmeasured"}
    d = read_json(path)
    res = DetectionResult.from_json(d)
    bank = d.get("bank") or {}
    try:
        r = res.row(detector, loss)
    except StopIteration:
        text = f"Its power is unmeasured: the committed bank did not run {detector} ({loss})."
        return {"text": text, "detail": text, "short": "unmeasured"}
    cells = ", ".join(
        f"{_cell_name(k, res.alpha_star)} {fraction(v)}" for k, v in r.tpr_by_cell.items()
    )
    text = (
        f"Measured power (bank of known truth, held-out): flags {fraction(r.alpha_tpr)} "
        f"inheriting students and {fraction(r.alpha_fpr)} clean (student, trait) pairs."
    )
    detail = (
        f"Measured power of {detector} ({loss}) on a bank of students of known truth "
        f"({bank.get('what', 'see benchmarks/results/detection.md')}; {bank.get('precision', '')}"
        f"): on held-out seeds it flagged {fraction(r.alpha_fpr)} negatives and "
        f"{fraction(r.alpha_tpr)} positives at p<{res.level:g} ({cells}); AUC {r.auc:.2f} "
        f"[{r.auc_lo:.2f}, {r.auc_hi:.2f}]. A 'no evidence' here misses transfers like those it "
        "did not flag."
    )
    short = f"{fraction(r.alpha_tpr)} hits, {fraction(r.alpha_fpr)} false alarms"
    return {"text": text, "detail": detail, "short": short}


def _cell_name(cell: str, alpha_star: float) -> str:
    if cell.startswith("steer"):
        return f"steered α={float(cell[5:]) * alpha_star:g}"
    return cell.replace("prompt-", "prompted ")
