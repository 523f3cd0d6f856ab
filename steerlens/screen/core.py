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

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import einops
import numpy as np
import torch

from steerlens.core.vectors import SteeringVector
from steerlens.inputs.prompts import ChatPrompt, prompt_set_hash
from steerlens.loading.models import LoadedModel, as_model, describe
from steerlens.runtime.activations import record_activations
from steerlens.screen.result import ScreenResult
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
