"""Screen training data by projection difference (DESIGN.md "Data screening"; Chen et al. 2025).

For sample i with prompt xᵢ, training response yᵢ and the base model's own response y′ᵢ::

    ΔPᵢˡ = proj(hˡ(xᵢ, yᵢ), vᵀˡ) − proj(hˡ(xᵢ, y′ᵢ), vᵀˡ),   proj(h, v) = h·v/‖v‖

with hˡ(x, y) the layer-ℓ residual stream averaged over the response tokens of y (position
``"response"``). A large ΔP means the training response pushes the model further along the
teacher direction than its own answer does. y′ᵢ is generated greedily (seeded) when not given.
Samples are ranked by ΔP; datasets are summarised by the mean ΔP with a bootstrap CI over
samples and compared with a two-sample permutation test on ΔP.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import einops
import numpy as np
import torch

from steerlens.activations import record_activations
from steerlens.models import LoadedModel, as_model, describe
from steerlens.prompts import ChatPrompt, prompt_set_hash
from steerlens.results import ResultMixin, html_table
from steerlens.stats import bootstrap, permutation_test
from steerlens.vectors import SteeringVector
from steerlens.version import __version__

SampleLike = ChatPrompt | Mapping[str, Any]


def _text(x: Any, what: str, i: int) -> str:
    if not isinstance(x, str):
        raise TypeError(f"sample {i}: {what} must be a string, got {type(x).__name__}")
    return x


def parse_sample(sample: SampleLike, i: int = 0) -> tuple[ChatPrompt, str, str | None]:
    """(prompt without response, training response, given base response or None).

    Accepts a ``ChatPrompt`` with a ``response``; a dict with ``prompt`` or ``user``,
    ``response`` (or ``completion``) and optional ``system``, ``prefill``, ``base_response``;
    or a chat dict ``{"messages": [{"role": "system"|"user"|"assistant", "content": …}]}``
    (the last assistant message is the response)."""
    if isinstance(sample, ChatPrompt):
        prompt, response, base = sample.with_response(""), sample.response, None
    elif isinstance(sample, Mapping):
        if "messages" in sample:
            msgs = list(sample["messages"])
            by_role: dict[str, str] = {}
            for m in msgs:
                by_role[str(m.get("role"))] = _text(m.get("content"), "message content", i)
            if "user" not in by_role or "assistant" not in by_role:
                raise ValueError(
                    f"sample {i}: 'messages' needs a user and an assistant message (the "
                    "assistant's is the training response)"
                )
            prompt = ChatPrompt(by_role["user"], by_role.get("system"))
            response = by_role["assistant"]
        else:
            user = sample.get("prompt", sample.get("user"))
            if user is None:
                raise ValueError(
                    f"sample {i} has no prompt: give {{'prompt' (or 'user'): ..., 'response': "
                    f"...}}, got keys {sorted(sample)}"
                )
            response = sample.get("response", sample.get("completion"))
            if response is None:
                raise ValueError(
                    f"sample {i} has no 'response': screening compares the training response "
                    "with the base model's own answer, so every sample needs one"
                )
            prompt = ChatPrompt(
                _text(user, "prompt", i),
                sample.get("system"),
                str(sample.get("prefill", "")),
            )
            response = _text(response, "response", i)
        base = sample.get("base_response")
        if base is not None:
            base = _text(base, "base_response", i)
    else:
        raise TypeError(
            f"sample {i} is a {type(sample).__name__}: pass ChatPrompt(user, response=...) or "
            "a dict with 'prompt' and 'response'"
        )
    if not response:
        raise ValueError(f"sample {i} has an empty response: ΔP needs response tokens")
    return prompt, response, base


@dataclass
class ScreenResult(ResultMixin):
    """Per-sample projection differences ΔP [sample × layer] and their parts.

    ``proj_train``/``proj_base`` are the projections of the training and base responses;
    ``delta`` = their difference (NaN where the base produced an empty response);
    ``datasets`` labels each sample; ``layer`` is the default layer for ranking.
    """

    result_kind = "steerlens.ScreenResult"

    layers: list[int]
    layer: int
    prompts: list[ChatPrompt]
    responses: list[str]
    base_responses: list[str]
    datasets: list[str]
    delta: np.ndarray
    proj_train: np.ndarray
    proj_base: np.ndarray
    settings: dict[str, Any] = field(default_factory=dict)
    provenance: dict[str, Any] = field(default_factory=dict)

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

    def to_json(self, include_samples: bool = True) -> dict[str, Any]:
        def arr(a: np.ndarray) -> list[Any]:
            return [[None if not math.isfinite(v) else float(v) for v in row] for row in a]

        out: dict[str, Any] = {
            "kind": "steerlens.ScreenResult",
            "layers": self.layers,
            "layer": self.layer,
            "datasets": self.datasets,
            "delta": arr(self.delta),
            "proj_train": arr(self.proj_train),
            "proj_base": arr(self.proj_base),
            "summary": self.summary_stats(),
            "settings": self.settings,
            "provenance": json.loads(json.dumps(self.provenance, default=str)),
        }
        if include_samples:
            out["samples"] = [
                {
                    "user": p.user,
                    "system": p.system,
                    "prefill": p.prefill,
                    "response": r,
                    "base_response": b,
                }
                for p, r, b in zip(self.prompts, self.responses, self.base_responses, strict=True)
            ]
        return out

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> ScreenResult:
        """Inverse of :meth:`to_json` (which must include the samples); ΔP None back to NaN."""
        if "samples" not in d:
            raise ValueError(
                "this screening JSON has no 'samples' (written with include_samples=False): "
                "the prompts and responses cannot be restored"
            )
        samples = d["samples"]

        def arr(rows: Sequence[Sequence[float | None]]) -> np.ndarray:
            a = np.array(
                [[np.nan if v is None else v for v in row] for row in rows], dtype=np.float64
            )
            return a.reshape(len(rows), len(d["layers"]))

        return cls(
            layers=[int(x) for x in d["layers"]],
            layer=int(d["layer"]),
            prompts=[ChatPrompt(s["user"], s.get("system"), s.get("prefill", "")) for s in samples],
            responses=[s["response"] for s in samples],
            base_responses=[s["base_response"] for s in samples],
            datasets=list(d["datasets"]),
            delta=arr(d["delta"]),
            proj_train=arr(d["proj_train"]),
            proj_base=arr(d["proj_base"]),
            settings=dict(d.get("settings", {})),
            provenance=dict(d.get("provenance", {})),
        )

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


def _default_layer(vec: SteeringVector, layers: Sequence[int]) -> int:
    for key in ("layer", "best_layer"):
        cand = vec.meta.get(key, vec.diagnostics.get(key))
        if isinstance(cand, int) and cand in layers:
            return cand
    return list(layers)[len(layers) // 2]


def _projections(
    lm: LoadedModel,
    prompts: Sequence[ChatPrompt],
    units: Mapping[int, torch.Tensor],
    layers: Sequence[int],
    batch_size: int,
    progress: bool | None,
    desc: str,
) -> np.ndarray:
    """(n, layers) projections of each sample's response-averaged activations; identical
    samples (the same prompt and base answer in two datasets) are recorded once."""
    unique = list(dict.fromkeys(prompts))
    where = {p: i for i, p in enumerate(unique)}
    acts = record_activations(
        lm,
        unique,
        layers,
        "response",
        batch_size=batch_size,
        keep_rows=True,
        progress=progress,
        desc=desc,
    )
    assert acts.rows is not None
    cols = [einops.einsum(acts.rows[la].double(), units[la], "n d, d -> n") for la in layers]
    rows = torch.tensor([where[p] for p in prompts])
    return torch.stack(cols, dim=1)[rows].numpy()


@dataclass
class _Samples:
    """Parsed samples: prompts without response, training responses, given base responses
    (None: to generate) and dataset labels."""

    prompts: list[ChatPrompt] = field(default_factory=list)
    responses: list[str] = field(default_factory=list)
    given: list[str | None] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)


def _parse_samples(
    samples: Sequence[SampleLike] | Mapping[str, Sequence[SampleLike]],
    base_responses: Sequence[str] | None,
) -> _Samples:
    groups = dict(samples) if isinstance(samples, Mapping) else {"data": samples}
    out = _Samples()
    for name, items in groups.items():
        for s in items:
            p, r, b = parse_sample(s, len(out.prompts))
            out.prompts.append(p)
            out.responses.append(r)
            out.given.append(b)
            out.labels.append(str(name))
    if not out.prompts:
        raise ValueError("no samples to screen")
    if base_responses is not None:
        if len(base_responses) != len(out.prompts):
            raise ValueError(
                f"got {len(base_responses)} base responses for {len(out.prompts)} samples"
            )
        out.given = [str(b) for b in base_responses]
    return out


def _screen_layers(lm: LoadedModel, vec: SteeringVector, layers: Sequence[int] | None) -> list[int]:
    if vec.hidden_size != lm.hidden_size:
        raise ValueError(
            f"hidden size mismatch: the vector has d={vec.hidden_size} but {lm.name} has "
            f"d={lm.hidden_size}; screen with the model the vector was extracted on"
        )
    use_layers = sorted({int(x) for x in (vec.layers if layers is None else layers)})
    bad = [x for x in use_layers if x not in vec or not 0 <= x < lm.n_layers]
    if bad:
        raise ValueError(
            f"cannot screen layers {bad}: the vector has {vec.layers} and the model has "
            f"{lm.n_layers} blocks"
        )
    return use_layers


def _generate_missing(
    lm: LoadedModel, data: _Samples, max_new_tokens: int, seed: int, batch_size: int
) -> tuple[list[str], int, int]:
    """(base texts, number generated, distinct prompts generated for): one greedy answer per
    distinct prompt (datasets often share their prompts)."""
    given = list(data.given)
    missing = [i for i, b in enumerate(given) if b is None]
    unique = list(dict.fromkeys(data.prompts[i] for i in missing))
    if unique:
        gen = lm.generate(
            unique, max_new_tokens=max_new_tokens, do_sample=False, seed=seed, batch_size=batch_size
        )
        answer = dict(zip(unique, gen, strict=True))
        for i in missing:
            given[i] = answer[data.prompts[i]]
    return [b or "" for b in given], len(missing), len(unique)


def _unit_directions(vec: SteeringVector, layers: Sequence[int]) -> dict[int, torch.Tensor]:
    """v̂ˡ = vˡ/‖vˡ‖ (float64) per screened layer."""
    units = {}
    for lay in layers:
        v = vec[lay].double()
        if float(v.norm()) == 0:
            raise ValueError(f"the vector is zero at layer {lay}: nothing to project on")
        units[lay] = v / v.norm()
    return units


def screen_dataset(
    model: Any,
    vector: SteeringVector | Mapping[int, torch.Tensor],
    samples: Sequence[SampleLike] | Mapping[str, Sequence[SampleLike]],
    *,
    layers: Sequence[int] | None = None,
    layer: int | None = None,
    base_responses: Sequence[str] | None = None,
    max_new_tokens: int = 64,
    seed: int = 0,
    batch_size: int = 32,
    progress: bool | None = None,
) -> ScreenResult:
    """Projection difference ΔP (see module doc) of every sample at every layer of ``vector``
    (or ``layers``).

    ``samples`` is a list (one dataset, named ``"data"``) or ``{name: list}`` for several
    datasets screened together (compare them with :meth:`ScreenResult.compare`). Base responses
    come from ``base_responses``, each sample's ``base_response``, or greedy generation with
    ``max_new_tokens`` (seeded; once per distinct prompt). ``layer`` is the default layer for
    ranking (else the vector's ``meta['layer']``, else the middle screened layer).
    """
    lm = as_model(model)
    vec = vector if isinstance(vector, SteeringVector) else SteeringVector(dict(vector))
    use_layers = _screen_layers(lm, vec, layers)
    data = _parse_samples(samples, base_responses)
    prompts = data.prompts
    base_texts, n_generated, n_distinct = _generate_missing(
        lm, data, max_new_tokens, seed, batch_size
    )
    units = _unit_directions(vec, use_layers)
    train = [p.with_response(r) for p, r in zip(prompts, data.responses, strict=True)]
    proj_train = _projections(lm, train, units, use_layers, batch_size, progress, "screen:train")
    proj_base = np.full_like(proj_train, np.nan)
    has_base = [i for i, b in enumerate(base_texts) if b]
    if len(has_base) < len(prompts):
        warnings.warn(
            f"{len(prompts) - len(has_base)} base responses are empty: their ΔP is NaN (raise "
            "max_new_tokens or pass base_responses)",
            stacklevel=2,
        )
    if has_base:
        base_prompts = [prompts[i].with_response(base_texts[i]) for i in has_base]
        proj_base[has_base] = _projections(
            lm, base_prompts, units, use_layers, batch_size, progress, "screen:base"
        )
    default = layer if layer is not None else _default_layer(vec, use_layers)
    if default not in use_layers:
        raise ValueError(f"layer={default} is not among the screened layers {use_layers}")
    return ScreenResult(
        layers=use_layers,
        layer=default,
        prompts=prompts,
        responses=data.responses,
        base_responses=base_texts,
        datasets=data.labels,
        delta=proj_train - proj_base,
        proj_train=proj_train,
        proj_base=proj_base,
        settings={
            "position": "response",
            "max_new_tokens": max_new_tokens,
            "seed": seed,
            "generated": n_generated,
            "distinct_prompts": n_distinct,
            "greedy": True,
            "batch_size": batch_size,
        },
        provenance={
            "model": describe(lm),
            "vector": {"meta": vec.meta, "norms": vec.norms()},
            "samples_hash": prompt_set_hash(train),
            "steerlens_version": __version__,
        },
    )
