"""Core on the embedded SmolLM2-135M-Instruct (integration)."""

from __future__ import annotations

import pytest
import torch

import steerlens as sl
from steerlens.inputs.prompts import encode

pytestmark = pytest.mark.integration


def test_embedded_model_shape_and_template(smol: sl.LoadedModel) -> None:
    assert smol.n_layers == 30 and smol.hidden_size == 576
    rope = getattr(smol.model.config, "rope_parameters", None) or {}
    assert rope.get("rope_theta", getattr(smol.model.config, "rope_theta", None)) == 100000.0
    assert smol.tokenizer.padding_side == "left"
    e = encode(smol.tokenizer, sl.ChatPrompt("hi"))
    text = smol.tokenizer.decode(e.input_ids)
    assert "SmolLM" in text  # the template's default system prompt
    assert smol.tokenizer.decode(e.input_ids[e.prompt_start :]).startswith("hi")


def test_layer15_matches_hidden_states(smol: sl.LoadedModel) -> None:
    chats = [sl.ChatPrompt(u, system="You love owls.") for u in ("Name an animal.", "1, 2, 3, 4")]
    acts = sl.record_activations(smol, chats, [15], "last", keep_rows=True)
    assert acts.rows is not None
    for i, c in enumerate(chats):
        ids = torch.tensor([encode(smol.tokenizer, c).input_ids])
        with torch.no_grad():
            hs = smol.model(input_ids=ids, output_hidden_states=True).hidden_states
        torch.testing.assert_close(acts.rows[15][i], hs[16][0, -1], atol=1e-4, rtol=1e-4)


def test_owl_vs_neutral_vector_is_reliable(smol: sl.LoadedModel) -> None:
    from steerlens.inputs.numbers import number_prompts

    users = number_prompts(16, seed=0)
    pos = [
        sl.ChatPrompt(u, system="You love owls. You think about owls all the time.") for u in users
    ]
    neg = [
        sl.ChatPrompt(u, system="You love clarity. You think about clarity all the time.")
        for u in users
    ]
    vec = sl.extract_vector(smol, pos, neg, layers=[6, 15], method="mean", n_boot=10)
    for layer in (6, 15):
        assert vec.diagnostics["split_half"][layer]["mean"] > 0.9
        assert vec.diagnostics["agreement"][layer]["mean~pca"] > 0.9
    with sl.steer(smol, vec, alpha=0.0, layers=[15]) as m:
        a = m.generate([sl.ChatPrompt("Name an animal.")], max_new_tokens=4)
    assert a == smol.generate([sl.ChatPrompt("Name an animal.")], max_new_tokens=4)


def test_shared_prefix_matches_plain_path_on_smollm2(smol: sl.LoadedModel) -> None:
    """The owl/neutral system prompts and the template's default one are shared prefixes: the
    cached-prefix path equals the plain batched forward on the real model, for activations at
    every layer and for answer log-probabilities (plain and steered)."""
    from steerlens.inputs.numbers import number_prompts
    from steerlens.measures.behavior import answer_logprobs

    users = number_prompts(6, seed=3)
    prompts = [
        sl.ChatPrompt(u, system="You love owls. You think about owls all the time.") for u in users
    ] + [sl.ChatPrompt(u) for u in users]
    kw = {"batch_size": 6, "keep_rows": True}
    fast = sl.record_activations(smol, prompts, "all", "prompt", **kw)
    plain = sl.record_activations(smol, prompts, "all", "prompt", share_prefix=False, **kw)
    assert fast.meta["shared_prefix_tokens"] >= 10 * 20
    assert fast.rows is not None and plain.rows is not None
    for layer in fast.layers:
        scale = float(plain.rows[layer].norm(dim=1).mean())
        assert float((fast.rows[layer] - plain.rows[layer]).norm(dim=1).max()) < 1e-4 * scale
    v = plain.means[20] - plain.rows[20][6:].mean(0)
    for alpha in (0.0, 4.0):
        with sl.steer(smol, {20: v}, alpha):
            a = answer_logprobs(smol, prompts, batch_size=6)
            handle = smol.layout.blocks[0].register_forward_hook(lambda *_: None)
            try:
                b = answer_logprobs(smol, prompts, batch_size=6)  # a foreign hook: plain path
            finally:
                handle.remove()
        torch.testing.assert_close(a, b, atol=2e-3, rtol=1e-3)


def test_generated_positions_steer_changes_the_greedy_answer(smol: sl.LoadedModel) -> None:
    """The case transformers 5.24 silently broke: a random direction of norm 20 at layer 10,
    alpha 4, on generated tokens only, changes SmolLM2's greedy answer after its first token
    (the first token comes from the unsteered prompt pass, so it stays)."""
    g = torch.Generator().manual_seed(0)
    v = torch.randn(smol.hidden_size, generator=g)
    v = 20 * v / v.norm()
    prompt = [sl.ChatPrompt("Name your favorite animal in one word.")]
    plain_ids = smol.generate(prompt, max_new_tokens=10)
    with sl.steer(smol, {10: v}, 4.0, positions="generated") as m:
        gen = m.generate(prompt, max_new_tokens=10)
    with sl.steer(smol, {10: v}, 4.0, positions="prompt") as m:
        prompt_only = m.generate(prompt, max_new_tokens=10)
    assert gen != plain_ids
    first = lambda s: smol.tokenizer(s[0], add_special_tokens=False).input_ids[:1]
    assert first(gen) == first(plain_ids)  # the prompt pass was not edited
    assert prompt_only != gen
