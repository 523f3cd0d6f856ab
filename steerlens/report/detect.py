"""The detection bank's report (``steerlens experiment detect``), over the typed
:class:`~steerlens.pipeline.power.DetectionResult`: the answer (the best detector's held-out
power), the power curve as the headline figure, the classifier table folded."""

from __future__ import annotations

from steerlens.pipeline.power import DetectionResult, fraction
from steerlens.report.page import Report
from steerlens.report.shape import answer, folded, headline, section

__all__ = ["detect_answer", "section_detect"]


def detect_answer(rep: Report, det: DetectionResult) -> None:
    """The answer box and the power curve."""
    found = det.headline()
    sees = (
        "Every detector ran blind on students whose truth was fixed before training; rules "
        "were chosen on even seeds and the rates are those of the odd (held-out) seeds."
    )
    answer(rep, found, sees, {})
    headline(rep, det.main_figure())


def section_detect(rep: Report, det: DetectionResult) -> None:
    """Per loss, every detector as a classifier; the best one named."""
    best = ", ".join(f"{loss}: {name}" for loss, name in det.best.items()) or "none"
    section(rep, "Detectors as classifiers", "detectors", f"Best on the rule half: {best}.")
    with folded(rep, "Table: AUC, held-out FPR / TPR at the threshold and at p<α"):
        rep.table(
            [
                {
                    "detector": r.detector,
                    "loss": r.loss,
                    "neg / pos": f"{r.n_neg} / {r.n_pos}",
                    "AUC [95% CI]": r.auc_ci(),
                    "τ: FPR / TPR": f"{fraction(r.heldout_fpr)} / {fraction(r.heldout_tpr)}",
                    "p<α: FPR / TPR": f"{fraction(r.alpha_fpr)} / {fraction(r.alpha_tpr)}",
                }
                for r in det.rows
            ]
        )
