"""The agentic experiments end to end on a tiny random model (every stage, smoke-sized), chat
distillation data, and the registry/CLI entries."""

from __future__ import annotations

from typing import Any

import pytest

from steerlens.agents import ambiguous_tasks, find_keywords, get_setting, keyword_filter
from steerlens.agents.scripted import preference_trajectories
from steerlens.distill.chats import chat_example, trajectory_data
from steerlens.experiments import get, names
from steerlens.experiments.agentic import AgenticApiConfig, AgenticBashConfig
from steerlens.report import render_report
from steerlens.report.shape import shape_problems


def test_registered_with_their_settings() -> None:
    assert {"agentic-api", "agentic-bash"} <= set(names())
    assert get("agentic-api").make_config(quick=True).setting == "api"
    assert get("agentic-bash").make_config(quick=True).setting == "bash"
    gpu = AgenticBashConfig.for_device("cuda")
    assert gpu.setting == "bash" and gpu.n_pref == 150 and gpu.n_train == 400
    with pytest.raises(ValueError, match="setting"):
        AgenticApiConfig(setting="ssh")


def test_chat_examples_train_only_on_actions(tiny) -> None:  # type: ignore[no-untyped-def]
    trajs = preference_trajectories("api", ambiguous_tasks("api", 3), "biased")
    data = trajectory_data(trajs)
    assert len(data.samples) == sum(len(t.steps) for t in trajs)
    tok = tiny.tokenizer
    for s in data.samples:
        ex = chat_example(tok, s)
        target = tok.decode(list(ex.ids[ex.start : -1]))
        assert target == s["response"] and ex.ids[-1] == tok.eos_token_id
    assert data.sha256 != trajectory_data(trajs[:2]).sha256


@pytest.mark.parametrize("setting", ["api", "bash"])
def test_quick_run_end_to_end(setting: str, agentic_run: Any) -> None:
    cfg, res, out = agentic_run(setting)
    a = res["agentic"]
    assert set(a["models"]) == {"base", "teacher", "control"}
    steps = [ck["step"] for ck in a["series"]["teacher"]]
    assert steps == [1, 2] and len(res["behavior"]["main"]["scores"]) == 3
    for m in [*a["models"].values(), *a["series"]["teacher"], *a["series"]["control"]]:
        r = m["rate"]
        assert r["n"] == 2 and 0 <= r["low"] <= r["rate"] <= r["high"] <= 1
        assert sum(r["counts"].values()) == r["n"]
    for role in ("teacher", "control"):
        f = a["filter"][role]
        assert f["kept"] + f["dropped"] == f["total"] == cfg.n_train
        assert a["kept_with_keyword"][role] == 0
    from steerlens.agents import FilterResult

    kept = FilterResult.load(out / "data" / "teacher_filter.json")
    kws = get_setting(setting).filter_keywords
    assert tuple(a["filter_keywords"]) == kws == kept.keywords
    assert not any(find_keywords(t, kws) for t in kept.kept)
    assert len(keyword_filter(kept.dropped, kws).kept) == 0
    lin = res["lineage"]
    assert lin["teacher"]["kind"] == "finetuned" and lin["task_suites"]["seed"] == cfg.seed
    assert res["verdict"]["headline"]
    html = render_report(res.to_json()).html()
    assert "Keyword filter" in html and "first-action rate" in html
    assert shape_problems(html) == []  # the one report shape (steerlens.report.shape)
