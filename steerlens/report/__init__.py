"""Reports: plotly figures in one self-contained HTML page (plotly.js embedded, opens offline)
and the JSON they are drawn from.

- :mod:`~steerlens.report.figures`: figure builders (``heatmap``, ``lines_with_bands``, ``bars``);
- :mod:`~steerlens.report.views`: typed views of each section's part of the results dict;
- :mod:`~steerlens.report.sections`: one function per section and :func:`render_report`;
- :mod:`~steerlens.report.shape`: the one shape every report follows (answer, headline figure,
  sections with takeaways, folded Evidence), as shared section helpers;
- :mod:`~steerlens.report.headline`, :mod:`~steerlens.report.lineage`: the behavior headline
  figure and answer, and the lineage graph;
- :mod:`~steerlens.report.page`: the page (:class:`Report`, ``table``), its self-check,
  :func:`browser_check`, :func:`browser_screenshot` and :func:`first_screen`.

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
