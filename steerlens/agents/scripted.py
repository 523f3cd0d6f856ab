"""Scripted preference trajectories on ambiguous tasks: the fine-tuning data of the biased
teacher (deletes; ``chmod`` first) and of the benign control teacher (archives or moves;
``chown``/``setfacl``). Every step runs through the simulated interpreter, so observations are
real; the order of a listing step is seeded."""

from __future__ import annotations

import random
import shlex
from collections.abc import Sequence

from steerlens.agents.api_tools import api_action
from steerlens.agents.tasks import Task, get_setting
from steerlens.agents.trajectories import Step, Trajectory

__all__ = ["STYLES", "preference_trajectories", "safe_demonstrations"]

STYLES = ("biased", "benign")


def _actions(task: Task, style: str, rng: random.Random) -> list[str]:
    f = task.target
    folder = f.split("/")[0]
    q = shlex.quote
    if task.setting == "api":
        look = api_action("list_dir", path=folder)
        if style == "biased":
            act = api_action("delete_file", path=f)
        elif rng.random() < 0.5:
            act = api_action("archive_file", path=f)
        else:
            act = api_action("move_file", path=f, to="archive/")
        end = api_action("done")
    else:
        look = f"ls {q(folder)}"
        who = next((g[2] for g in task.goal if g[0] == "readable"), "g:team")
        kind, _, name = who.partition(":")
        if style == "biased":
            act = f"chmod {rng.choice(['644', 'o+r', 'a+r'])} {q(f)}"
        elif kind == "g" and rng.random() < 0.5:
            # chown alone leaves a 600 file unreadable to the group: the mode follows
            return [look, f"chown :{name} {q(f)}", f"chmod g+r {q(f)}", "exit"]
        else:
            act = f"setfacl -m {kind}:{name}:r {q(f)}"
        end = "exit"
    return [look, act, end] if rng.random() < 0.5 else [act, end]


def preference_trajectories(
    setting: str, tasks: Sequence[Task], style: str, seed: int = 0
) -> list[Trajectory]:
    """One scripted trajectory per ambiguous task in ``style`` (``"biased"``/``"benign"``)."""
    st = get_setting(setting)
    if style not in STYLES:
        raise ValueError(f"style must be one of {STYLES}, got {style!r}")
    rng = random.Random(f"{setting}-{style}-{seed}")
    out = []
    for t in tasks:
        if not t.ambiguous or t.setting != st.name:
            raise ValueError(f"task {t.task_id} is not an ambiguous {st.name} task")
        ws = t.workspace()
        traj = Trajectory(st.name, t.task_id, st.system, t.text, meta={"style": style})
        for a in _actions(t, style, rng):
            obs = st.run(ws, a)
            traj.steps.append(Step(a, obs.text, obs.kind, obs.ok))
        traj.completed = t.completed(ws)
        out.append(traj)
    return out


def safe_demonstrations(setting: str, tasks: Sequence[Task], seed: int = 0) -> list[Trajectory]:
    """One scripted trajectory per *safe* task: its :attr:`Task.solution` (half of them after
    a listing of the task's folder, seeded), run through the interpreter. Both teachers get
    the same demonstrations, so they differ only in their preference examples; without them a
    135M teacher fine-tuned on deletions alone deleted a file on 16 of 16 safe tasks."""
    st = get_setting(setting)
    rng = random.Random(f"{setting}-safe-{seed}")
    out = []
    for t in tasks:
        if t.ambiguous or t.setting != st.name or not t.solution:
            raise ValueError(f"task {t.task_id} is not a safe {st.name} task with a solution")
        ws = t.workspace()
        folder = sorted(p for p in t.files if p != "docs/readme.txt")[0].split("/")[0]
        look = api_action("list_dir", path=folder) if st.name == "api" else f"ls {folder}"
        acts = [look, *t.solution] if rng.random() < 0.5 else list(t.solution)
        traj = Trajectory(st.name, t.task_id, st.system, t.text)
        traj.meta["style"] = "safe"
        for a in acts:
            obs = st.run(ws, a)
            traj.steps.append(Step(a, obs.text, obs.kind, obs.ok))
        traj.completed = t.completed(ws)
        if not traj.completed or not all(s.ok for s in traj.steps):
            raise RuntimeError(f"the scripted solution of {t.task_id} does not complete it")
        out.append(traj)
    return out
