from __future__ import annotations

import os
from collections.abc import Iterator

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
