from __future__ import annotations

import pytest

import steerlens as sl
from steerlens.testing import tiny_model


@pytest.fixture(scope="session")
def tiny() -> sl.LoadedModel:
    return tiny_model("llama", seed=0)


@pytest.fixture(scope="session")
def smol() -> sl.LoadedModel:
    """The embedded SmolLM2-135M-Instruct (converted once, then cached under ~/.cache)."""
    return sl.load_model("smollm2-135m-instruct")
