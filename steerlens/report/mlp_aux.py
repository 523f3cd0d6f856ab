"""The report of the ``mlp-aux`` experiment (``results.json`` of kind ``steerlens.mlp_aux``,
read once as :class:`~steerlens.experiments.mlp_records.MlpAuxResults`): the verdict, the
accuracy table beside the paper's numbers, accuracy and alignment curves per tracked epoch
(t-interval bands over seeds, the isotropic null band), the excess alignment and the per-seed
table."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from steerlens.experiments.mlp_records import MlpAuxInterval, MlpAuxResults, MlpAuxSummary
from steerlens.report.figures import lines_with_bands
from steerlens.report.page import Report
from steerlens.report.shape import answer, evidence, headline, section, verdict_lines

__all__ = ["render_mlp_aux"]


def _ci(d: MlpAuxInterval) -> str:
    return f"{d.mean:.1%} [{d.lo:.1%}, {d.hi:.1%}]"


def _series(
    cells: Mapping[str, Sequence[MlpAuxInterval]],
) -> tuple[dict[str, list[float]], dict[str, tuple[list[float], list[float]]]]:
    """Per label: the means over seeds, and their t-interval band (lo, hi)."""
    means = {k: [c.mean for c in v] for k, v in cells.items()}
    return means, {k: ([c.lo for c in v], [c.hi for c in v]) for k, v in cells.items()}


def _headline_figure(rep: Report, s: MlpAuxSummary) -> None:
    """The headline: same-init and different-init students' test accuracy per epoch (bands:
    t-interval over seeds), the teacher's and chance as reference lines."""
    series, bands = _series(
        {"same-init student": s.acc_by_epoch.same, "different-init student": s.acc_by_epoch.diff}
    )
    fig = lines_with_bands(
        s.epochs,
        series,
        bands=bands,
        title="Student test accuracy by epoch: same init vs different init",
        xlabel="student epoch",
        ylabel="test accuracy (fraction)",
        hline=0.1,
    )
    if math.isfinite(s.accuracy.teacher.mean):
        fig.add_hline(
            y=s.accuracy.teacher.mean,
            line={"dash": "dash", "color": "#2b8a3e"},
            annotation_text="teacher",
        )
    headline(rep, fig, "Bands: 95% t-interval over seeds. Dotted: chance (10%).")


def _accuracy(rep: Report, res: MlpAuxResults) -> None:
    s = res.over_seeds
    acc, n = s.accuracy, s.margin.n
    section(
        rep,
        "Accuracy beside the paper",
        "accuracy",
        f"Same-init minus different-init accuracy: {_ci(s.margin)} over {n} seeds "
        "(the paper: a same-init student beats chance, a different-init one does not).",
    )
    rows = [
        {
            "run": f"this run: {res.data.name} ({n} seeds)",
            "same-init student": _ci(acc.same_init),
            "different-init student": _ci(acc.different_init),
            "teacher": _ci(acc.teacher),
            "same − different": _ci(s.margin),
        }
    ]
    for name, p in res.paper.items():
        rows.append(
            {
                "run": name,
                "same-init student": p.same_init,
                "different-init student": p.different_init,
                "teacher": "",
                "same − different": "",
            }
        )
    rep.table(rows)
    r, boot = res.resolved, s.margin.bootstrap_over_seeds
    rep.text(
        f"Test accuracy of the class logits (never trained in the students), mean and {s.interval}. "
        f"Teacher {r.teacher_epochs} epochs on the class logits; students {r.student_epochs} "
        f"epochs on {r.n_noise} uniform noise images, loss {res.config.loss} on the "
        f"{res.config.n_aux} auxiliary logits; the untrained init scores "
        f"{_ci(acc.init)}. Percentile bootstrap of the margin over seeds: "
        f"[{boot.lo:+.1%}, {boot.hi:+.1%}]."
    )


