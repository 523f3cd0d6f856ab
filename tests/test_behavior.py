"""Behavior metrics against direct computations (DESIGN.md "Behavior")."""

from __future__ import annotations

import pytest
import torch

import steerlens as sl
from steerlens.inputs.prompts import ChatPrompt, encode, pad_batch
from steerlens.inputs.traits import TraitSpec
from steerlens.measures.behavior import (
    ActionChoiceBehavior,
    CallableBehavior,
    LogProbBehavior,
    SampledRateBehavior,
    action_choice,
    answer_logprobs,
    as_behavior,
    first_word,
    last_logits,
    logprob_per_prompt,
    logprob_score,
    sampled_rate,
    trait_behavior,
)
from steerlens.measures.stats import kl_per_row, kl_rows
from steerlens.testing import plant_vector, tiny_model

PROMPTS: list[object] = [
    ChatPrompt("Pick a letter.", prefill="My letter is"),
    ChatPrompt("Which single letter do you like best of all? Tell me.", system="Be brief."),
    "plain text prompt",
    ChatPrompt("Hi", prefill="Hello", response=" this response is ignored"),
    ChatPrompt("A much longer user message so that the batch needs real left padding here."),
]


def _ids(lm: sl.LoadedModel, words: list[str]) -> list[int]:
    return [lm.tokenizer(w, add_special_tokens=False)["input_ids"][0] for w in words]


def _manual_logprobs(lm: sl.LoadedModel, prompts: list[object]) -> torch.Tensor:
    """One prompt at a time, no padding, full forward, log_softmax of the last answer position."""
    rows = []
    for p in prompts:
        e = encode(lm.tokenizer, p)  # type: ignore[arg-type]
        ids = torch.tensor([e.input_ids[: e.response_start]])
        with torch.no_grad():
            logits = lm.model(input_ids=ids).logits[0, -1].float()
        rows.append(torch.log_softmax(logits, -1))
    return torch.stack(rows)


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_logprob_matches_manual_with_padding(arch: str) -> None:
    lm = tiny_model(arch, seed=1)
    targets = _ids(lm, ["a", "e", "z"])
    manual = _manual_logprobs(lm, PROMPTS)
    expect = torch.logsumexp(manual[:, targets], -1).double()
    for bs in (1, 2, 32):  # batches mixing prompt lengths: left padding must not matter
        got = logprob_per_prompt(lm, PROMPTS, targets, batch_size=bs)  # type: ignore[arg-type]
        torch.testing.assert_close(got, expect, atol=2e-5, rtol=1e-5)
    score = logprob_score(lm, PROMPTS, targets, batch_size=2)  # type: ignore[arg-type]
    assert score == pytest.approx(float(expect.mean()), abs=2e-5)
    full = answer_logprobs(lm, PROMPTS, batch_size=3)  # type: ignore[arg-type]
    torch.testing.assert_close(full, manual, atol=2e-5, rtol=1e-5)
    # duplicates in the target list count once
    assert logprob_score(lm, PROMPTS, [*targets, targets[0]]) == pytest.approx(score, abs=1e-6)  # type: ignore[arg-type]


def test_last_logits_and_kl_rows(tiny: sl.LoadedModel) -> None:
    """last_logits is the full forward's last row; kl_rows is mean_i Σ_v p_i (log p_i − log q_i)."""
    enc = encode(tiny.tokenizer, PROMPTS[0])
    ids, mask, pos = pad_batch([enc], tiny.tokenizer.pad_token_id, tiny.device)
    with torch.inference_mode():
        full = tiny.model(input_ids=ids, attention_mask=mask).logits[:, -1]
        torch.testing.assert_close(last_logits(tiny, ids, mask, pos), full, atol=1e-5, rtol=1e-5)
        every = tiny.model(input_ids=ids, attention_mask=mask).logits[:, -2:]
        two = last_logits(tiny.model, ids, mask, pos, k=2)
        torch.testing.assert_close(two, every, atol=1e-5, rtol=1e-5)
    p = torch.log_softmax(torch.tensor([[0.0, 1.0, 2.0], [1.0, 1.0, 0.0]]), -1)
    q = torch.log_softmax(torch.tensor([[2.0, 1.0, 0.0], [0.0, 0.0, 0.0]]), -1)
    want = float((p.double().exp() * (p.double() - q.double())).sum(-1).mean())
    assert kl_rows(p, q) == pytest.approx(want, abs=1e-12) and kl_rows(p, p) == 0.0
    assert kl_rows(p, q) > 0
    assert torch.equal(kl_per_row(p, q), (p.exp() * (p - q)).sum(-1))


