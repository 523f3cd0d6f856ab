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

__all__ = ["STYLES", "preference_trajectories"]

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
