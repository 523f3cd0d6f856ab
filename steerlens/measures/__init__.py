"""Measurements: trait-behavior scores (:mod:`.behavior`) and every statistic
(:mod:`.stats`; formulas in docs/statistics.md)."""
