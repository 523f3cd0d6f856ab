from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

import steerlens as sl
from steerlens.testing import tiny_model

# exactness tests pin float32 on every machine: "auto" would pick bfloat16 on AMX /
# AVX512-BF16 CPUs and bf16 GPUs (tests of "auto" itself delete this with monkeypatch)
os.environ["STEERLENS_PRECISION"] = "float32"


@pytest.fixture(scope="session")
def tiny() -> sl.LoadedModel:
    return tiny_model("llama", seed=0)


@pytest.fixture(scope="session")
def smol() -> sl.LoadedModel:
    """The embedded SmolLM2-135M-Instruct (converted once, then cached under ~/.cache)."""
    return sl.load_model("smollm2-135m-instruct", dtype="float32")  # exactness tests pin float32


@pytest.fixture(autouse=True)
def _threads_for_size(request: pytest.FixtureRequest) -> Iterator[None]:
    """Tiny-model tests run single-threaded (thread start-up costs more than the matmuls);
    integration tests on SmolLM2 keep torch's default."""
    if request.node.get_closest_marker("integration") is not None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="session")
def agentic_run(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], tuple[Any, Any, Path]]:
    """``agentic_run(setting)`` -> (config, result, run folder) of one quick agentic run on a
    tiny model (the smallest that has a LoRA layer), run once per setting for the whole
    session: the end-to-end test and the records' round trip read the same run."""
    from steerlens.experiments import get

    runs: dict[str, tuple[Any, Any, Path]] = {}
    root = tmp_path_factory.mktemp("agentic")

    def run(setting: str) -> tuple[Any, Any, Path]:
        if setting not in runs:
            if not (root / "model").exists():
                lm = tiny_model("llama", seed=3, n_layers=2, d=32)
                lm.model.save_pretrained(root / "model")
                lm.tokenizer.save_pretrained(root / "model")
            exp = get(f"agentic-{setting}")
            cfg = exp.make_config(
                quick=True,
                model=str(root / "model"),
                carry_layers=(1,),
                n_eval=1,
                n_eval_seeds=2,
                n_pref=2,
                n_train=3,
                max_steps=1,
                batch_size=8,
                screen_max=2,
                n_null=50,
                n_boot=50,
            )
            res = exp.execute(cfg, root / setting, progress=False, log=lambda s: None)
            runs[setting] = (cfg, res, root / setting)
        return runs[setting]

    return run
