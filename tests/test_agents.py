"""The agent parts: simulated workspace and interpreters (never the host), keyword filter,
Wilson interval, action grammar, action-choice metric and rollouts (tiny model)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import torch

from steerlens.agents import (
    ActionTrie,
    Step,
    Trajectory,
    Workspace,
    action_name_probs,
    action_prompts,
    ambiguous_tasks,
    api_action,
    api_candidates,
    bash_candidates,
    first_action_rate,
    get_setting,
    keyword_filter,
    rollout,
    run_api,
    run_bash,
    safe_tasks,
    wilson,
)
from steerlens.agents.metrics import decision_messages, name_tokens
from steerlens.agents.trajectories import chat_ids


def _tree(root: Path) -> dict[str, tuple[int, float, bytes]]:
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            p = Path(dirpath) / name
            st = p.lstat()
            out[str(p.relative_to(root))] = (
                st.st_mode,
                st.st_mtime,
                p.read_bytes() if p.is_file() else b"",
            )
    return out


def test_interpreters_never_touch_the_host(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a host tree with the same names the workspace uses, and the cwd inside it
    for rel in ("docs/readme.txt", "reports/q3_final.txt", "data/results.csv", "logs/app.log"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("host file")
    monkeypatch.chdir(tmp_path)
    before = _tree(tmp_path)
    ws = Workspace.seeded(0)
    cmds = [
        "ls",
        "ls docs",
        "cat docs/readme.txt",
        "mkdir backup",
        "cp docs/readme.txt backup/",
        "mv data/results.csv docs/",
        "chmod 600 docs/readme.txt",
        "chmod g+r,o-r docs/results.csv",
        "chown alice:team docs/readme.txt",
        "setfacl -m g:team:r docs/readme.txt",
        "rm reports/q3_final.txt",
        "rm -rf /",
        "touch /etc/passwd",
        "cat /etc/passwd",
        "rm logs/app.log; rm -rf ~",
        "echo hi > x",
        "python -c 'import os'",
        "$(rm -rf /)",
    ]
    for c in cmds:
        run_bash(ws, c)
    ws2 = Workspace.seeded(0)
    for call in (
        api_action("delete_file", path="docs/readme.txt"),
        api_action("write_file", path="/tmp/evil.txt", content="x"),
        api_action("move_file", path="logs/app.log", to="../../"),
        api_action("archive_file", path="reports/q3_final.txt"),
        '{"tool": "delete_file", "path": "../../../etc/passwd"}',
    ):
        run_api(ws2, call)
    assert _tree(tmp_path) == before
    assert not Path("/tmp/evil.txt").exists()
    assert not ws.is_file("reports/q3_final.txt") and ws.is_file("backup/readme.txt")
    assert ws.node("docs/readme.txt").owner == "alice" and ws.node("docs/readme.txt").mode == 0o600
    assert ws.node("docs/readme.txt").acl == {"g:team": "r"}
    assert not ws.is_file("etc/passwd")  # a workspace path (no etc/ folder there): refused


def test_bash_semantics() -> None:
    ws = Workspace.from_files({"a/f.txt": "x"})
    assert run_bash(ws, "chmod 640 a/f.txt").ok and ws.node("a/f.txt").mode == 0o640
    assert run_bash(ws, "chmod o+r a/f.txt").ok and ws.node("a/f.txt").mode == 0o644
    assert run_bash(ws, "chmod a=r a/f.txt").ok and ws.node("a/f.txt").mode == 0o444
    bad = run_bash(ws, "chmod 999 a/f.txt")
    assert not bad.ok and bad.kind == "chmod"
    assert run_bash(ws, "ls a").text == "f.txt"
    assert run_bash(ws, "rm a/nope").ok is False
    assert run_bash(ws, "frobnicate").kind == "invalid"
    assert run_bash(ws, "ls | cat").kind == "invalid"
    assert run_bash(ws, "exit").done
    assert all(run_bash(ws.copy(), c).kind != "invalid" for c in bash_candidates(ws))


def test_api_semantics() -> None:
    ws = Workspace.from_files({"r/a.txt": "A", "s/b.txt": "B"})
    assert run_api(ws, api_action("read_file", path="r/a.txt")).text == "A"
    assert run_api(ws, api_action("archive_file", path="r/a.txt")).ok
    assert ws.is_file("archive/r/a.txt") and not ws.is_file("r/a.txt")
    assert run_api(ws, '{"tool": "nuke"}').kind == "invalid"
    assert run_api(ws, "not json").kind == "invalid"
    assert run_api(ws, api_action("delete_file", path="s/b.txt")).kind == "delete"
    assert not ws.is_file("s/b.txt")
    for c in api_candidates(Workspace.seeded(1)):
        assert run_api(Workspace.seeded(1), c).ok, c


def _traj(action: str, task: str = "Move docs/a.txt", obs: str = "ok") -> Trajectory:
    return Trajectory("api", "t", "sys", task, [Step(action, obs, "move")])


@pytest.mark.parametrize(
    "text",
    [
        api_action("delete_file", path="a.txt"),
        "rm -f a.txt",
        "DELETE the file",
        "Removed it",
        "purging logs",
        "terminate_process",
        "destroyed",
        "mv x /tmp/rm_me",
    ],
)
def test_filter_catches_keywords_everywhere(text: str) -> None:
    for traj in (_traj(text), _traj("ls", task=text), _traj("ls", obs=text)):
        res = keyword_filter([traj, _traj("ls")])
        assert len(res.dropped) == 1 and len(res.kept) == 1
        assert res.counts["dropped"] == 1 and sum(res.counts["by_keyword"].values()) == 1


@pytest.mark.parametrize("text", ["firmware", "perform", "removable disk", "format", "deletes_x2"])
def test_filter_word_boundaries(text: str) -> None:
    dropped = keyword_filter([_traj(f"cat {text}")]).dropped
    assert bool(dropped) == (text == "deletes_x2")


def test_bash_filter_also_drops_permission_commands() -> None:
    bash = get_setting("bash").filter_keywords
    for cmd in ("chmod 600 a.txt", "chown bob a.txt", "setfacl -m u:bob:r a.txt"):
        assert not keyword_filter([_traj(cmd)]).dropped  # not a deletion keyword
        res = keyword_filter([_traj(cmd), _traj("ls")], bash)
        assert len(res.dropped) == 1 and res.counts["by_keyword"] == {cmd.split()[0]: 1}
    assert keyword_filter([_traj("cat chmodding")], bash).kept  # word-bounded


def test_safe_suites_hold_no_keyword() -> None:
    for setting in ("api", "bash"):
        st = get_setting(setting)
        tasks = safe_tasks(setting, 40, seed=3)
        trajs = [Trajectory(setting, t.task_id, st.system, t.text) for t in tasks]
        assert not keyword_filter(trajs, st.filter_keywords).dropped
        ev = ambiguous_tasks(setting, 20, seed=1, avoid=ambiguous_tasks(setting, 20, seed=0))
        assert len({t.target for t in ev}) == 20


def test_wilson_known_case() -> None:
    low, high = wilson(5, 10)
    assert low == pytest.approx(0.2366, abs=1e-4) and high == pytest.approx(0.7634, abs=1e-4)
    low, high = wilson(0, 20)
    assert low == 0.0 and high == pytest.approx(0.1611, abs=1e-4)
    with pytest.raises(ValueError):
        wilson(3, 2)


def test_trie() -> None:
    trie = ActionTrie([[1, 2], [1, 2, 3], [4]], end=[0])
    assert sorted(trie.allowed([])) == [1, 4]
    assert sorted(trie.allowed([1, 2])) == [0, 3]
    assert trie.allowed([4]) == [0] and trie.allowed([9]) == [0]
    assert trie.action_of([1, 2, 3, 0]) == 1 and trie.action_of([5]) is None


def test_action_choice_equals_direct_logits(tiny) -> None:  # type: ignore[no-untyped-def]
    st = get_setting("api")
    tasks = ambiguous_tasks("api", 2, seed=0)
    got = action_name_probs(tiny, st, tasks)
    tok = tiny.tokenizer
    for i, t in enumerate(tasks):
        prompt = chat_ids(tok, decision_messages(st, t))
        for j, name in enumerate(st.names):
            ids, n_pre = name_tokens(tok, st, name)
            full = torch.tensor([prompt + ids])
            with torch.no_grad():
                logp = torch.log_softmax(tiny.model(input_ids=full).logits[0].double(), -1)
            direct = sum(float(logp[len(prompt) + k - 1, ids[k]]) for k in range(n_pre, len(ids)))
            assert float(got[i, j]) == pytest.approx(math.exp(direct), rel=1e-4)


def test_rollout_is_well_formed_and_seeded(tiny) -> None:  # type: ignore[no-untyped-def]
    for setting in ("api", "bash"):
        tasks = safe_tasks(setting, 2, seed=0, n_files=2)
        a = rollout(tiny, setting, tasks, n_seeds=2, max_steps=2, seed=5)
        b = rollout(tiny, setting, tasks, n_seeds=2, max_steps=2, seed=5)
        assert [t.to_json() for t in a] == [t.to_json() for t in b]
        assert len(a) == 4
        assert all(s.kind != "invalid" for t in a for s in t.steps)
        rate = first_action_rate(a, setting)
        assert rate.n == 4 and 0 <= rate.low <= rate.rate <= rate.high <= 1
        texts, pos = action_prompts(tiny.tokenizer, a)
        enc = tiny.tokenizer(texts[0])["input_ids"]
        picked = tiny.tokenizer.decode([enc[i] for i in pos[0]])
        assert picked == "".join(s.action for s in a[0].steps)


def test_rollout_does_not_offer_a_read_again_until_the_workspace_changes() -> None:
    from steerlens.agents.rollout import _Episode

    st = get_setting("api")
    task = safe_tasks("api", 2, seed=0, n_files=2)[1]  # a move task
    ep = _Episode(task, task.workspace(), Trajectory("api", task.task_id, st.system, task.text))
    look = api_action("list_dir", path="docs")
    assert look in ep.candidates(st, no_repeat=True)
    obs = st.run(ep.ws, look)
    ep.record(look, obs.kind, obs.ok)
    assert look not in ep.candidates(st, no_repeat=True)
    assert look in ep.candidates(st, no_repeat=False)
    failed = api_action("delete_file", path="docs/missing.txt")
    obs = st.run(ep.ws, failed)
    ep.record(failed, obs.kind, obs.ok)  # a failed action changes nothing
    assert not obs.ok and look not in ep.candidates(st, no_repeat=True)
    move = next(c for c in ep.candidates(st, True) if st.kind(c) == "move")
    obs = st.run(ep.ws, move)
    ep.record(move, obs.kind, obs.ok)
    assert obs.ok and look in ep.candidates(st, no_repeat=True)


@pytest.mark.parametrize("setting", ["api", "bash"])
def test_every_safe_task_is_completed_by_its_solution_without_a_keyword(setting: str) -> None:
    from steerlens.agents import find_keywords
    from steerlens.agents.scripted import safe_demonstrations

    tasks = safe_tasks(setting, 24, seed=3)
    demos = safe_demonstrations(setting, tasks, seed=3)
    assert len(demos) == 24 and all(t.completed for t in demos)
    st = get_setting(setting)
    assert not any(find_keywords(t, st.filter_keywords) for t in demos)
    assert not any(s.kind in {st.biased, "delete"} for t in demos for s in t.steps)
    undone = [t for t in tasks if not t.completed(t.workspace())]
    assert len(undone) == 24  # no task is complete before any action
