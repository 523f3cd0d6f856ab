"""Extract steering directions from paired activations (DESIGN.md "Extraction methods").

Each method is a pure function ``(pos, neg) -> direction`` of (n, d) activation rows:

- ``mean``: v = mean(pos) − mean(neg);
- ``pca``: û = first right singular vector of the uncentered paired differences
  D = pos − neg, sign chosen so mean(D·û) > 0; v = mean(D·û) û;
- ``probe``: û = coefficient of an L2 logistic regression pos-vs-neg (sklearn), normalised;
  v = (mean(pos) − mean(neg))·û û.

``pca`` and ``probe`` are scaled by the mean difference's projection on their unit direction,
so every method returns a vector in activation units and α means the same thing for all three.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from steerlens.core.vectors import SteeringVector, cosine
from steerlens.inputs.contrast import ContrastSet
from steerlens.inputs.prompts import (
    PositionSpec,
    PromptLike,
    check_prompts,
    position_name,
    prompt_set_hash,
)
from steerlens.inputs.traits import as_trait, text_hash
from steerlens.loading.models import as_model
from steerlens.runtime.activations import record_activations
from steerlens.teachers import Teacher

Aggregator = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def mean_diff(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """Difference of means: v = mean_i pos_i − mean_j neg_j."""
    return pos.double().mean(0).float() - neg.double().mean(0).float()


def pca_diff(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """First principal component of the uncentered paired differences D = pos − neg, signed so
    the mean projection is positive and scaled by it: v = mean(D·û) û."""
    if pos.shape != neg.shape:
        raise ValueError(
            f"pca needs paired rows: got {pos.shape[0]} positive and {neg.shape[0]} negative"
        )
    diffs = (pos - neg).double()
    _, _, vh = torch.linalg.svd(diffs, full_matrices=False)
    u = vh[0]
    proj = float((diffs @ u).mean())
    if proj < 0:
        u, proj = -u, -proj
    return (u * proj).float()


def logistic_probe(
    pos: torch.Tensor, neg: torch.Tensor, *, seed: int = 0, c: float = 1.0
) -> torch.Tensor:
    """Logistic-regression direction û (normalised coefficient, inputs standardised by a shared
    scale) scaled by the mean difference's projection on it."""
    from sklearn.linear_model import LogisticRegression

    x = torch.cat([pos, neg]).double().numpy()
    y = np.concatenate([np.ones(len(pos)), np.zeros(len(neg))])
    scale = float(x.std()) or 1.0
    clf = LogisticRegression(C=c, max_iter=2000, random_state=seed)
    clf.fit(x / scale, y)
    u = torch.from_numpy(clf.coef_[0]).double()
    u = u / u.norm()
    md = pos.double().mean(0) - neg.double().mean(0)
    return (u * float(md @ u)).float()


METHODS: dict[str, Aggregator] = {"mean": mean_diff, "pca": pca_diff, "probe": logistic_probe}


def _aggregator(method: str | Aggregator) -> tuple[str, Aggregator]:
    if callable(method):
        return getattr(method, "__name__", "custom"), method
    try:
        return method, METHODS[method]
    except KeyError:
        raise ValueError(
            f"unknown method {method!r}: use one of {sorted(METHODS)} or a function"
        ) from None


