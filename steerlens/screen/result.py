"""The result of :func:`steerlens.screen.screen_dataset`: per-sample projection differences
ΔPᵢˡ = proj(hˡ(xᵢ, yᵢ), vᵀˡ) − proj(hˡ(xᵢ, y′ᵢ), vᵀˡ), per-dataset means with bootstrap CIs and
two-sample permutation tests (DESIGN.md "Data screening")."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from steerlens.core.results import Record, html_table
from steerlens.inputs.prompts import ChatPrompt
from steerlens.measures.stats import bootstrap, permutation_test


@dataclass
class ScreenResult(Record):
    """Per-sample projection differences ΔP [sample × layer] and their parts.

    ``proj_train``/``proj_base`` are the projections of the training and base responses;
    ``delta`` = their difference (NaN where the base produced an empty response);
    ``datasets`` labels each sample; ``layer`` is the default layer for ranking. The JSON
    holds the prompts and responses as ``samples`` and :meth:`summary_stats` as ``summary``.
    """

    layers: list[int]
    layer: int
    prompts: list[ChatPrompt] = field(metadata={"json": False})
    responses: list[str] = field(metadata={"json": False})
    base_responses: list[str] = field(metadata={"json": False})
    datasets: list[str]
    delta: np.ndarray
    proj_train: np.ndarray
    proj_base: np.ndarray
    settings: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)

    kind_in_json = True
    derived_json = ("summary_stats", "samples")
    json_keys: ClassVar[dict[str, str]] = {"summary_stats": "summary"}

    def __post_init__(self) -> None:
        shape = (len(self.prompts), len(self.layers))
        for name in ("delta", "proj_train", "proj_base"):  # an empty screen read back: (0, L)
            a = getattr(self, name)
            if isinstance(a, np.ndarray) and a.size == 0 and a.shape != shape:
                setattr(self, name, a.reshape(shape))

    def __len__(self) -> int:
        return len(self.prompts)

    def _col(self, layer: int | None) -> int:
        lay = self.layer if layer is None else layer
        if lay not in self.layers:
            raise KeyError(f"layer {lay} was not screened; screened layers: {self.layers}")
        return self.layers.index(lay)

    def _mask(self, dataset: str | None) -> np.ndarray:
        if dataset is None:
            return np.ones(len(self), dtype=bool)
        if dataset not in self.dataset_names:
            raise KeyError(f"no dataset {dataset!r}; datasets: {self.dataset_names}")
        return np.array([d == dataset for d in self.datasets])

    @property
    def dataset_names(self) -> list[str]:
        return list(dict.fromkeys(self.datasets))

    def scores(self, layer: int | None = None, dataset: str | None = None) -> np.ndarray:
        """ΔP at ``layer`` (default: ``self.layer``) for every sample (or one dataset's)."""
        col = self.delta[:, self._col(layer)]
        out: np.ndarray = col[self._mask(dataset)]
        return out

    def ranked(self, layer: int | None = None, dataset: str | None = None) -> list[int]:
        """Sample indices ordered by ΔP, largest first (NaN last; ties by index)."""
        col = self.delta[:, self._col(layer)]
        idx = np.flatnonzero(self._mask(dataset))
        key = np.where(np.isnan(col[idx]), -np.inf, col[idx])
        order = sorted(range(len(idx)), key=lambda j: (-key[j], idx[j]))
        return [int(idx[j]) for j in order]

    def top(
        self, k: int = 10, layer: int | None = None, dataset: str | None = None
    ) -> list[dict[str, Any]]:
        """The ``k`` samples with the largest ΔP, with their text and scores."""
        col = self._col(layer)
        out = []
        for i in self.ranked(layer, dataset)[:k]:
            out.append(
                {
                    "index": i,
                    "dataset": self.datasets[i],
                    "user": self.prompts[i].user,
                    "system": self.prompts[i].system,
                    "response": self.responses[i],
                    "base_response": self.base_responses[i],
                    "delta": float(self.delta[i, col]),
                    "proj_train": float(self.proj_train[i, col]),
                    "proj_base": float(self.proj_base[i, col]),
                }
            )
        return out

    def summary_stats(
        self, layer: int | None = None, *, n_boot: int = 1000, seed: int = 0, level: float = 0.95
    ) -> dict[str, dict[str, float]]:
        """Per dataset: n, mean ΔP with a percentile bootstrap CI over samples, sd, median,
        and the fraction of samples with ΔP > 0 (NaN samples left out, counted as n_nan)."""
        out: dict[str, dict[str, float]] = {}
        for name in self.dataset_names:
            x = self.scores(layer, name)
            ok = x[np.isfinite(x)]
            row: dict[str, float] = {"n": int(ok.size), "n_nan": int(x.size - ok.size)}
            if ok.size:
                b = bootstrap(_mean_of(ok), ok.size, n_boot=n_boot, seed=seed, level=level)
                row.update(
                    mean=b["estimate"],
                    lo=b["lo"],
                    hi=b["hi"],
                    sd=float(ok.std(ddof=1)) if ok.size > 1 else float("nan"),
                    median=float(np.median(ok)),
                    frac_positive=float((ok > 0).mean()),
                )
            out[name] = row
        return out

    def compare(
        self, a: str, b: str, layer: int | None = None, *, n_perm: int = 2000, seed: int = 0
    ) -> dict[str, float]:
        """Permutation test of mean ΔP between datasets ``a`` and ``b`` (two-sided)."""
        return _compare(self.scores(layer, a), self.scores(layer, b), n_perm, seed)

    @property
    def samples(self) -> list[dict[str, Any]]:
        """Per sample: the prompt (user, system, prefill), the response and the base's."""
        return [
            {
                "user": p.user,
                "system": p.system,
                "prefill": p.prefill,
                "response": r,
                "base_response": b,
            }
            for p, r, b in zip(self.prompts, self.responses, self.base_responses, strict=True)
        ]

    @classmethod
    def _upgrade(cls, d: dict[str, Any]) -> dict[str, Any]:
        """The prompts and responses from the JSON's ``samples``."""
        if "samples" not in d:
            raise ValueError(
                "this screening JSON has no 'samples': the prompts and responses cannot be restored"
            )
        samples = d["samples"]
        d["prompts"] = [
            {"user": s["user"], "system": s.get("system"), "prefill": s.get("prefill", "")}
            for s in samples
        ]
        d["responses"] = [s["response"] for s in samples]
        d["base_responses"] = [s["base_response"] for s in samples]
        return d

    def summary(self, layer: int | None = None) -> str:
        """Plain-words lines: what was screened, then per dataset the mean ΔP with its 95%
        bootstrap CI, the median and the share of samples with ΔP > 0 (numbers from
        :meth:`summary_stats`)."""
        lay = self.layer if layer is None else layer
        lines = [
            f"screening by projection difference ΔP at layer {lay} (screened layers "
            f"{self.layers}): {len(self)} samples in {len(self.dataset_names)} dataset(s)"
        ]
        for name, row in self.summary_stats(lay).items():
            lines.append(_summary_line(name, row))
        return "\n".join(lines)

    def main_figure(self) -> Any:
        """The 15 samples with the largest ΔP, as bars labelled by dataset and response."""
        from steerlens.core.plots import bars

        top = self.top(15)
        if not top:
            return None
        return bars(
            [f"{i + 1}. [{r['dataset']}] {r['response'][:40]}" for i, r in enumerate(top)],
            [float(r["delta"]) for r in top],
            title=f"Largest projection differences ΔP at layer {self.layer}",
            xlabel="ΔP (activation units)",
            ylabel="sample",
        )

    def _html_details(self) -> str:
        """Per dataset: n, mean ΔP, its 95% CI, median and share with ΔP > 0."""
        header = ["dataset", "n", "n NaN", "mean ΔP", "CI low", "CI high", "median", "ΔP > 0"]
        keys = ("n", "n_nan", "mean", "lo", "hi", "median", "frac_positive")
        rows = [[name, *(row.get(k) for k in keys)] for name, row in self.summary_stats().items()]
        return html_table(header, rows)


def _summary_line(name: str, row: Mapping[str, float]) -> str:
    nan = f" ({int(row['n_nan'])} with no base answer left out)" if row["n_nan"] else ""
    if not row["n"]:
        return f"{name}: no sample with a finite ΔP{nan}"
    return (
        f"{name}: n={int(row['n'])}, mean ΔP={row['mean']:+.4f} "
        f"(95% CI {row['lo']:+.4f} to {row['hi']:+.4f}), median {row['median']:+.4f}, "
        f"{100 * row['frac_positive']:.0f}% of samples with ΔP > 0{nan}"
    )


def _mean_of(x: np.ndarray) -> Any:
    def stat(idx: np.ndarray) -> float:
        return float(x[idx].mean())

    return stat


def _compare(x: np.ndarray, y: np.ndarray, n_perm: int, seed: int) -> dict[str, float]:
    x, y = x[np.isfinite(x)], y[np.isfinite(y)]
    if x.size == 0 or y.size == 0:
        raise ValueError("each dataset needs at least one sample with a finite ΔP")
    res = permutation_test(x, y, n_perm=n_perm, seed=seed)
    return dict(
        res, mean_a=float(x.mean()), mean_b=float(y.mean()), n_a=int(x.size), n_b=int(y.size)
    )


def compare_datasets(
    a: ScreenResult, b: ScreenResult, layer: int | None = None, *, n_perm: int = 2000, seed: int = 0
) -> dict[str, float]:
    """Permutation test of mean ΔP between two screened datasets (two-sided; difference of
    means a − b). Both must be screened at ``layer`` (default: ``a.layer``)."""
    lay = a.layer if layer is None else layer
    return _compare(a.scores(lay), b.scores(lay), n_perm, seed)
