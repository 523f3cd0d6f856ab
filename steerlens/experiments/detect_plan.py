"""The detection bank's plan: which cells it trains, how many seeds each, in which order (a
stopped bank holds its references and about the same fraction of every cell)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from steerlens.experiments.detect import DetectConfig

__all__ = ["cell_labels", "n_seeds", "todo_order"]


def cell_labels(cfg: DetectConfig) -> dict[str, str | None]:
    """cell → the trait its teacher carries (None: a negative), in the bank's order: the
    negatives, the strongest steered teacher and the trait's prompted teacher, then the weaker
    strengths and the other traits (so a stopped bank holds the most telling cells)."""
    cells: dict[str, str | None] = {"base": None, "neutral": None, "random": None}
    cells |= {f"steer{m:g}": cfg.trait for m in sorted(cfg.strengths, reverse=True)[:1]}
    cells[f"prompt-{cfg.trait}"] = cfg.trait
    cells |= {f"steer{m:g}": cfg.trait for m in sorted(cfg.strengths, reverse=True)[1:]}
    return cells | {f"prompt-{t}": t for t in cfg.traits if t != cfg.trait}


def n_seeds(cfg: DetectConfig, loss: str, negative: bool) -> int:
    """How many training seeds a cell has under ``loss``."""
    if loss == "kl":
        return cfg.neg_seeds if negative else cfg.seeds
    return cfg.sft_neg_seeds if negative else cfg.sft_seeds


def todo_order(cfg: DetectConfig) -> list[tuple[str, int, str]]:
    """(loss, seed, cell) in training order: the reference students (base) of every seed
    first, so a stopped bank can already be classified; then every cell's seeds spread evenly
    over the run (seed s of a cell with n seeds at s/n), so a stopped bank holds about the same
    fraction of every cell, negatives and positives alike."""
    labels = cell_labels(cfg)
    order = {c: i for i, c in enumerate(labels)}
    every = [
        (loss, s, c)
        for loss in cfg.losses
        for c, label in labels.items()
        for s in range(n_seeds(cfg, loss, label is None))
    ]

    def key(x: tuple[str, int, str]) -> tuple[int, bool, float, int]:
        loss, s, c = x
        frac = s / n_seeds(cfg, loss, labels[c] is None)
        return cfg.losses.index(loss), c != "base", frac, order[c]

    return sorted(every, key=key)
