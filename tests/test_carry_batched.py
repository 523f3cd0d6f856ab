"""Batched carry-test conditions (steerlens.carry.batched) equal the unbatched steer() loop."""

from __future__ import annotations

import pytest
import torch

import steerlens as sl
from steerlens.carry.batched import LayerConditions, can_batch_layer
from steerlens.measures.behavior import answer_logprobs
from steerlens.runtime.backends import backend_for
from steerlens.runtime.backends.module import ModuleBackend
from steerlens.runtime.backends.protocol import Backend, NoSplitForward, SplitForward
from steerlens.runtime.backends.transformer_lens import TransformerLensBackend
from steerlens.runtime.intervene import steer
from steerlens.testing import tiny_model

SYSTEM = "You are a careful assistant who answers in one word."
QUESTIONS = ["Name an animal.", "Your favourite bird?", "Pick a colour.", "One word: sky?", "Hi"]


def _prompts(system: bool = True) -> list[sl.ChatPrompt]:
    return [sl.ChatPrompt(user=q, system=SYSTEM if system else None) for q in QUESTIONS]


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
@pytest.mark.parametrize("system", [True, False])
@pytest.mark.parametrize("edit", ["add", "project_out"])
def test_batched_conditions_equal_the_steer_loop(arch: str, system: bool, edit: str) -> None:
    lm = tiny_model(arch, n_layers=4)
    prompts = _prompts(system)
    layer = 1
    dirs = torch.randn(5, lm.hidden_size, generator=torch.Generator().manual_seed(3)) * 2.0
    # a small max_tokens forces several condition groups per forward batch
    cond = LayerConditions(lm, prompts, layer, batch_size=2, max_tokens=40)
    got = dict(cond.logprobs(edit, dirs, alpha=1.5))  # type: ignore[arg-type]
    assert sorted(got) == list(range(5))
    for k in range(5):
        alpha = 1.5 if edit == "add" else 1.0
        with steer(lm, {layer: dirs[k]}, alpha, mode=edit):  # type: ignore[arg-type]
            ref = answer_logprobs(lm, prompts, batch_size=2)
        assert got[k].shape == ref.shape
        torch.testing.assert_close(got[k], ref, rtol=1e-4, atol=1e-4)
    # the edit changes something: conditions differ from each other and from the base
    base = answer_logprobs(lm, prompts)
    assert (got[0] - base).abs().max() > 1e-3
    assert (got[0] - got[1]).abs().max() > 1e-3


@pytest.mark.parametrize("system", [True, False])
@pytest.mark.parametrize("edit", ["add", "project_out"])
def test_joint_edits_over_several_blocks_equal_the_steer_loop(system: bool, edit: str) -> None:
    """Necessity's joint ablation: row k edited after blocks 0, 2 and 3 at once, batched from
    block 0 up, equals one multi-layer steer() per row."""
    lm = tiny_model("llama", n_layers=5)
    prompts = _prompts(system)
    gen = torch.Generator().manual_seed(5)
    dirs = {la: torch.randn(4, lm.hidden_size, generator=gen) for la in (0, 2, 3)}
    cond = LayerConditions(lm, prompts, 0, batch_size=2, max_tokens=60)
    above = {2: dirs[2], 3: dirs[3]}
    got = dict(cond.logprobs(edit, dirs[0], alpha=1.0, above=above))  # type: ignore[arg-type]
    only_first = dict(cond.logprobs(edit, dirs[0], alpha=1.0))  # type: ignore[arg-type]
    for k in range(4):
        with steer(lm, {la: d[k] for la, d in dirs.items()}, 1.0, mode=edit):  # type: ignore[arg-type]
            ref = answer_logprobs(lm, prompts, batch_size=2)
        torch.testing.assert_close(got[k], ref, rtol=1e-4, atol=1e-4)
        # the edits above the first block are not a no-op
        assert (got[k] - only_first[k]).abs().max() > 1e-3
    with pytest.raises(ValueError, match="above must map layers > 0"):
        next(cond.logprobs(edit, dirs[0], above={0: dirs[2]}))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"\(4, d\) directions"):
        next(cond.logprobs(edit, dirs[0], above={2: dirs[2][:3]}))  # type: ignore[arg-type]


def test_batched_conditions_refuse_what_they_cannot_reproduce() -> None:
    lm = tiny_model("gpt2", n_layers=2)
    assert not can_batch_layer(lm, 0)
    with pytest.raises(ValueError, match="loop over conditions"):
        LayerConditions(lm, _prompts(), 0)
    llama = tiny_model("llama", n_layers=2)
    handle = llama.model.model.layers[0].register_forward_hook(lambda *a: None)
    try:
        assert not can_batch_layer(llama, 0)  # a user's hook would be skipped
    finally:
        handle.remove()
    assert can_batch_layer(llama, 0)
    cond = LayerConditions(llama, _prompts(), 0)
    with pytest.raises(ValueError, match=r"directions must be \(K, 64\)"):
        next(cond.logprobs("add", torch.zeros(2, 3)))
    with pytest.raises(ValueError, match="edit must be"):
        next(cond.logprobs("scale", torch.zeros(1, 64)))  # type: ignore[arg-type]


def test_the_split_forward_is_a_backend_capability() -> None:
    """LayerConditions runs through Backend.split_after: the HF backend offers it on the Llama
    family with no hooks; other architectures and the other runtimes answer None (the carry
    test then loops under steer)."""
    llama = tiny_model("llama", n_layers=2)
    backend = backend_for(llama)
    assert isinstance(backend, Backend)
    split = backend.split_after(0)
    assert isinstance(split, SplitForward) and split.layer == 0
    assert backend_for(tiny_model("gpt2", n_layers=2)).split_after(0) is None
    for runtime in (ModuleBackend, TransformerLensBackend):
        assert issubclass(runtime, NoSplitForward)
    assert NoSplitForward().split_after(0) is None
