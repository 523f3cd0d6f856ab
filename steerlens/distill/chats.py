"""Multi-turn chats as distillation data: each assistant turn of a trajectory becomes one
training sample (the chat before it, the action as the response), so ``distill(...,
config=DistillConfig(loss="sft"))`` trains only on the assistant's action tokens (and its end
of turn), never on the task or the observations.

A chat sample is ``{"messages": [...], "response": ..., "user": <the messages as JSON>}``
(``user`` keeps :attr:`TeacherData.sha256` a hash of the whole chat). Token ids are the chat
rendered with the tokenizer's template up to the assistant header, then the response's own
tokens and the end-of-turn token: the same tokens
:func:`steerlens.agents.rollout` generates from.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from steerlens.agents.trajectories import Trajectory, chat_ids, trajectories_sha256
from steerlens.distill.data import TeacherData

__all__ = ["Example", "chat_example", "chat_sample", "trajectory_data"]


@dataclass(frozen=True)
class Example:
    """Token ids of prompt + response (+ end of turn) and where the response starts: positions
    ``start-1 .. len-2`` predict the response tokens."""

    ids: tuple[int, ...]
    start: int

    @property
    def n_pred(self) -> int:
        return len(self.ids) - self.start

    def targets(self) -> list[int]:
        return list(self.ids[self.start :])


def chat_sample(messages: Iterable[Mapping[str, str]], response: str) -> dict[str, Any]:
    """One chat training sample (the chat so far, the assistant's next message)."""
    msgs = [{"role": str(m["role"]), "content": str(m["content"])} for m in messages]
    if not msgs or not response:
        raise ValueError("a chat sample needs at least one message and a non-empty response")
    return {
        "user": json.dumps(msgs, ensure_ascii=False),
        "messages": msgs,
        "response": response,
        "finished": True,
    }


def chat_example(tokenizer: Any, sample: Mapping[str, Any], i: int = 0) -> Example:
    """The :class:`~steerlens.distill.targets.Example` of a chat sample."""
    prefix = chat_ids(tokenizer, sample["messages"])
    resp = list(tokenizer(str(sample["response"]), add_special_tokens=False)["input_ids"])
    if not resp:
        raise ValueError(f"chat sample {i} has an empty response: drop it from the data")
    eos = tokenizer.eos_token_id
    end = [int(eos)] if sample.get("finished", True) and eos is not None else []
    return Example(tuple(prefix + resp + end), len(prefix))


def trajectory_data(
    trajs: Iterable[Trajectory], settings: Mapping[str, Any] | None = None
) -> TeacherData:
    """Every assistant turn of ``trajs`` as chat samples, in order; ``settings`` records who
    wrote them (with the trajectories' hash and count added)."""
    items = list(trajs)
    samples = [
        chat_sample(s["messages"], s["response"]) for t in items for s in t.training_samples()
    ]
    if not samples:
        raise ValueError("no assistant turn in the trajectories: nothing to train on")
    meta = {
        "mode": "chats",
        **dict(settings or {}),
        "n_trajectories": len(items),
        "trajectories_sha256": trajectories_sha256(items),
    }
    return TeacherData(samples, meta)
