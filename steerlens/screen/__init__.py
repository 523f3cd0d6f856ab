"""Screen training data by projection difference (DESIGN.md "Data screening"; Chen et al. 2025):
ΔPᵢˡ = proj(hˡ(xᵢ, yᵢ), vᵀˡ) − proj(hˡ(xᵢ, y′ᵢ), vᵀˡ), response tokens averaged, y′ᵢ the base
model's own answer. :mod:`~steerlens.screen.core` computes it, :mod:`~steerlens.screen.result`
holds and summarises it."""

from __future__ import annotations

from steerlens.screen.core import SampleLike, parse_sample, screen_dataset
from steerlens.screen.result import ScreenResult, compare_datasets

__all__ = ["SampleLike", "ScreenResult", "compare_datasets", "parse_sample", "screen_dataset"]