def _alignment(rep: Report, s: MlpAuxSummary) -> None:
    ex = s.excess_last_epoch
    section(
        rep,
        "Mechanism: alignment of the student shift with the teacher shift",
        "alignment",
        "Excess alignment same − different init at the last epoch: "
        + "; ".join(
            f"{site} {e.mean:+.2f} [{e.lo:+.2f}, {e.hi:+.2f}]"
            for site, e in zip(s.sites, ex, strict=False)
        )
        + ".",
    )
    rep.text(
        "Per site, the teacher shift vᵀ = mean h(teacher) − mean h(init A) and each student's "
        "shift against its own initialisation, on held-out test images; EAS = cos(vˢ, vᵀ). "
        "A different-init student is compared in its own coordinates with vᵀ in A's: its "
        "units are unrelated to A's, so the theory expects EAS at the null there."
    )
    lo_n, hi_n = s.iso_null_band
    for j, site in enumerate(s.sites):
        series, bands = _series({"same init": s.eas.same[j], "different init": s.eas.diff[j]})
        null = ([lo_n] * len(s.epochs), [hi_n] * len(s.epochs))
        rep.figure(
            lines_with_bands(
                s.epochs,
                series,
                bands={**bands, "isotropic null 95%": null},
                title=f"EAS at {site} by student epoch",
                xlabel="student epoch",
                ylabel="cos(student shift, teacher shift)",
                hline=0.0,
            )
        )
    frac = s.frac_seeds_beating_nulls_last_epoch
    perm = s.frac_seeds_beating_permutation_null_last_epoch
    rep.open_details("Numbers per site")
    rep.table(
        [
            {
                "site": site,
                "EAS same (last epoch)": s.eas.same[j][-1].mean,
                "EAS different (last epoch)": s.eas.diff[j][-1].mean,
                "excess same − different": f"{ex[j].mean:+.3f} [{ex[j].lo:+.3f}, {ex[j].hi:+.3f}]",
                "seeds beating both nulls: same": frac.same[j],
                "different": frac.diff[j],
                "seeds beating the permutation null: same": perm.same[j] if perm else None,
                "different ": perm.diff[j] if perm else None,
            }
            for j, site in enumerate(s.sites)
        ]
    )
    rep.close_details()
    rep.text(
        "Excess: mean over seeds with its t-interval; each seed's excess is bootstrapped over "
        "test images in results.json. Nulls: isotropic and covariance-matched (the init's "
        "activations), Holm over sites; both miss the sign pattern every ReLU shift shares, so "
        "a different-init student beats them too. The unit-permutation null (vᵀ's coordinates "
        "shuffled: what a different initialisation does to unit identities) and the "
        "different-init student itself (the excess) are the controls that separate the "
        "shared-init channel."
    )


def render_mlp_aux(results: Mapping[str, Any], title: str | None = None) -> Report:
    """The report page of an ``mlp-aux`` results dict."""
    res = MlpAuxResults.from_json(results)
    rep = Report(
        title or f"steerlens mlp-aux: subliminal learning in an MLP ({res.data.name})",
        f"steerlens {res.steerlens_version}",
    )
    v = res.verdict
    answer(
        rep,
        v.headline.rstrip(".") + ".",
        f"The test compares students that share the teacher's initialisation with students "
        f"that do not, over {res.over_seeds.margin.n} seeds; it sees the shared-init channel "
        "through the class logits the students never trained",
        v.to_json(),
        v.strength,
    )
    _headline_figure(rep, res.over_seeds)
    _accuracy(rep, res)
    _alignment(rep, res.over_seeds)
    with evidence(rep):
        verdict_lines(rep, v.to_json())
        rep.subheading("Per seed")
        rep.table(
            [
                {
                    "seed": p.seed,
                    "teacher": p.teacher_acc,
                    "same init": p.same.acc,
                    "different init": p.diff.acc,
                    "noise identical": p.same.noise_hash == p.diff.noise_hash,
                }
                for p in res.seeds
            ]
        )
        rep.subheading("Run")
        rep.table({"data": res.data.source, **{f"{k} (s)": t for k, t in res.timings_s.items()}})
    return rep
