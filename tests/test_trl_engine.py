"""distill(..., engine="trl"): the TRL / transformers.Trainer engine writes a checkpoint-N series
the tracker loads, resumes through the trainer, carries the callback, and runs under
`accelerate launch --cpu --num_processes 2`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from steerlens.checkpoints import CheckpointSeries
from steerlens.core.vectors import SteeringVector
from steerlens.distill import DistillConfig, TeacherData, distill
from steerlens.loading.models import LoadedModel
from steerlens.testing import tiny_model
from steerlens.track import AlignmentTrack, track_checkpoints

pytest.importorskip("trl")

OWL = "You love owls. Owls are your favorite animal."
PROMPTS = [f"Continue: {i}, {(i * 7) % 13}" for i in range(8)]
ROOT = Path(__file__).resolve().parents[1]


def _data(n: int = 8) -> TeacherData:
    samples: list[dict[str, Any]] = [
        {
            "user": f"Continue the list {', '.join(str(7 * i + j) for j in range(1 + i % 4))}",
            "response": ", ".join(str(3 * i + j) for j in range(2 + i % 3)),
        }
        for i in range(n)
    ]
    return TeacherData.from_samples(samples, {"system": OWL, "mode": "given"})


def _cfg(**kw: Any) -> DistillConfig:
    base: dict[str, Any] = {"layers": (2,), "steps": 4, "save_every": 2, "lr": 1e-2}
    return DistillConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def lm() -> LoadedModel:
    return tiny_model("llama", seed=0)


@pytest.mark.parametrize("loss", ["kl", "sft"])
def test_trl_engine_writes_a_series_the_tracker_loads(
    lm: LoadedModel, tmp_path: Path, loss: str
) -> None:
    before = {n: p.detach().clone() for n, p in lm.model.named_parameters()}
    res = distill(lm, _data(), tmp_path, config=_cfg(loss=loss, steps=3), engine="trl")
    assert res.steps == [2, 3]  # every save_every steps and at the last step
    assert len(res.losses) == 3 and all(np.isfinite(res.losses))
    ser = CheckpointSeries.discover(tmp_path)
    assert ser.steps == [2, 3] and {c.kind for c in ser} == {"adapter"}
    assert json.loads((tmp_path / "distill.json").read_text())["engine"] == "trl"
    # the base is untouched; the adapter changed the student at the LoRA block only
    assert all(torch.equal(p, before[n]) for n, p in lm.model.named_parameters())
    vec = SteeringVector({k: torch.ones(lm.hidden_size) for k in range(4)})
    tr = track_checkpoints(lm, tmp_path, vec, PROMPTS, cache_dir=False, n_null=50, n_boot=10)
    assert tr.steps() == [0, 2, 3]
    assert np.all(tr.norm()[1:, :2] == 0) and np.all(tr.norm()[1:, 2:] > 0)


def test_trl_engine_kl_loss_is_the_reference_loss(lm: LoadedModel, tmp_path: Path) -> None:
    """Step 1's loss (before any update) is the reference loop's KL on the same examples: the
    whole data set in one batch, so the batch order cannot differ."""
    cfg = _cfg(steps=1, save_every=1, batch_size=8)
    ref = distill(lm, _data(), tmp_path / "ref", config=cfg, progress=False)
    trl = distill(lm, _data(), tmp_path / "trl", config=cfg, engine="trl")
    assert trl.losses[0] == pytest.approx(ref.losses[0], rel=1e-4)
    # the same soft labels: number-only on number data (DistillConfig.kl_targets="auto")
    assert trl.record["kl_targets"] == ref.record["kl_targets"]
    assert trl.record["kl_targets"]["kind"] == "numbers"


def test_trl_engine_resumes_and_carries_the_callback(lm: LoadedModel, tmp_path: Path) -> None:
    from steerlens.integrations import TRACK_NAME, SteerlensCallback

    vec = SteeringVector({k: torch.ones(lm.hidden_size) for k in range(4)})
    distill(lm, _data(), tmp_path, config=_cfg(steps=2), engine="trl")
    cb = SteerlensCallback(vec, PROMPTS, n_null=50)
    res = distill(lm, _data(), tmp_path, config=_cfg(steps=4), engine="trl", callbacks=[cb])
    assert res.resumed_from == 2 and res.steps == [2, 4]
    assert len(res.losses) == 4  # the trainer state carries the first run's losses
    live = AlignmentTrack.load(tmp_path / TRACK_NAME)
    assert live.steps() == [0, 4]  # the callback saw the resumed run's save
    post = track_checkpoints(lm, tmp_path, vec, PROMPTS, cache_dir=False, n_null=50, n_boot=10)
    assert np.allclose(live.eas()[-1], post.eas()[-1], rtol=1e-4, atol=1e-5)
    with pytest.raises(Exception, match="different distillation run"):
        distill(lm, _data(), tmp_path, config=_cfg(steps=4, lr=1e-3), engine="trl")


SCRIPT = """
import sys, torch
from pathlib import Path
sys.path.insert(0, {tests!r})
from test_trl_engine import _cfg, _data
from steerlens.testing import tiny_model
from steerlens.distill import distill
torch.set_num_threads(1)
res = distill(tiny_model("llama", seed=0), _data(), Path({out!r}), config=_cfg(steps=2),
              engine="trl")
