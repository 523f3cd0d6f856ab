"""The report's figure builders; they live in :mod:`steerlens.core.plots` (a low layer, so every
result's ``_repr_html_`` can draw its main figure with them) and are re-exported here."""

from __future__ import annotations

from steerlens.core.plots import (
    NULL_GREY,
    PALETTE,
    bars,
    heatmap,
    lines_with_bands,
    rgba,
    scatter_with_errors,
)

__all__ = [
    "NULL_GREY",
    "PALETTE",
    "bars",
    "heatmap",
    "lines_with_bands",
    "rgba",
    "scatter_with_errors",
]