def split_half_reliability(
    pos: torch.Tensor,
    neg: torch.Tensor,
    method: str | Aggregator = "mean",
    *,
    n_boot: int = 20,
    seed: int = 0,
) -> dict[str, float]:
    """Split-half reliability: cos(v(half A), v(half B)) over ``n_boot`` random splits of the
    prompt pairs (DESIGN.md "Extraction methods"); returns mean, 2.5% and 97.5% quantiles."""
    _, agg = _aggregator(method)
    n = min(len(pos), len(neg))
    if n < 4:
        return {"mean": float("nan"), "lo": float("nan"), "hi": float("nan"), "n_boot": 0}
    gen = torch.Generator().manual_seed(seed)
    cos = []
    for _ in range(n_boot):
        perm = torch.randperm(n, generator=gen)
        a, b = perm[: n // 2], perm[n // 2 : 2 * (n // 2)]
        cos.append(cosine(agg(pos[a], neg[a]), agg(pos[b], neg[b])))
    arr = np.array(cos)
    return {
        "mean": float(arr.mean()),
        "lo": float(np.quantile(arr, 0.025)),
        "hi": float(np.quantile(arr, 0.975)),
        "n_boot": n_boot,
    }


def method_agreement(pos: torch.Tensor, neg: torch.Tensor, seed: int = 0) -> dict[str, float]:
    """Pairwise cosine between the mean, pca and probe directions of the same rows."""
    v = {"mean": mean_diff(pos, neg), "probe": logistic_probe(pos, neg, seed=seed)}
    if pos.shape == neg.shape:
        v["pca"] = pca_diff(pos, neg)
    names = sorted(v)
    return {f"{a}~{b}": cosine(v[a], v[b]) for i, a in enumerate(names) for b in names[i + 1 :]}


def vector_from_rows(
    pos_rows: dict[int, torch.Tensor],
    neg_rows: dict[int, torch.Tensor],
    method: str | Aggregator = "mean",
    *,
    seed: int = 0,
    n_boot: int = 20,
    diagnostics: bool = True,
    meta: dict[str, Any] | None = None,
) -> SteeringVector:
    """Build a SteeringVector from per-layer paired rows, with reliability diagnostics."""
    name, agg = _aggregator(method)
    dirs: dict[int, torch.Tensor] = {}
    diag: dict[str, Any] = {"split_half": {}, "agreement": {}, "n_pos": 0, "n_neg": 0}
    for layer in sorted(pos_rows):
        pos, neg = pos_rows[layer].float(), neg_rows[layer].float()
        dirs[layer] = agg(pos, neg) if name != "probe" else logistic_probe(pos, neg, seed=seed)
        diag["n_pos"], diag["n_neg"] = len(pos), len(neg)
        if diagnostics:
            diag["split_half"][layer] = split_half_reliability(
                pos, neg, agg, n_boot=n_boot, seed=seed
            )
            diag["agreement"][layer] = method_agreement(pos, neg, seed=seed)
    return SteeringVector(dirs, dict(meta or {}, method=name, seed=seed), diag)


def _contrast_items(
    pos: Sequence[PromptLike] | ContrastSet | str, neg: Sequence[PromptLike] | None
) -> tuple[ContrastSet | None, list[Any], list[Any]]:
    contrast = ContrastSet.coerce(pos)
    if contrast is not None:
        if neg is not None:
            raise ValueError(
                "pos_prompts is a contrast set, which holds the negatives too: leave neg_prompts out"
            )
        return contrast, list(contrast.pos), list(contrast.neg)
    if neg is None or isinstance(pos, str):
        raise ValueError(
            "give pos_prompts and neg_prompts as two prompt lists, or one ContrastSet or contrast "
            "file (.json / .jsonl) as pos_prompts"
        )
    assert not isinstance(pos, ContrastSet)
    return None, check_prompts(pos, "pos_prompts"), check_prompts(neg, "neg_prompts")


def extract_vector(
    model: Any,
    pos_prompts: Sequence[PromptLike] | ContrastSet | str,
    neg_prompts: Sequence[PromptLike] | None = None,
    layers: int | Sequence[int] | str = "all",
    method: str | Aggregator = "mean",
    *,
    position: PositionSpec = "last",
    batch_size: int = 32,
    seed: int = 0,
    n_boot: int = 20,
    diagnostics: bool = True,
    progress: bool | None = None,
    name: str | None = None,
    share_prefix: bool | None = None,
) -> SteeringVector:
    """Per-layer steering direction of ``pos_prompts`` against ``neg_prompts``.

    Records both sets in one batched, early-stopped pass, applies ``method`` (``"mean"``,
    ``"pca"``, ``"probe"`` or a function ``(pos, neg) -> vector``), and attaches split-half
    reliability and method agreement per layer (DESIGN.md "Extraction methods").
    ``share_prefix``: see :func:`steerlens.record_activations` (prompts with the same system
    prompt run it once per batch; None: where supported).

    ``pos_prompts`` may also be a :class:`~steerlens.inputs.contrast.ContrastSet` or the path of a
    contrast file (CAA, persona_vectors or pairs JSONL; :meth:`ContrastSet.from_file`), with
    ``neg_prompts`` left out; the set's format and source go into ``meta``.
    """
    contrast, pos_items, neg_items = _contrast_items(pos_prompts, neg_prompts)
    lm = as_model(model)
    if lm.site_paths is not None:
        raise TypeError(
            f"{lm.name!r} is a plain torch module: extract its vectors from input tensors with "
            "steerlens.module_vector(model, pos, neg, layers) (same methods)"
        )
    acts = record_activations(
        lm,
        [*pos_items, *neg_items],
        layers,
        position,
        batch_size=batch_size,
        keep_rows=True,
        progress=progress,
        desc="extract",
        share_prefix=share_prefix,
    )
    assert acts.rows is not None
    n = len(pos_items)
    pos_rows = {k: r[:n] for k, r in acts.rows.items()}
    neg_rows = {k: r[n:] for k, r in acts.rows.items()}
    meta = {
        "name": name,
        "model": lm.name,
        "model_source": lm.source,
        "model_fingerprint": lm.fingerprint,
        "precision": lm.compute_precision.to_dict(),
        "model_type": getattr(getattr(lm.model, "config", None), "model_type", None),
        "position": position_name(position),
        "pos_prompts_hash": prompt_set_hash(pos_items),
        "neg_prompts_hash": prompt_set_hash(neg_items),
        "n_pos": len(pos_items),
        "n_neg": len(neg_items),
        "kind": "contrast",
        # what the float32 reductions depend on (see docs/reliability.md, "Determinism")
        "torch_threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
    }
    if lm.tokenization is not None:
        meta["tokenization"] = dict(lm.tokenization)
    if contrast is not None:
        meta.update(contrast.provenance())
    return vector_from_rows(
        pos_rows, neg_rows, method, seed=seed, n_boot=n_boot, diagnostics=diagnostics, meta=meta
    )


def teacher_vector(
    model: Any,
    trait: Any,
    layers: int | Sequence[int] | str = "all",
    method: str | Aggregator = "mean",
    *,
    position: PositionSpec = "last",
    batch_size: int = 32,
    seed: int = 0,
    n_boot: int = 20,
    diagnostics: bool = True,
    progress: bool | None = None,
) -> SteeringVector:
    """Teacher vector (DESIGN.md "Teacher vector", Blank et al. 2026):
    vᵀˡ = mean_p hˡ(trait sys, p) − mean_p hˡ(neutral sys, p) over the trait's probe prompts p,
    on the base ``model`` (``method`` other than ``"mean"`` applies to the same paired rows).

    ``trait`` is a :class:`~steerlens.inputs.traits.TraitSpec`, a built-in name or a YAML path. The
    contrast is against the *neutral* system prompt of the same form, not against no system
    prompt. ``meta`` records the trait, the two system prompts' hashes, the probe settings and
    ``kind="teacher"``.
    """
    spec = as_trait(trait)
    vec = extract_vector(
        model,
        spec.probe_chats(spec.system_prompt),
        spec.probe_chats(spec.neutral_system_prompt),
        layers,
        method,
        position=position,
        batch_size=batch_size,
        seed=seed,
        n_boot=n_boot,
        diagnostics=diagnostics,
        progress=progress,
        name=f"teacher:{spec.name}",
    )
    vec.meta.update(
        kind="teacher",
        trait=spec.name,
        system_prompt_hash=text_hash(spec.system_prompt),
        neutral_system_prompt_hash=text_hash(spec.neutral_system_prompt),
        probe_n=len(spec.probe_prompts),
        probe_seed=spec.probe_seed if spec.probe_prompts_override is None else None,
        contrast="trait system prompt - neutral system prompt",
    )
    return vec


def model_teacher_vector(
    model: Any,
    teacher: Teacher,
    trait: Any,
    layers: int | Sequence[int] | str = "all",
    method: str | Aggregator = "mean",
    *,
    position: PositionSpec = "last",
    batch_size: int = 32,
    seed: int = 0,
    n_boot: int = 20,
    diagnostics: bool = True,
    progress: bool | None = None,
) -> SteeringVector:
    """Teacher vector of a teacher that is a different model (a fine-tune, or the base with an
    edit): vᵀˡ = mean_p hˡ_teacher(p) − mean_p hˡ_base(p) over the trait's probe prompts p, both
    with no system prompt (the teacher's own, if it has one, on its side). Rows are paired by
    prompt, so ``method`` and the diagnostics work as in :func:`extract_vector`. A prompted
    teacher with the trait's system prompt is :func:`teacher_vector` (trait vs neutral)."""
    spec = as_trait(trait)
    lm = as_model(model)
    if teacher.kind == "prompt" and teacher.system == spec.system_prompt:
        return teacher_vector(lm, spec, layers, method, position=position, seed=seed)
    rows: list[dict[int, torch.Tensor]] = []
    for who, system in (("teacher", teacher.system), ("base", None)):
        kw: dict[str, Any] = {"keep_rows": True, "progress": progress, "desc": who}
        if who == "teacher":
            with teacher.apply(lm) as m:
                acts = record_activations(
                    m, spec.probe_chats(system), layers, position, batch_size=batch_size, **kw
                )
        else:
            acts = record_activations(
                lm, spec.probe_chats(None), layers, position, batch_size=batch_size, **kw
            )
        assert acts.rows is not None
        rows.append(acts.rows)
    meta = {
        "name": f"teacher:{spec.name}:{teacher.name}",
        "model": lm.name,
        "model_fingerprint": lm.fingerprint,
        "position": position_name(position),
        "kind": "teacher",
        "trait": spec.name,
        "teacher": teacher.describe(),
        "probe_n": len(spec.probe_prompts),
        "contrast": "teacher model - base model, same probe prompts, no system prompt",
    }
    return vector_from_rows(
        rows[0], rows[1], method, seed=seed, n_boot=n_boot, diagnostics=diagnostics, meta=meta
    )
