"""The agentic experiment's typed run context (task suites and per-role
values as attributes) keeps the lineage's suite counts, and the mitigate run's vetting-score
cache, read through :class:`MitigateAgenticVetScores`, is written back key for key."""

from __future__ import annotations

import json
import math
from pathlib import Path

from steerlens.common import read_json
from steerlens.experiments import get
from steerlens.experiments.agentic import AgenticApiConfig
from steerlens.experiments.agentic_stages import AgenticRoles, AgenticRun, suites
from steerlens.experiments.mitigate import MitigateConfig
from steerlens.experiments.mitigate_agentic_data import MitigateAgenticVetScores
from steerlens.pipeline.stage import StageClock
from steerlens.testing import tiny_model


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


def test_vet_scores_cache_round_trips(tmp_path: Path) -> None:
    lm = tiny_model("llama", seed=3)
    d = tmp_path / "model"
    lm.model.config.max_position_embeddings = 2048  # chats with a tiny char-level tokenizer
    lm.model.save_pretrained(d)
    lm.tokenizer.save_pretrained(d)
    small = {"n_eval": 1, "n_pref": 3, "n_train": 4, "steps": 1, "save_every": 1}
    cfg = MitigateConfig.quick(
        setting="agentic-api",
        model=str(d),
        device="cpu",
        carry_layers=(2,),
        vet_fracs=(0.25,),
        reg_lambdas=(10.0,),
        n_null=50,
        n_boot=50,
        none_replicates=0,
        extra={"agentic": small},
    )
    res = get("mitigate").execute(cfg, tmp_path / "ag", progress=False, log=lambda s: None)
    raw = read_json(tmp_path / "ag" / "mitigate" / "vet_scores.json")
    v = MitigateAgenticVetScores.from_json(raw)
    assert v.layer == res["mitigate"]["layer"] == 2 and len(v.scores) == 4
    assert all(x is None or math.isfinite(x) for x in v.scores)
    assert json.dumps(v.to_json()) == json.dumps(raw)
    # the lineage-free mitigate results still carry the keyword filter of the teacher
    assert res["mitigate"]["filter"]["total"] == 4
