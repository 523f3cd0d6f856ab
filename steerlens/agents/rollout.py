"""Run agent episodes: the model acts under the action grammar, the simulated interpreter
answers, up to a step limit (:func:`rollout`). Nothing runs on the host."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from steerlens.agents.actions import READ_KINDS, SUBSTANTIVE_KINDS
from steerlens.agents.grammar import ActionGrammar, ActionTrie, end_ids
from steerlens.agents.tasks import Setting, Task, get_setting
from steerlens.agents.trajectories import Step, Trajectory, chat_ids
from steerlens.agents.workspace import Workspace
from steerlens.core.common import tqdm_disable
from steerlens.inputs.prompts import EncodedPrompt, pad_batch
from steerlens.loading.models import LoadedModel, as_model

__all__ = ["rollout"]


@dataclass
class _Episode:
    task: Task
    ws: Workspace
    traj: Trajectory
    done: bool = False
    seen: set[str] = field(default_factory=set)
    """Read-only actions taken since the workspace last changed (not offered again)."""

    def candidates(self, setting: Setting, no_repeat: bool) -> list[str]:
        cs = setting.candidates(self.ws, self.task.extra)
        if no_repeat and self.seen:
            cs = [c for c in cs if c not in self.seen] or cs
        return cs

    def record(self, action: str, kind: str, ok: bool) -> None:
        if kind in READ_KINDS:
            self.seen.add(action)
        elif kind in SUBSTANTIVE_KINDS and ok:
            self.seen.clear()


def _step_batch(
    lm: LoadedModel,
    setting: Setting,
    eps: Sequence[_Episode],
    temperature: float,
    end: list[int],
    no_repeat: bool = True,
) -> list[str]:
    """One grammar-constrained action for each episode (batched, left-padded)."""
    from transformers import LogitsProcessorList

    tok = lm.tokenizer
    prompts = [chat_ids(tok, e.traj.messages()) for e in eps]
    cands = [e.candidates(setting, no_repeat) for e in eps]
    seqs = [[tok(c, add_special_tokens=False)["input_ids"] for c in cs] for cs in cands]
    tries = [ActionTrie(s, end) for s in seqs]
    encs = [EncodedPrompt(tuple(p), 0, len(p)) for p in prompts]
    ids, mask, _ = pad_batch(encs, tok.pad_token_id, lm.device)
    longest = max(len(x) for s in seqs for x in s) + 1
    kw: dict[str, Any] = {"do_sample": False}
    if temperature > 0:
        kw = {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0}
    with torch.inference_mode():
        out = lm.model.generate(  # type: ignore[operator]
            input_ids=ids,
            attention_mask=mask,
            pad_token_id=tok.pad_token_id,
            eos_token_id=end,
            max_new_tokens=longest,
            logits_processor=LogitsProcessorList([ActionGrammar(tries, ids.shape[1])]),
            **kw,
        )
    actions = []
    for r, (trie, cs) in enumerate(zip(tries, cands, strict=True)):
        new = out[r, ids.shape[1] :].tolist()
        cut = next((j for j, t in enumerate(new) if t in end), len(new))
        k = trie.action_of(new[:cut])
        if k is None:  # cannot happen under the grammar; refuse rather than guess
            raise RuntimeError(f"generated tokens {new[:cut]} are not a candidate action")
        actions.append(cs[k])
    return actions


def rollout(
    model: Any,
    setting: str | Setting,
    tasks: Sequence[Task],
    *,
    n_seeds: int = 1,
    seed: int = 0,
    max_steps: int = 4,
    temperature: float = 1.0,
    stop_kinds: Iterable[str] | None = None,
    batch_size: int = 16,
    meta: dict[str, Any] | None = None,
    progress: bool | None = None,
    no_repeat: bool = True,
) -> list[Trajectory]:
    """Episodes of ``tasks`` × ``n_seeds``: each step the model picks one candidate action
    under :class:`ActionGrammar` (sampled at ``temperature``; 0 = greedy), the simulated
    interpreter answers, and the episode ends at ``done``/``exit``, at a kind in
    ``stop_kinds`` (e.g. the first scored action, for evaluation) or after ``max_steps``.
    Sampling is seeded by ``seed`` without touching the global RNG. Returns the trajectories
    in (task, seed) order, each with ``completed`` set by the task's goal.

    ``no_repeat``: a read-only action (list, read) already taken since the workspace last
    changed is not offered again: it would return the same observation. Without this guard
    SmolLM2-135M re-lists the same folder at every step (10 of 10 sampled episodes of the
    ambiguous API tasks listed or read for 6 steps), so no episode reached a substantive
    action within the step limit."""
    lm = as_model(model)
    st = get_setting(setting)
    if max_steps < 1 or n_seeds < 1:
        raise ValueError("max_steps and n_seeds must be >= 1")
    stops = frozenset(stop_kinds or ())
    end = end_ids(lm.model, lm.tokenizer)
    eps = []
    for t in tasks:
        if t.setting != st.name:
            raise ValueError(f"task {t.task_id} is a {t.setting!r} task, not {st.name!r}")
        for s in range(n_seeds):
            m = {**(meta or {}), "seed_index": s, "sampling_seed": seed}
            traj = Trajectory(st.name, t.task_id, st.system, t.text, meta=m)
            eps.append(_Episode(t, t.workspace(), traj))
    devices = [lm.device] if lm.device.type == "cuda" else []
    bar = tqdm(total=max_steps, desc=f"rollout {st.name}", disable=tqdm_disable(progress))
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        for _ in range(max_steps):
            active = [e for e in eps if not e.done]
            for b in range(0, len(active), batch_size):
                chunk = active[b : b + batch_size]
                for e, action in zip(
                    chunk, _step_batch(lm, st, chunk, temperature, end, no_repeat), strict=True
                ):
                    obs = st.run(e.ws, action)
                    e.record(action, obs.kind, obs.ok)
                    e.traj.steps.append(Step(action, obs.text, obs.kind, obs.ok))
                    e.done = obs.done or obs.kind in stops
            bar.update()
    bar.close()
    for e in eps:
        e.traj.completed = e.task.completed(e.ws)
    return [e.traj for e in eps]
