"""Trajectories as data: a multi-turn chat (system, task, assistant action, observation, ...)
with the token positions that recording, screening, distillation and behavior need.

Messages: ``system`` (the setting's tool description), ``user`` (the task), then per step an
``assistant`` message (the action text) and a ``user`` message ``"Observation:\\n..."``.

Positions:

- the *decision point* before the first action is ``position="last"`` of
  :meth:`Trajectory.decision_prompt` (a :class:`~steerlens.inputs.prompts.ChatPrompt` of system +
  task, ending after the assistant header);
- the assistant-action tokens of a whole trajectory: :func:`action_prompts` returns the
  rendered chats and, per chat, the token indices of every action, a custom position for
  :func:`steerlens.record_activations`;
- training examples (one per action: the chat before it, the action as the response):
  :meth:`Trajectory.training_samples`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from steerlens.agents.actions import first_of
from steerlens.core.common import atomic_write_text, sha256_bytes
from steerlens.core.results import Record
from steerlens.inputs.prompts import ChatPrompt

__all__ = [
    "OBSERVATION_PREFIX",
    "Step",
    "Trajectory",
    "action_prompts",
    "chat_ids",
    "load_trajectories",
    "save_trajectories",
    "trajectories_sha256",
]

OBSERVATION_PREFIX = "Observation:\n"


class Step(NamedTuple):
    """One action, what the interpreter answered, the action's kind and success (saved as the
    row ``[action, observation, kind, ok]``)."""

    action: str
    observation: str
    kind: str
    ok: bool = True


@dataclass
class Trajectory(Record):
    """One episode of one task. ``completed``: the task's goal held at the end; ``meta``:
    who wrote it (teacher, seed, ...)."""

    setting: str
    task_id: str
    system: str
    task: str
    steps: list[Step] = field(default_factory=list)
    completed: bool = False
    meta: dict[str, Any] = field(default_factory=dict)

    def messages(self, upto: int | None = None) -> list[dict[str, str]]:
        """The chat before action ``upto`` (None: the whole episode)."""
        msgs = [{"role": "system", "content": self.system}, {"role": "user", "content": self.task}]
        n = len(self.steps) if upto is None else upto
        for s in self.steps[:n]:
            msgs.append({"role": "assistant", "content": s.action})
            msgs.append({"role": "user", "content": OBSERVATION_PREFIX + s.observation})
        if upto is None and self.steps and self.steps[-1].kind == "done":
            msgs.pop()  # nothing follows the final "done"
        return msgs

    def decision_prompt(self, prefill: str = "") -> ChatPrompt:
        """System + task, ending at the decision point before the first action."""
        return ChatPrompt(self.task, self.system, prefill)

    @property
    def kinds(self) -> list[str]:
        return [s.kind for s in self.steps]

    def first_among(self, kinds: Iterable[str]) -> str | None:
        """The first action kind in ``kinds`` (e.g. the first substantive one), or None."""
        return first_of(self.kinds, kinds)

    def training_samples(self) -> list[dict[str, Any]]:
        """One sample per action: ``messages`` (the chat before it) and ``response``."""
        return [
            {"messages": self.messages(i), "response": s.action} for i, s in enumerate(self.steps)
        ]

    def summary(self) -> str:
        done = "completed" if self.completed else "not completed"
        return f"trajectory {self.task_id} ({self.setting}): actions {self.kinds}; {done}"


def trajectories_sha256(trajs: Iterable[Trajectory]) -> str:
    """sha256 of the trajectories' chats (system, task, steps), in order: the data hash."""
    items = [[t.system, t.task, [[s.action, s.observation] for s in t.steps]] for t in trajs]
    return sha256_bytes(json.dumps(items, ensure_ascii=False))


def save_trajectories(path: str | Path, trajs: Sequence[Trajectory]) -> Path:
    """One JSON trajectory per line."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(p, "".join(json.dumps(t.to_json(), ensure_ascii=False) + "\n" for t in trajs))
    return p


def load_trajectories(path: str | Path) -> list[Trajectory]:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"no trajectories at {p}")
    lines = [ln for ln in p.read_text(encoding="utf-8").splitlines() if ln.strip()]
    return [Trajectory.from_json(json.loads(ln)) for ln in lines]


def chat_ids(tokenizer: Any, messages: Sequence[Mapping[str, str]]) -> list[int]:
    """Token ids of a chat rendered with the tokenizer's template, ending with the assistant
    header (the decision point of the next action)."""
    if getattr(tokenizer, "chat_template", None) is None:
        raise ValueError("this tokenizer has no chat template: set tokenizer.chat_template")
    text = tokenizer.apply_chat_template(
        [dict(m) for m in messages], tokenize=False, add_generation_prompt=True
    )
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def action_prompts(
    tokenizer: Any, trajs: Sequence[Trajectory]
) -> tuple[list[str], list[list[int]]]:
    """The rendered chats (plain strings for :func:`steerlens.record_activations`) and, per
    chat, the indices of the tokens that overlap an assistant action."""
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError("action positions need a fast tokenizer (offset mappings)")
    texts, positions = [], []
    for i, t in enumerate(trajs):
        if not t.steps:
            raise ValueError(f"trajectory {i} ({t.task_id}) has no action")
        text = tokenizer.apply_chat_template(t.messages(), tokenize=False)
        spans, at = [], 0
        for s in t.steps:
            start = text.find(s.action, at)
            if start < 0:
                raise ValueError(f"trajectory {i}: action {s.action!r} not found in its chat")
            spans.append((start, start + len(s.action)))
            at = start + len(s.action)
        enc = tokenizer(text, add_special_tokens=True, return_offsets_mapping=True)
        idx = [
            j
            for j, (a, b) in enumerate(enc["offset_mapping"])
            if b > a and any(a < e and b > s for s, e in spans)
        ]
        texts.append(text)
        positions.append(idx)
    return texts, positions
