from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

import steerlens as sl
from steerlens.testing import tiny_model


@pytest.fixture(scope="session")
def tiny() -> sl.LoadedModel:
    return tiny_model("llama", seed=0)


@pytest.fixture(scope="session")
def smol() -> sl.LoadedModel:
    """The embedded SmolLM2-135M-Instruct (converted once, then cached under ~/.cache)."""
    return sl.load_model("smollm2-135m-instruct")


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