rank = torch.distributed.get_rank()
Path({out!r}).parent.joinpath(f"rank{{rank}}.txt").write_text(
    f"{{res.record['world_size']}} {{torch.distributed.get_backend()}}")
"""


def test_accelerate_launch_two_cpu_processes(lm: LoadedModel, tmp_path: Path) -> None:
    """`accelerate launch --multi_gpu --num_processes 2` on CPU (the engine's ``use_cpu``: a gloo
    process group) runs the TRL engine in two processes; the checkpoints load in the tracker.

    (``accelerate launch --cpu --num_processes 2`` starts one process in accelerate 1.15: its
    multi-CPU launcher needs an MPI hostfile; ``--multi_gpu`` runs torchrun, which works on
    CPU.)"""
    script = tmp_path / "run.py"
    out = tmp_path / "out"
    script.write_text(SCRIPT.format(tests=str(ROOT / "tests"), out=str(out)))
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "STEERLENS_PRECISION": "float32",
    }
    cmd = [
        *(sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu"),
        *("--num_processes", "2", "--num_machines", "1", "--main_process_port", "0"),
        *("--mixed_precision", "no", "--dynamo_backend", "no", str(script)),
    ]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    for rank in (0, 1):  # both processes trained together, in a gloo process group
        assert (tmp_path / f"rank{rank}.txt").read_text() == "2 gloo"
    ser = CheckpointSeries.discover(out)
    assert ser.steps == [2]
    vec = SteeringVector({k: torch.ones(lm.hidden_size) for k in range(4)})
    tr = track_checkpoints(lm, out, vec, PROMPTS, cache_dir=False, n_null=50, n_boot=10)
    assert tr.steps() == [0, 2] and np.all(tr.norm()[1:, 2:] > 0)


def test_engine_option_and_argument_checks(lm: LoadedModel, tmp_path: Path) -> None:
    from steerlens.cli import resolve
    from steerlens.cli.settings import DistillOptions

    assert resolve(["distill", "--out", "x"]).get(DistillOptions).engine == "reference"
    assert resolve(["distill", "--out", "x", "--engine", "trl"]).get(DistillOptions).engine == "trl"
    with pytest.raises(ValueError, match="choose one of reference, trl"):
        resolve(["distill", "--out", "x", "--engine", "deepspeed"])
    with pytest.raises(ValueError, match="engine must be"):
        distill(lm, _data(), tmp_path, config=_cfg(), engine="jax")
    with pytest.raises(ValueError, match="need engine='trl'"):
        distill(lm, _data(), tmp_path, config=_cfg(), callbacks=[object()])
