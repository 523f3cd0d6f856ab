"""Agent behavior metrics (DESIGN.md "Action choice", "First substantive action").

- :func:`action_name_probs`: P(name | decision point) for each tool/command name, the
  product of the model's next-token probabilities over the name's tokens after the setting's
  prefill (``{"tool": "`` for the API; nothing for bash), at the decision point of each task.
  :func:`action_choice` reports, per setting, the probability of the biased name and its share
  among the scored names (delete vs write/move/archive; chmod vs chown/setfacl).
- :func:`first_action_rate`: over sampled episodes (tasks × seeds), the fraction whose first
  scored action is the biased kind, with a Wilson interval (:func:`wilson`).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from steerlens.agents.tasks import Setting, Task, get_setting
from steerlens.agents.trajectories import Trajectory, chat_ids
from steerlens.core.results import Record
from steerlens.inputs.prompts import EncodedPrompt, pad_batch
from steerlens.loading.models import LoadedModel, as_model
from steerlens.measures.behavior import last_logits
from steerlens.measures.stats import wilson
from steerlens.runtime.activations import can_share_prefix, shared_prefix_logits

__all__ = [
    "ActionChoice",
    "RateResult",
    "action_choice",
    "action_name_probs",
    "decision_messages",
    "first_action_rate",
    "name_tokens",
    "wilson",
]


def decision_messages(setting: Setting, task: Task) -> list[dict[str, str]]:
    return [{"role": "system", "content": setting.system}, {"role": "user", "content": task.text}]


def name_tokens(tokenizer: Any, setting: Setting, name: str) -> tuple[list[int], int]:
    """Token ids of prefill + name, and how many of them are the prefill's."""
    both = tokenizer(setting.prefill + name, add_special_tokens=False)["input_ids"]
    pre = (
        tokenizer(setting.prefill, add_special_tokens=False)["input_ids"] if setting.prefill else []
    )
    if list(both[: len(pre)]) != list(pre) or len(both) <= len(pre):
        raise ValueError(f"{name!r} does not tokenize as a continuation of {setting.prefill!r}")
    return list(both), len(pre)


def action_name_probs(
    model: Any, setting: str | Setting, tasks: Sequence[Task], names: Sequence[str] | None = None
) -> torch.Tensor:
    """(tasks, names) float64: P(name | system + task + prefill) at the first decision point.
    Each task's prompt runs once and the names continue from its KV cache where the backend
    allows (else a plain batched forward)."""
    lm = as_model(model)
    st = get_setting(setting)
    use = list(names or st.names)
    toks = [name_tokens(lm.tokenizer, st, n) for n in use]
    out = torch.zeros(len(tasks), len(use), dtype=torch.float64)
    with torch.inference_mode():
        for i, t in enumerate(tasks):
            prompt = chat_ids(lm.tokenizer, decision_messages(st, t))
            encs = [
                EncodedPrompt(tuple(prompt + ids), 0, len(prompt) + len(ids)) for ids, _ in toks
            ]
            out[i] = _sequence_probs(lm, encs, len(prompt), [n_pre for _, n_pre in toks])
    return out


def _sequence_probs(
    lm: LoadedModel, encs: Sequence[EncodedPrompt], p: int, n_pre: Sequence[int]
) -> torch.Tensor:
    """Π over each sequence's tokens after ``p + n_pre`` of P(token | everything before)."""
    keep = max(len(e) for e in encs) - p + 1
    idx = list(range(len(encs)))
    if can_share_prefix(lm) and p > 1:
        logits = shared_prefix_logits(lm, encs, idx, p - 1, keep=keep)
    else:
        ids, mask, pos = pad_batch(encs, lm.tokenizer.pad_token_id, lm.device)
        keep = min(keep, ids.shape[1])
        logits = last_logits(lm.model, ids, mask, pos, k=keep)
    logp = torch.log_softmax(logits.double(), dim=-1)
    res = torch.zeros(len(encs), dtype=torch.float64)
    for r, e in enumerate(encs):
        n_tail = len(e) - p  # tokens after the prompt (prefill + name)
        total = 0.0
        for j in range(n_pre[r], n_tail):
            col = keep - 1 - (n_tail - j)  # the column that predicts tail token j
            total += float(logp[r, col, e.input_ids[p + j]])
        res[r] = math.exp(total)
    return res


@dataclass
class ActionChoice(Record):
    """Per task: P(biased name) and its share among the scored names; means over tasks."""

    setting: str
    biased: str
    p_biased: list[float]
    share: list[float]
    probs: dict[str, list[float]]

    legacy_kinds = ("steerlens.action_choice",)
    derived_json = ("mean_p", "mean_share")

    @property
    def mean_p(self) -> float:
        return sum(self.p_biased) / len(self.p_biased)

    @property
    def mean_share(self) -> float:
        return sum(self.share) / len(self.share)

    def summary(self) -> str:
        return (
            f"action choice ({self.setting}): P({self.biased}) = {self.mean_p:.3f}, share among "
            f"scored actions = {self.mean_share:.3f} over {len(self.share)} tasks"
        )


def action_choice(model: Any, setting: str | Setting, tasks: Sequence[Task]) -> ActionChoice:
    """:func:`action_name_probs` of every name, read as the biased name's probability and
    its share among the setting's scored names."""
    st = get_setting(setting)
    if not tasks:
        raise ValueError("action_choice needs at least one task")
    probs = action_name_probs(model, st, tasks)
    names = list(st.names)
    b = probs[:, names.index(st.biased_name)]
    scored = probs[:, [names.index(n) for n in st.scored_names]].sum(-1)
    return ActionChoice(
        st.name,
        st.biased_name,
        b.tolist(),
        (b / scored.clamp(min=1e-300)).tolist(),
        {n: probs[:, j].tolist() for j, n in enumerate(names)},
    )


@dataclass
class RateResult(Record):
    """``k`` of ``n`` episodes had the biased kind as their first scored action; ``counts``
    of first scored kinds (``"none"``: no scored action within the step limit)."""

    setting: str
    biased: str
    k: int
    n: int
    low: float
    high: float
    counts: dict[str, int]
    completed: int

    legacy_kinds = ("steerlens.first_action_rate",)
    derived_json = ("rate",)

    @property
    def rate(self) -> float:
        return self.k / self.n

    def summary(self) -> str:
        return (
            f"{self.biased}-first rate ({self.setting}): {self.k}/{self.n} = {self.rate:.2f} "
            f"[{self.low:.2f}, {self.high:.2f}] (Wilson 95%); first actions {self.counts}"
        )


def first_action_rate(
    trajs: Sequence[Trajectory], setting: str | Setting, level: float = 0.95
) -> RateResult:
    """The sampled first-scored-action rate of episodes (DESIGN.md "First substantive
    action"), with a Wilson interval."""
    st = get_setting(setting)
    if not trajs:
        raise ValueError("first_action_rate needs at least one trajectory")
    firsts = [t.first_among(st.scored) or "none" for t in trajs]
    k = sum(f == st.biased for f in firsts)
    low, high = wilson(k, len(firsts), level)
    done = sum(t.completed for t in trajs)
    return RateResult(st.name, st.biased, k, len(firsts), low, high, dict(Counter(firsts)), done)
