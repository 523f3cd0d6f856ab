"""The agentic experiment's typed run context (task suites and per-role
values as attributes) keeps the lineage's suite counts (the mitigate run's vetting-score cache
is round-tripped in ``test_mitigate_records``, over the run it already makes)."""

from __future__ import annotations

from pathlib import Path

from steerlens.experiments.agentic import AgenticApiConfig
from steerlens.experiments.agentic_stages import AgenticRoles, AgenticRun, suites
from steerlens.pipeline.stage import StageClock


def test_task_suites_count_as_the_lineage_did(tmp_path: Path) -> None:
    for n_demo, want in ((2, {"pref": 6, "eval": 3, "safe": 6, "demo": 2}), (0, None)):
        cfg = AgenticApiConfig.quick(n_demo=n_demo)
        r = AgenticRun(cfg, tmp_path, None, None, False, print, StageClock(print))
        suites(r)
        counts = r.tasks.counts()
        if want is None:  # no demonstration tasks: no "demo" key (as the dict had none)
            assert counts == {"pref": 6, "eval": 3, "safe": 6}
        else:
            assert counts == want and list(counts) == ["pref", "eval", "safe", "demo"]
    roles = AgenticRoles(1, 2).map(lambda role, x: f"{role}={x}")
    assert roles.items() == [("teacher", "teacher=1"), ("control", "control=2")]
