"""Behavior metrics (DESIGN.md "Behavior").

- **Token log-probability score** B(model, prompts) = mean over prompts of
  log Σ_{t ∈ targets} P(t | prompt) at the first answer position (:func:`logprob_score`,
  per prompt: :func:`logprob_per_prompt`). The first answer position is the next token after
  the rendered prompt and its answer prefill; every variant's first token counts (see
  :mod:`steerlens.inputs.traits`). One batched forward per batch, left padded, and only the last
  position goes through the lm_head (HF ``logits_to_keep=1``), so it costs about a truncated
  forward.
- **Sampled rate**: fraction of sampled answers whose first word (lower-cased, punctuation
  stripped) is a target (:func:`sampled_rate`; Cloud et al. sample at T=1).
- **Projection score** (persona_vectors): B = mean_p hˡ(p)·v̂ at the last prompt token, a proxy
  they report correlates with expression; steering along v at or before ℓ raises it by design.
- **Action choice**: mean probability mass Σ_{t ∈ actions} P(t | prompt) on a class of actions
  at the decision point, the first answer position of a tool-use prompt (:func:`action_choice`).

A behavior is anything callable as ``model -> float``. :class:`LogProbBehavior`,
:class:`SampledRateBehavior` and :class:`ActionChoiceBehavior` bundle the prompts and targets
and can be re-run under another system prompt (``with_system``), which the carry test needs for
the system-prompt teacher. Behaviors run the model as it is, so they measure a steered model
inside a ``steer(...)`` block (the hooks live on the model).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import torch
from tqdm.auto import tqdm

from steerlens.core.common import tqdm_disable
from steerlens.core.precision import compute_context
from steerlens.inputs.prompts import (
    ChatPrompt,
    EncodedPrompt,
    PromptLike,
    check_prompts,
    encode,
    generate_texts,
    pad_batch,
)
from steerlens.loading.models import LoadedModel, as_model
from steerlens.runtime.activations import (
    can_share_prefix,
    in_input_order,
    prefix_batches,
    record_activations,
    shared_prefix_logits,
)

if TYPE_CHECKING:
    from steerlens.inputs.traits import TraitSpec


@runtime_checkable
class Behavior(Protocol):
    """A behavior metric: ``model -> float`` (higher = more of the behavior, or any fixed sign)."""

    def __call__(self, model: Any) -> float: ...


# --------------------------------------------------------------------------- forward


def answer_encodings(lm: LoadedModel, prompts: Sequence[PromptLike]) -> list[EncodedPrompt]:
    """Encodings cut at the first answer position (a prompt's ``response`` is dropped)."""
    encs = []
    for i, p in enumerate(check_prompts(prompts, "behavior prompts")):
        e = encode(lm.tokenizer, p)
        if e.response_start < 1:
            raise ValueError(f"prompt {i} tokenizes to no tokens")
        encs.append(
            EncodedPrompt(e.input_ids[: e.response_start], e.prompt_start, e.response_start)
        )
    return encs


def last_logits(
    lm: LoadedModel | torch.nn.Module,
    ids: torch.Tensor,
    mask: torch.Tensor,
    pos: torch.Tensor,
    *,
    k: int | None = None,
) -> torch.Tensor:
    """Logits at the last position of a left-padded batch (``ids``, ``mask``, ``pos``): (B, V),
    or (B, k, V) for the last ``k`` positions. Only those positions go through the lm_head (HF
    ``logits_to_keep``; an architecture without it runs the full head). ``lm`` is a
    :class:`~steerlens.loading.models.LoadedModel` or the HF module itself (e.g. with LoRA)."""
    hf = lm.model if isinstance(lm, LoadedModel) else lm
    kwargs: dict[str, Any] = dict(input_ids=ids, attention_mask=mask, position_ids=pos)
    kwargs["use_cache"] = False
    with compute_context(hf):
        try:
            out = hf(**kwargs, logits_to_keep=1 if k is None else k)
        except TypeError as exc:  # an architecture without logits_to_keep: full lm_head
            if "logits_to_keep" not in str(exc):
                raise
            out = hf(**kwargs)
    logits = out.logits if hasattr(out, "logits") else out[0]
    return logits[:, -1, :] if k is None else logits[:, -k:, :]


def iter_answer_logprobs(
    lm: LoadedModel,
    prompts: Sequence[PromptLike],
    *,
    batch_size: int = 32,
    progress: bool | None = False,
) -> Iterator[tuple[list[int], torch.Tensor]]:
    """Yield (prompt indices, (b, V) float32 log-softmax at the first answer position) per
    length-sorted batch. The model runs as it is (hooks of a ``steer`` block apply); prompts
    that share a prefix run it once per batch where
    :func:`steerlens.runtime.activations.can_share_prefix` allows. ``lm`` is the typed model: the
    public scores (:func:`answer_logprobs`, :func:`logprob_per_prompt`) coerce theirs."""
    encs = answer_encodings(lm, prompts)
    pad = lm.tokenizer.pad_token_id
    # prompts sharing a prefix (the chat template's system turn) run it once per batch
    batches = prefix_batches(encs, batch_size, share=can_share_prefix(lm))
    with torch.inference_mode():
        for idx, p in tqdm(batches, desc="behavior", leave=False, disable=tqdm_disable(progress)):
            if p:
                logits = shared_prefix_logits(lm, encs, idx, p)[:, -1].float()
            else:
                ids, mask, pos = pad_batch([encs[i] for i in idx], pad, lm.device)
                logits = last_logits(lm, ids, mask, pos).float()
            if not torch.isfinite(logits).all():
                raise FloatingPointError(
                    "non-finite logits at the answer position: check the model's dtype and "
                    "the steering strength"
                )
            yield idx, torch.log_softmax(logits, dim=-1).cpu()


def answer_logprobs(
    model: Any,
    prompts: Sequence[PromptLike],
    *,
    batch_size: int = 32,
    progress: bool | None = False,
) -> torch.Tensor:
    """(n, V) float32 log-probabilities of the next token at each prompt's first answer
    position, in input order. Memory n × V; for many prompts prefer :func:`logprob_per_prompt`."""
    lm = as_model(model)
    return in_input_order(
        iter_answer_logprobs(lm, prompts, batch_size=batch_size, progress=progress)
    )


def _check_ids(ids: Sequence[int], vocab: int, what: str) -> torch.Tensor:
    t = torch.as_tensor(list(ids), dtype=torch.long).reshape(-1)
    if t.numel() == 0:
        raise ValueError(f"no {what} token ids: give at least one")
    if int(t.min()) < 0 or int(t.max()) >= vocab:
        raise ValueError(f"{what} token ids must lie in [0, {vocab}), got {t.tolist()}")
    return torch.unique(t)


def target_logprob(logprobs: torch.Tensor, target_ids: Sequence[int]) -> torch.Tensor:
    """log Σ_{t ∈ targets} P(t) per row of (n, V) log-probabilities (duplicates counted once)."""
    ids = _check_ids(target_ids, logprobs.shape[-1], "target")
    return torch.logsumexp(logprobs[..., ids], dim=-1)


def logprob_per_prompt(
    model: Any,
    prompts: Sequence[PromptLike],
    target_token_ids: Sequence[int],
    *,
    batch_size: int = 32,
    progress: bool | None = False,
) -> torch.Tensor:
    """Per prompt: log Σ_{t ∈ targets} P(t | prompt) at the first answer position (float64)."""
    lm, out = as_model(model), torch.empty(len(prompts), dtype=torch.float64)
    for idx, lp in iter_answer_logprobs(lm, prompts, batch_size=batch_size, progress=progress):
        out[torch.tensor(idx)] = target_logprob(lp, target_token_ids).double()
    return out


def logprob_score(
    model: Any,
    prompts: Sequence[PromptLike],
    target_token_ids: Sequence[int],
    batch_size: int = 32,
    *,
    progress: bool | None = False,
) -> float:
    """Token log-probability score B = mean_p log Σ_{t ∈ targets} P(t | p) at the first answer
    position (DESIGN.md "Behavior")."""
    return float(
        logprob_per_prompt(
            model, prompts, target_token_ids, batch_size=batch_size, progress=progress
        ).mean()
    )


def action_choice_per_prompt(
    model: Any,
    prompts: Sequence[PromptLike],
    action_token_ids: Sequence[int],
    *,
    batch_size: int = 32,
) -> torch.Tensor:
    """Per prompt: Σ_{t ∈ actions} P(t | prompt) at the decision point (float64)."""
    return logprob_per_prompt(model, prompts, action_token_ids, batch_size=batch_size).exp()


def action_choice(
    model: Any,
    prompts: Sequence[PromptLike],
    action_token_ids: Sequence[int],
    *,
    batch_size: int = 32,
) -> float:
    """Action choice = mean over prompts of the probability mass Σ_{t ∈ actions} P(t | prompt)
    on a class of actions at the decision point (the first answer position: end the prompt's
    prefill right before the action, e.g. '{"tool": "')."""
    return float(
        action_choice_per_prompt(model, prompts, action_token_ids, batch_size=batch_size).mean()
    )


# ----------------------------------------------------------------------- sampling

_NON_WORD = re.compile(r"[^\w]+", re.UNICODE)


def first_word(text: str) -> str:
    """The first whitespace-separated word, lower-cased, punctuation stripped ("" if none)."""
    for w in text.split():
        norm = _NON_WORD.sub("", w.lower())
        if norm:
            return norm
    return ""


def normalize_targets(targets: Sequence[str]) -> frozenset[str]:
    out = frozenset(first_word(t) for t in targets) - {""}
    if not out:
        raise ValueError("no usable target words: give words such as ['owl', 'owls']")
    return out


def sampled_answers(
    model: Any,
    prompts: Sequence[PromptLike],
    n_samples: int,
    *,
    temperature: float = 1.0,
    seed: int = 0,
    max_new_tokens: int = 8,
    batch_size: int = 32,
) -> list[list[str]]:
    """``n_samples`` sampled answers per prompt (seeded, global RNG untouched)."""
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    if temperature <= 0:
        raise ValueError("temperature must be > 0 for sampling (use logprob_score for greedy)")
    items = check_prompts(prompts, "sampled_rate prompts")
    flat = [p for p in items for _ in range(n_samples)]
    texts = generate_texts(
        as_model(model),
        flat,
        max_new_tokens=max_new_tokens,
        do_sample=True,
        seed=seed,
        batch_size=batch_size,
        temperature=temperature,
    )
    return [texts[i * n_samples : (i + 1) * n_samples] for i in range(len(items))]


def sampled_rate(
    model: Any,
    prompts: Sequence[PromptLike],
    targets: Sequence[str],
    n_samples: int,
    temperature: float = 1.0,
    seed: int = 0,
    *,
    max_new_tokens: int = 8,
    batch_size: int = 32,
) -> float:
    """Sampled rate = fraction of sampled answers (``n_samples`` per prompt, temperature T)
    whose first word, lower-cased and punctuation stripped, is one of ``targets`` (normalised
    the same way). The answer is the generated text after the prompt's prefill."""
    norm = normalize_targets(targets)
    answers = sampled_answers(
        model,
        prompts,
        n_samples,
        temperature=temperature,
        seed=seed,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
    )
    flat = [a for per in answers for a in per]
    return sum(first_word(a) in norm for a in flat) / len(flat)


# ---------------------------------------------------------------------- behaviors


def _with_system(prompts: Sequence[PromptLike], system: str | None) -> tuple[PromptLike, ...]:
    out = []
    for p in check_prompts(prompts):
        if not isinstance(p, ChatPrompt):
            raise TypeError("with_system needs ChatPrompt prompts (plain strings have no system)")
        out.append(p.with_system(system))
    return tuple(out)


@dataclass(frozen=True)
class LogProbBehavior:
    """B = :func:`logprob_score` of ``prompts`` on ``target_ids``."""

    prompts: tuple[PromptLike, ...]
    target_ids: tuple[int, ...]
    batch_size: int = 32
    name: str = "logprob"

    def __call__(self, model: Any) -> float:
        return logprob_score(model, self.prompts, self.target_ids, self.batch_size)

    def per_prompt(self, model: Any) -> torch.Tensor:
        return logprob_per_prompt(model, self.prompts, self.target_ids, batch_size=self.batch_size)

    def score_logprobs(self, logprobs: torch.Tensor) -> float:
        """B from precomputed (n, V) answer log-probabilities of ``self.prompts``."""
        return float(target_logprob(logprobs, self.target_ids).double().mean())

    def with_system(self, system: str | None) -> LogProbBehavior:
        return replace(self, prompts=_with_system(self.prompts, system))

    def describe(self) -> dict[str, Any]:
        return {
            "metric": self.name,
            "n_prompts": len(self.prompts),
            "target_ids": list(self.target_ids),
            "units": "nats (log-probability)",
        }


@dataclass(frozen=True)
class ActionChoiceBehavior:
    """B = :func:`action_choice` of ``prompts`` on ``action_ids``."""

    prompts: tuple[PromptLike, ...]
    action_ids: tuple[int, ...]
    batch_size: int = 32
    name: str = "action_choice"

    def __call__(self, model: Any) -> float:
        return action_choice(model, self.prompts, self.action_ids, batch_size=self.batch_size)

    def score_logprobs(self, logprobs: torch.Tensor) -> float:
        return float(target_logprob(logprobs, self.action_ids).double().exp().mean())

    def with_system(self, system: str | None) -> ActionChoiceBehavior:
        return replace(self, prompts=_with_system(self.prompts, system))

    def describe(self) -> dict[str, Any]:
        return {
            "metric": self.name,
            "n_prompts": len(self.prompts),
            "action_ids": list(self.action_ids),
            "units": "probability",
        }


@dataclass(frozen=True)
class SampledRateBehavior:
    """B = :func:`sampled_rate` of ``prompts`` on ``targets`` (words)."""

    prompts: tuple[PromptLike, ...]
    targets: tuple[str, ...]
    n_samples: int = 20
    temperature: float = 1.0
    seed: int = 0
    max_new_tokens: int = 8
    batch_size: int = 32
    name: str = "sampled_rate"

    def __call__(self, model: Any) -> float:
        return sampled_rate(
            model,
            self.prompts,
            self.targets,
            self.n_samples,
            self.temperature,
            self.seed,
            max_new_tokens=self.max_new_tokens,
            batch_size=self.batch_size,
        )

    def with_system(self, system: str | None) -> SampledRateBehavior:
        return replace(self, prompts=_with_system(self.prompts, system))

    def describe(self) -> dict[str, Any]:
        return {
            "metric": self.name,
            "n_prompts": len(self.prompts),
            "targets": list(self.targets),
            "n_samples": self.n_samples,
            "temperature": self.temperature,
            "seed": self.seed,
            "units": "fraction of samples",
        }


@dataclass(frozen=True)
class CallableBehavior:
    """A plain ``model -> float`` function as a behavior (cannot change its system prompt)."""

    fn: Callable[[Any], float]
    name: str = "custom"

    def __call__(self, model: Any) -> float:
        return float(self.fn(model))

    def describe(self) -> dict[str, Any]:
        return {"metric": self.name, "units": "custom"}


@dataclass(frozen=True)
class ProjectionBehavior:
    """B = mean over ``prompts`` of hˡ(p)·v̂ at the last prompt token (see the module doc)."""

    prompts: tuple[PromptLike, ...]
    direction: torch.Tensor
    layer: int
    batch_size: int = 32
    name: str = "projection"

    def __call__(self, model: Any) -> float:
        a = record_activations(model, self.prompts, [self.layer], batch_size=self.batch_size)
        return float(a.means[self.layer].double() @ self.direction.double()) / float(
            self.direction.double().norm()
        )

    def with_system(self, system: str | None) -> ProjectionBehavior:
        return replace(self, prompts=_with_system(self.prompts, system))

    def describe(self) -> dict[str, Any]:
        units = "activation units (projection on v/|v|; a proxy for expression)"
        return {"metric": self.name, "n": len(self.prompts), "layer": self.layer, "units": units}


def trait_behavior(
    model: Any,
    trait: TraitSpec,
    metric: str | None = None,
    *,
    system: str | None = None,
    batch_size: int = 32,
    n_samples: int = 20,
    seed: int = 0,
    vector: Any = None,
    layer: int | None = None,
) -> LogProbBehavior | SampledRateBehavior | ProjectionBehavior:
    """The trait's behavior metric on its eval prompts (``metric`` overrides the spec's);
    ``projection`` needs ``vector`` (a SteeringVector) and its ``layer``."""
    name = metric or trait.metric
    prompts = tuple(trait.eval_chats(system))
    if name == "projection":
        if vector is None or layer is None:
            raise ValueError(
                f"trait {trait.name!r} scores behavior by projection on a persona vector "
                "(persona_vectors' offline proxy; no judge runs here): pass vector= and layer= "
                "here, or give carry_test metric=ProjectionBehavior(prompts, v[l], l) or a metric of "
                "your own"
            )
        return ProjectionBehavior(prompts, vector[layer], int(layer), batch_size)
    if name == "logprob":
        ids = trait.target_tokens(as_model(model).tokenizer).ids
        return LogProbBehavior(prompts, ids, batch_size)
    if name == "sampled_rate":
        return SampledRateBehavior(
            prompts, tuple(trait.target_words), n_samples, seed=seed, batch_size=batch_size
        )
    raise ValueError(
        f"unknown metric {name!r}: use 'logprob', 'sampled_rate' or 'projection', or pass a "
        "callable model -> float"
    )


def as_behavior(metric: Any, name: str | None = None) -> Any:
    """A behavior object from a Behavior or a plain callable ``model -> float``."""
    if hasattr(metric, "with_system") or isinstance(metric, CallableBehavior):
        return metric
    if callable(metric):
        return CallableBehavior(metric, str(name or getattr(metric, "__name__", "custom")))
    raise TypeError(
        f"a behavior metric must be callable as model -> float, got {type(metric).__name__}"
    )