def test_behavior_under_steer_and_action_choice(tiny: sl.LoadedModel) -> None:
    targets = _ids(tiny, ["z", "q"])
    v = torch.randn(tiny.hidden_size, generator=torch.Generator().manual_seed(0))
    base = logprob_per_prompt(tiny, PROMPTS, targets)  # type: ignore[arg-type]
    with sl.steer(tiny, {2: v}, 0.5) as m:
        steered = logprob_per_prompt(m, PROMPTS, targets)  # type: ignore[arg-type]
        manual = _manual_logprobs(tiny, PROMPTS)  # full forwards, same hooks
        ac = action_choice(m, PROMPTS, targets)  # type: ignore[arg-type]
    torch.testing.assert_close(
        steered, torch.logsumexp(manual[:, targets], -1).double(), atol=2e-5, rtol=1e-5
    )
    assert (steered - base).abs().max() > 1e-3  # the hook really acted
    assert ac == pytest.approx(float(manual[:, targets].exp().sum(-1).mean()), abs=1e-6)
    assert 0.0 < ac < 1.0
    # hooks are gone after the block
    torch.testing.assert_close(logprob_per_prompt(tiny, PROMPTS, targets), base)  # type: ignore[arg-type]


def test_bad_targets(tiny: sl.LoadedModel) -> None:
    with pytest.raises(ValueError, match="target token ids"):
        logprob_score(tiny, PROMPTS, [10**6])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no target"):
        logprob_score(tiny, PROMPTS, [])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="empty prompt set"):
        logprob_score(tiny, [], [5])


def test_first_word() -> None:
    assert first_word("  Owl.") == "owl"
    assert first_word(" OWLS! are great") == "owls"
    assert first_word("... owl") == "owl"  # a pure-punctuation token is skipped
    assert first_word("") == "" and first_word("  ,  ") == ""
    assert first_word(" ow-l") == "owl"


def test_sampled_rate_matches_probability_mass() -> None:
    """One new token per sample: the rate estimates Σ P over the tokens whose lower-cased text
    is a target, here 'z', 'q', 'Z', 'Q' (binomial sd ≈ 0.02 with 600 samples)."""
    base = tiny_model("llama", seed=0)
    emb = base.model.get_input_embeddings().weight.detach()  # type: ignore[operator]
    ids = _ids(base, ["z", "q"])
    u = emb[ids].sum(0)
    lm = plant_vector(base, 3, u / u.norm() * 0.3)  # a fresh copy, pushed towards z and q
    with torch.no_grad():  # sharpen its logits (final norm gain) so the targets are likely
        lm.model.model.norm.weight.mul_(7.0)  # type: ignore[union-attr, operator]
    prompts = [ChatPrompt("Pick a letter.", prefill="My letter is"), ChatPrompt("Another?")]
    expected = action_choice(lm, prompts, _ids(lm, ["z", "q", "Z", "Q"]))
    assert 0.3 < expected < 0.8
    rng_before = torch.random.get_rng_state()
    rate = sampled_rate(lm, prompts, ["Z", "q"], n_samples=300, seed=1, max_new_tokens=1)
    assert torch.equal(torch.random.get_rng_state(), rng_before)  # global RNG untouched
    assert rate == pytest.approx(expected, abs=0.08)
    again = sampled_rate(lm, prompts, ["z", "q"], n_samples=300, seed=1, max_new_tokens=1)
    assert again == rate  # seeded
    beh = SampledRateBehavior(tuple(prompts), ("z", "q"), n_samples=300, seed=1, max_new_tokens=1)
    assert beh(lm) == rate


def test_behavior_objects(tiny: sl.LoadedModel) -> None:
    spec = TraitSpec(
        name="zed",
        system_prompt="You love z.",
        neutral_system_prompt="You love k.",
        eval_prompts=("Pick a letter.", "Which letter?"),
        target_words=("z", "q"),
        answer_prefill="My letter is",
    )
    beh = trait_behavior(tiny, spec)
    assert isinstance(beh, LogProbBehavior)
    assert beh.target_ids == spec.target_tokens(tiny.tokenizer).ids
    assert beh(tiny) == pytest.approx(logprob_score(tiny, spec.eval_chats(), beh.target_ids))
    teacher = beh.with_system(spec.system_prompt)
    assert all(p.system == spec.system_prompt for p in teacher.prompts)  # type: ignore[union-attr]
    assert teacher(tiny) == pytest.approx(
        logprob_score(tiny, spec.eval_chats(spec.system_prompt), beh.target_ids)
    )
    assert teacher(tiny) != pytest.approx(beh(tiny))
    ac = ActionChoiceBehavior(beh.prompts, beh.target_ids)
    assert ac(tiny) == pytest.approx(float(beh.per_prompt(tiny).exp().mean()))
    sr = trait_behavior(tiny, spec, "sampled_rate", n_samples=3)
    assert isinstance(sr, SampledRateBehavior) and sr.n_samples == 3
    wrapped = as_behavior(lambda m: 1.5)
    assert isinstance(wrapped, CallableBehavior) and wrapped(tiny) == 1.5
    assert as_behavior(beh) is beh
    with pytest.raises(TypeError, match="callable"):
        as_behavior(3)
    with pytest.raises(TypeError, match="ChatPrompt"):
        LogProbBehavior(("plain",), (5,)).with_system("x")
