"""Reports: plotly figures in one self-contained HTML page (plotly.js embedded, opens offline)
and the JSON they are drawn from.

- :mod:`~steerlens.report.figures`: figure builders (``heatmap``, ``lines_with_bands``, ``bars``);
- :mod:`~steerlens.report.views`: what the sections share (a carry level's colour class, a
  lenient number);
- :mod:`~steerlens.report.sections`: :func:`render_report`, which reads the results once
  (:class:`~steerlens.experiments.owl_records.OwlResults` and each other experiment's own
  record) and puts every section on one page (teacher vector and screening here);
- :mod:`~steerlens.report.shape`: the one shape every report follows (answer, headline figure,
  sections with takeaways, folded Evidence), as shared section helpers;
- :mod:`~steerlens.report.headline`, :mod:`~steerlens.report.lineage`: the behavior headline
  figure and answer, and the lineage graph;
- :mod:`~steerlens.report.track`, :mod:`~steerlens.report.carry`,
  :mod:`~steerlens.report.evidence`: the alignment-tracking, carry-test and evidence sections;
- :mod:`~steerlens.report.svd`, :mod:`~steerlens.report.mitigate`,
  :mod:`~steerlens.report.agentic`, :mod:`~steerlens.report.detect`,
  :mod:`~steerlens.report.mlp_aux`: each other experiment's sections;
- :mod:`~steerlens.report.page`: the page (:class:`Report`, ``table``) and its self-check;
- :mod:`~steerlens.report.browser`: the page as a person sees it: :func:`first_screen`, and in
  headless Chromium :func:`browser_check` and :func:`browser_screenshot`.

The top of the one-way layering: the report may import any steerlens module; only the CLI
imports the report.
"""

from __future__ import annotations

from steerlens.report.figures import bars, heatmap, lines_with_bands
from steerlens.report.page import (
    Report,
    browser_check,
    browser_screenshot,
    first_screen,
    table,
    write_json,
)
from steerlens.report.sections import render_report
from steerlens.report.views import CARRY_LEVEL_CLASS, carry_level_class

__all__ = [
    "CARRY_LEVEL_CLASS",
    "Report",
    "bars",
    "browser_check",
    "browser_screenshot",
    "carry_level_class",
    "first_screen",
    "heatmap",
    "lines_with_bands",
    "render_report",
    "table",
    "write_json",
]
