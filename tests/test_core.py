"""Core: recording, extraction, vectors, interventions, loading, errors (tiny models)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import steerlens as sl
from steerlens.inputs.prompts import encode, pad_batch
from steerlens.loading.embedded import conversion_ok
from steerlens.loading.models import private_tokenizer
from steerlens.runtime.activations import truncated_forward
from steerlens.testing import tiny_model, tiny_tokenizer

PROMPTS = ["hello", "a much longer prompt about owls and numbers", "x y z", "12, 34, 56"]
CHATS = [
    sl.ChatPrompt("Name an animal.", system="You love owls.", prefill="My favorite is"),
    sl.ChatPrompt("Continue: 1, 2, 3", system="You love clarity."),
    sl.ChatPrompt("hi"),
]


def _hidden(
    lm: sl.LoadedModel, prompt: str | sl.ChatPrompt
) -> tuple[tuple[torch.Tensor, ...], int, int]:
    """output_hidden_states of one unpadded prompt, and its prompt/response starts."""
    e = encode(lm.tokenizer, prompt)
    ids = torch.tensor([e.input_ids])
    with torch.no_grad():
        out = lm.model(input_ids=ids, output_hidden_states=True)
    return out.hidden_states, e.prompt_start, e.response_start


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gpt_neox", "qwen2"])
@pytest.mark.parametrize("position", ["last", "all"])
def test_means_match_output_hidden_states(arch: str, position: str) -> None:
    lm = tiny_model(arch, seed=1)
    layers = [0, 2]  # not the last block: HF normalises the last hidden state
    acts = sl.record_activations(lm, PROMPTS, layers, position, batch_size=3, keep_rows=True)
    assert acts.rows is not None
    for i, p in enumerate(PROMPTS):
        hs, _, _ = _hidden(lm, p)
        for layer in layers:
            h = hs[layer + 1][0]
            want = h[-1] if position == "last" else h.mean(0)
            torch.testing.assert_close(acts.rows[layer][i], want, atol=1e-5, rtol=1e-5)
    for layer in layers:
        torch.testing.assert_close(
            acts.means[layer], acts.rows[layer].mean(0), atol=1e-6, rtol=1e-6
        )


def test_prompt_position_skips_system_and_matches_direct(tiny: sl.LoadedModel) -> None:
    acts = sl.record_activations(tiny, CHATS, [1], "prompt", batch_size=2, keep_rows=True)
    assert acts.rows is not None
    for i, c in enumerate(CHATS):
        hs, p0, r0 = _hidden(tiny, c)
        ids = encode(tiny.tokenizer, c).input_ids
        if c.system is not None:
            assert c.system not in tiny.tokenizer.decode(ids[p0:r0])
        assert tiny.tokenizer.decode(ids[p0:r0]).startswith(c.user)
        torch.testing.assert_close(acts.rows[1][i], hs[2][0, p0:r0].mean(0), atol=1e-5, rtol=1e-5)


def test_response_position(tiny: sl.LoadedModel) -> None:
    p = sl.ChatPrompt("Numbers?", response="1, 2, 3")
    e = encode(tiny.tokenizer, p)
    assert tiny.tokenizer.decode(e.input_ids[e.response_start :]) == "1, 2, 3"
    acts = sl.record_activations(tiny, [p], [0], "response", keep_rows=True)
    hs, _, r0 = _hidden(tiny, p)
    assert acts.rows is not None
    torch.testing.assert_close(acts.rows[0][0], hs[1][0, r0:].mean(0), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="no response tokens"):
        sl.record_activations(tiny, [sl.ChatPrompt("Numbers?")], [0], "response")


def test_padding_does_not_change_activations(tiny: sl.LoadedModel) -> None:
    alone = sl.record_activations(tiny, ["x y z"], "all", "all", keep_rows=True)
    mixed = sl.record_activations(tiny, PROMPTS, "all", "all", batch_size=4, keep_rows=True)
    assert alone.rows is not None and mixed.rows is not None
    for layer in alone.layers:
        torch.testing.assert_close(mixed.rows[layer][2], alone.rows[layer][0], atol=1e-5, rtol=1e-5)


def test_batch_size_and_order_invariance(tiny: sl.LoadedModel) -> None:
    a = sl.record_activations(tiny, PROMPTS, [1, 3], "all", batch_size=1)
    b = sl.record_activations(tiny, PROMPTS[::-1], [1, 3], "all", batch_size=4)
    for layer in (1, 3):
        torch.testing.assert_close(a.means[layer], b.means[layer], atol=1e-6, rtol=1e-6)


def test_early_stop_identical_and_skips_deeper_blocks(tiny: sl.LoadedModel) -> None:
    calls: list[int] = []
    handles = [
        blk.register_forward_hook(lambda *_, i=i: calls.append(i))
        for i, blk in enumerate(tiny.layout.blocks)
    ]
    head_calls: list[int] = []
    handles.append(tiny.model.lm_head.register_forward_hook(lambda *_: head_calls.append(1)))
    try:
        shallow = sl.record_activations(tiny, PROMPTS, [1], "all", batch_size=4)
        assert max(calls) == 1 and not head_calls
        calls.clear()
        deep = sl.record_activations(tiny, PROMPTS, [1, 3], "all", batch_size=4)
        assert max(calls) == 3 and not head_calls
    finally:
        for h in handles:
            h.remove()
    torch.testing.assert_close(shallow.means[1], deep.means[1], atol=0, rtol=0)


def test_last_layer_is_block_output_not_final_norm(tiny: sl.LoadedModel) -> None:
    last = tiny.n_layers - 1
    acts = sl.record_activations(tiny, ["hello"], [last], "last")
    hs, _, _ = _hidden(tiny, "hello")
    normed = tiny.model.model.norm(acts.means[last])
    torch.testing.assert_close(normed, hs[-1][0, -1], atol=1e-5, rtol=1e-5)


def test_user_tokenizer_untouched() -> None:
    tok = tiny_tokenizer()
    tok.padding_side = "right"
    lm = sl.wrap(tiny_model("llama").model, tok)
    assert tok.padding_side == "right" and lm.tokenizer.padding_side == "left"
    assert lm.tokenizer is not tok


# ------------------------------------------------------------------------- extraction


def _paired_rows(
    seed: int = 0, n: int = 400, d: int = 32
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(d, generator=g)
    u = u / u.norm()
    neg = torch.randn(n, d, generator=g)
    pos = neg + 2.0 * u + 0.3 * torch.randn(n, d, generator=g)
    return pos, neg, u


@pytest.mark.parametrize("method", [sl.mean_diff, sl.pca_diff, sl.logistic_probe])
def test_methods_recover_planted_direction(method: object) -> None:
    pos, neg, u = _paired_rows()
    v = method(pos, neg)  # type: ignore[operator]
    assert sl.cosine(v, u) > 0.95
    # all methods are scaled to activation units: ≈ the planted shift of 2.0 along u
    assert 1.6 < float(v @ u) < 2.4


def test_pca_sign_follows_mean_projection() -> None:
    pos, neg, u = _paired_rows(seed=3)
    assert float(sl.pca_diff(pos, neg) @ u) > 0
    assert float(sl.pca_diff(neg, pos) @ u) < 0


def test_extract_vector_provenance_and_diagnostics(tiny: sl.LoadedModel) -> None:
    pos = [f"I love owls {i}" for i in range(8)]
    neg = [f"I love cats {i}" for i in range(8)]
    vec = sl.extract_vector(tiny, pos, neg, layers=[1, 2], method="mean", n_boot=5)
    acts_p = sl.record_activations(tiny, pos, [1, 2])
    acts_n = sl.record_activations(tiny, neg, [1, 2])
    torch.testing.assert_close(vec[1], acts_p[1] - acts_n[1], atol=1e-5, rtol=1e-5)
    assert vec.meta["model_fingerprint"] == tiny.fingerprint
    assert vec.meta["site"] == "blocks.{layer}.hook_resid_post"
    assert vec.meta["position"] == "last" and vec.meta["method"] == "mean"
    assert vec.meta["pos_prompts_hash"] != vec.meta["neg_prompts_hash"]
    sh = vec.diagnostics["split_half"][1]
    assert -1.0 <= sh["lo"] <= sh["mean"] <= sh["hi"] <= 1.0
    assert set(vec.diagnostics["agreement"][1]) == {"mean~pca", "mean~probe", "pca~probe"}
    again = sl.extract_vector(tiny, pos, neg, layers=[1, 2], method="mean", n_boot=5)
    assert again.diagnostics == vec.diagnostics  # seeded


def test_vector_save_load_roundtrip(tmp_path: Path) -> None:
    g = torch.Generator().manual_seed(0)
    vec = sl.SteeringVector(
        {3: torch.randn(16, generator=g), 7: torch.randn(16, generator=g)},
        {"model": "m", "method": "mean", "seed": 1},
        {"split_half": {3: {"mean": 0.9}}},
    )
    path = vec.save(tmp_path / "v.safetensors")
    back = sl.SteeringVector.load(path)
    assert back.layers == [3, 7]
    for k in back.layers:
        assert torch.equal(back[k], vec[k])
    assert back.meta["model"] == "m" and back.meta["steerlens_version"] == sl.__version__
    assert back.diagnostics["split_half"]["3"]["mean"] == 0.9
    (tmp_path / "bad.safetensors").write_bytes(b"not a tensor file")
    with pytest.raises(ValueError, match="not a readable safetensors"):
        sl.SteeringVector.load(tmp_path / "bad.safetensors")


def test_vector_arithmetic() -> None:
    a = sl.SteeringVector({0: torch.tensor([3.0, 4.0]), 1: torch.tensor([1.0, 0.0])})
    b = sl.SteeringVector({0: torch.tensor([1.0, 0.0])})
    assert torch.equal((a - b)[0], torch.tensor([2.0, 4.0]))
    assert (a + b).layers == [0]
    assert torch.equal((2 * a)[1], torch.tensor([2.0, 0.0]))
    assert a.normalize().norms()[0] == pytest.approx(1.0)
    assert a.cosine(b)[0] == pytest.approx(0.6)


# ------------------------------------------------------------------------ interventions


def _logits(lm: sl.LoadedModel, prompts: list[str]) -> torch.Tensor:
    encs = [encode(lm.tokenizer, p) for p in prompts]
    ids, mask, pos = pad_batch(encs, lm.tokenizer.pad_token_id)
    with torch.no_grad():
        return lm.model(input_ids=ids, attention_mask=mask, position_ids=pos).logits


def test_alpha_zero_is_noop_and_alpha_changes_logits(tiny: sl.LoadedModel) -> None:
    v = torch.randn(tiny.hidden_size, generator=torch.Generator().manual_seed(0))
    base = _logits(tiny, PROMPTS)
    with sl.steer(tiny, v, alpha=0.0, layers=[1]):
        torch.testing.assert_close(_logits(tiny, PROMPTS), base, atol=0, rtol=0)
    with sl.steer(tiny, v, alpha=4.0, layers=[1]):
        assert (_logits(tiny, PROMPTS) - base).abs().max() > 1e-3
    torch.testing.assert_close(_logits(tiny, PROMPTS), base, atol=0, rtol=0)


def test_add_shifts_recorded_activation_exactly(tiny: sl.LoadedModel) -> None:
    v = torch.randn(tiny.hidden_size, generator=torch.Generator().manual_seed(1))
    plain = sl.record_activations(tiny, PROMPTS, [1], "all")
    with sl.steer(tiny, v, alpha=2.0, layers=[1]):
        steered = sl.record_activations(tiny, PROMPTS, [1], "all")
    torch.testing.assert_close(steered[1] - plain[1], 2.0 * v, atol=1e-5, rtol=1e-5)


def test_project_out_leaves_zero_component(tiny: sl.LoadedModel) -> None:
    v = torch.randn(tiny.hidden_size, generator=torch.Generator().manual_seed(2))
    with sl.ablate(tiny, v, layers=[2]):
        acts = sl.record_activations(tiny, PROMPTS, [2], "all", keep_rows=True)
    assert acts.rows is not None
    assert (acts.rows[2] @ (v / v.norm())).abs().max() < 1e-5
    plain = sl.record_activations(tiny, PROMPTS, [2], "all", keep_rows=True)
    assert plain.rows is not None and (plain.rows[2] @ (v / v.norm())).abs().max() > 1e-3


def test_replace_with_base_takes_base_component(tiny: sl.LoadedModel) -> None:
    from steerlens.testing import plant_vector

    g = torch.Generator().manual_seed(3)
    v = torch.randn(tiny.hidden_size, generator=g)
    student = plant_vector(tiny, 1, 3.0 * v)
    u = v / v.norm()
    base_rows = sl.record_activations(tiny, PROMPTS, [1], "all", keep_rows=True).rows
    st_rows = sl.record_activations(student, PROMPTS, [1], "all", keep_rows=True).rows
    with sl.steer(student, v, layers=[1], mode="replace", base=tiny):
        rep = sl.record_activations(student, PROMPTS, [1], "all", keep_rows=True).rows
    assert base_rows is not None and st_rows is not None and rep is not None
    # the component along v̂ is the base's; the orthogonal part stays the student's
    torch.testing.assert_close(rep[1] @ u, base_rows[1] @ u, atol=1e-4, rtol=1e-4)
    orth = lambda h: h - (h @ u)[:, None] * u
    torch.testing.assert_close(orth(rep[1]), orth(st_rows[1]), atol=1e-4, rtol=1e-4)


def test_steer_during_generate_with_kv_cache(tiny: sl.LoadedModel) -> None:
    v = torch.randn(tiny.hidden_size, generator=torch.Generator().manual_seed(4)) * 3
    prompts = [sl.ChatPrompt("hi there"), sl.ChatPrompt("a longer message here")]
    plain = tiny.generate(prompts, max_new_tokens=6)
    with sl.steer(tiny, v, alpha=1.0, layers=[1]) as m:
        cached = m.generate(prompts, max_new_tokens=6, use_cache=True)
        uncached = m.generate(prompts, max_new_tokens=6, use_cache=False)
    assert cached == uncached
    assert cached != plain
    with sl.steer(tiny, v, alpha=1.0, layers=[1], positions="generated") as m:
        gen_only = m.generate(prompts, max_new_tokens=6)
        base_logits = _logits(tiny, ["hello"])
    # a plain forward is a prompt pass: not steered in 'generated' mode
    assert torch.equal(base_logits, _logits(tiny, ["hello"]))
    assert gen_only != cached or gen_only != plain


def test_hooks_removed_after_exception(tiny: sl.LoadedModel) -> None:
    v = torch.ones(tiny.hidden_size)
    before = [len(b._forward_hooks) for b in tiny.layout.blocks]
    with pytest.raises(RuntimeError, match="boom"), sl.steer(tiny, v, layers=[0, 1]):
        raise RuntimeError("boom")
    assert [len(b._forward_hooks) for b in tiny.layout.blocks] == before
    assert len(tiny.model._forward_pre_hooks) == 0


# ----------------------------------------------------------------------------- errors


def test_clear_errors(tiny: sl.LoadedModel) -> None:
    with pytest.raises(IndexError, match=r"valid layers are 0\.\.3"):
        sl.record_activations(tiny, PROMPTS, [4])
    with pytest.raises(ValueError, match="empty prompt set"):
        sl.record_activations(tiny, [], [0])
    with pytest.raises(ValueError, match="empty prompt string"):
        sl.record_activations(tiny, [""], [0])
    with (
        pytest.raises(ValueError, match="hidden size mismatch"),
        sl.steer(tiny, torch.ones(7), layers=[0]),
    ):
        pass
    with (
        pytest.raises(KeyError, match="no direction at layers"),
        sl.steer(tiny, sl.SteeringVector({0: torch.ones(64)}), layers=[2]),
    ):
        pass
    no_template = sl.wrap(tiny.model, tiny_tokenizer(chat_template=None))
    with pytest.raises(ValueError, match="no chat template"):
        sl.record_activations(no_template, [sl.ChatPrompt("hi")], [0])
    with pytest.raises(ValueError, match="unknown position"):
        sl.record_activations(tiny, PROMPTS, [0], "middle")


def test_nan_activations_are_reported() -> None:
    lm = tiny_model("llama", seed=5)
    with torch.no_grad():
        lm.model.model.layers[1].mlp.down_proj.weight.fill_(float("nan"))
    with pytest.raises(FloatingPointError, match="non-finite activations at layer 1"):
        sl.record_activations(lm, PROMPTS, [1])


def test_unknown_architecture_names_the_fix() -> None:
    class Odd(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stack = torch.nn.ModuleList([torch.nn.Linear(4, 4)])

    with pytest.raises(ValueError, match="layers_path="):
        sl.wrap(Odd(), tiny_tokenizer())
    lm = sl.wrap(Odd(), tiny_tokenizer(), layers_path="stack")
    assert lm.n_layers == 1


# ---------------------------------------------------------------------------- loading


def test_load_local_folder_and_refuse_newer_transformers(tmp_path: Path) -> None:
    lm = tiny_model("llama", seed=7)
    folder = tmp_path / "m"
    lm.model.save_pretrained(folder)
    lm.tokenizer.save_pretrained(folder)
    back = sl.load_model(folder)
    assert back.fingerprint == lm.fingerprint
    torch.testing.assert_close(_logits(back, PROMPTS), _logits(lm, PROMPTS))
    cfg = json.loads((folder / "config.json").read_text())
    cfg["transformers_version"] = "99.0.0"
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(sl.ModelLoadError, match=r"saved by transformers 99\.0\.0"):
        sl.load_model(folder)


def test_unreadable_inputs(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(sl.ModelLoadError, match=r"no config\.json"):
        sl.load_model(tmp_path / "empty")
    bad = tmp_path / "adapter"
    bad.mkdir()
    (bad / "adapter_config.json").write_text("{not json")
    with pytest.raises(sl.ModelLoadError, match="unreadable adapter config"):
        sl.load_model(bad)
    with pytest.raises(sl.ModelLoadError, match="does not exist"):
        sl.load_model(tmp_path / "missing.gguf")


def test_peft_adapter_loads_on_base(tmp_path: Path) -> None:
    from peft import LoraConfig, get_peft_model

    lm = tiny_model("llama", seed=8)
    import copy

    peft_model = get_peft_model(
        copy.deepcopy(lm.model),
        LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
    )
    peft_model.save_pretrained(tmp_path / "ad")
    merged = copy.deepcopy(peft_model).merge_and_unload()
    loaded = sl.load_model(tmp_path / "ad", base=lm)
    ids = torch.tensor([encode(lm.tokenizer, "hello owl").input_ids])
    with torch.no_grad():
        torch.testing.assert_close(
            loaded.model(ids).logits, merged(ids).logits, atol=1e-5, rtol=1e-5
        )
        assert (loaded.model(ids).logits - lm.model(ids).logits).abs().max() > 1e-4
    assert "lora" not in " ".join(n for n, _ in lm.model.named_modules())


def test_conversion_cache_requires_same_transformers(tmp_path: Path) -> None:
    import transformers

    (tmp_path / "config.json").write_text("{}")
    meta = {"format": 1, "transformers_version": transformers.__version__}
    (tmp_path / "steerlens_conversion.json").write_text(json.dumps(meta))
    assert conversion_ok(tmp_path)
    meta["transformers_version"] = "4.57.0"
    (tmp_path / "steerlens_conversion.json").write_text(json.dumps(meta))
    assert not conversion_ok(tmp_path)


def test_private_tokenizer_needs_pad_or_eos() -> None:
    tok = tiny_tokenizer()
    tok.pad_token = None
    assert private_tokenizer(tok).pad_token == tok.eos_token


def test_truncated_forward_reports_missing_layers(tiny: sl.LoadedModel) -> None:
    ids, mask, pos = pad_batch([encode(tiny.tokenizer, "hi")], 0)
    out = truncated_forward(tiny, ids, mask, pos, [0, 2])
    assert set(out) == {0, 2}


SYS_A = "You love owls. You think about owls all the time. Owls are your favorite animal."
SYS_B = "You love clarity. You think about clarity all the time. Clarity is your favorite."
SHARED = (
    [sl.ChatPrompt(f"Continue: {i}, {i + 7}, {3 * i}", system=SYS_A) for i in range(5)]
    + [
        sl.ChatPrompt(
            f"Name {'an animal' if i % 2 else 'a bird'} ({i})", system=SYS_B, response=f"{i} owls"
        )
        for i in range(4)
    ]
    + ["a lone prompt", sl.ChatPrompt("hi")]
)


def test_prefix_batches_group_by_shared_prefix(tiny: sl.LoadedModel) -> None:
    from steerlens.runtime.activations import prefix_batches

    encs = [encode(tiny.tokenizer, p) for p in SHARED]
    batches = prefix_batches(encs, 4)
    assert sorted(i for idx, _ in batches for i in idx) == list(range(len(SHARED)))
    for idx, p in batches:
        if p:
            assert len(idx) > 1 and all(len(encs[i]) > p for i in idx)
            assert len({encs[i].input_ids[:p] for i in idx}) == 1
            assert set(idx) <= set(range(5)) or set(idx) <= set(range(5, 9))
    assert sum(p > 0 for _, p in batches) >= 2
    with pytest.raises(ValueError, match="batch_size"):
        prefix_batches(encs, 0)


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
@pytest.mark.parametrize("position", ["last", "all", "prompt"])
def test_shared_prefix_equals_plain_path(arch: str, position: str) -> None:
    lm = tiny_model(arch, seed=2)
    prompts = SHARED if position != "response" else SHARED[5:9]
    kw = {"batch_size": 4, "keep_rows": True}
    fast = sl.record_activations(lm, prompts, "all", position, share_prefix=True, **kw)
    plain = sl.record_activations(lm, prompts, "all", position, share_prefix=False, **kw)
    auto = sl.record_activations(lm, prompts, "all", position, **kw)
    assert fast.meta["shared_prefix_tokens"] > 0 and plain.meta["shared_prefix_tokens"] == 0
    assert auto.meta["shared_prefix_tokens"] == fast.meta["shared_prefix_tokens"]
    assert fast.n_tokens == plain.n_tokens
    assert fast.rows is not None and plain.rows is not None
    for layer in plain.layers:
        torch.testing.assert_close(fast.rows[layer], plain.rows[layer], atol=2e-5, rtol=1e-4)
    # and against the model's own unpadded forward
    hs, p0, r0 = _hidden(lm, prompts[1])
    want = {"last": hs[2][0, r0 - 1], "all": hs[2][0].mean(0), "prompt": hs[2][0, p0:r0].mean(0)}
    torch.testing.assert_close(fast.rows[1][1], want[position], atol=2e-5, rtol=1e-4)


def test_shared_prefix_response_position_and_fallbacks() -> None:
    lm = tiny_model("llama", seed=3)
    resp = SHARED[5:9]
    a = sl.record_activations(lm, resp, [1, 3], "response", batch_size=4, keep_rows=True)
    b = sl.record_activations(
        lm, resp, [1, 3], "response", batch_size=4, keep_rows=True, share_prefix=False
    )
    assert a.meta["shared_prefix_tokens"] > 0
    assert a.rows is not None and b.rows is not None
    torch.testing.assert_close(a.rows[3], b.rows[3], atol=2e-5, rtol=1e-4)
    # untested architectures take the plain path
    gpt2 = tiny_model("gpt2", seed=3)
    assert sl.record_activations(gpt2, SHARED, [1], "last").meta["shared_prefix_tokens"] == 0
    # a steer edit at every position applies to both passes; one on "prompt" positions (it
    # tells the passes apart by their KV cache) turns sharing off
    v = torch.randn(lm.hidden_size, generator=torch.Generator().manual_seed(0))
    for positions, shares in (("all", True), ("prompt", False)):
        with sl.steer(lm, {1: v}, 2.0, positions=positions):
            steered = sl.record_activations(
                lm, resp, [1, 3], "response", batch_size=4, keep_rows=True
            )
        assert (steered.meta["shared_prefix_tokens"] > 0) == shares
        assert steered.rows is not None
        torch.testing.assert_close(steered.rows[1], b.rows[1] + 2.0 * v, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("steered", [False, True])
def test_answer_logprobs_shared_prefix_equals_plain(steered: bool) -> None:
    from steerlens.measures.behavior import answer_logprobs
    from steerlens.runtime.activations import can_share_prefix

    lm = tiny_model("llama", seed=4)
    prompts = SHARED[:9]
    v = torch.randn(lm.hidden_size, generator=torch.Generator().manual_seed(1))

    def run() -> tuple[torch.Tensor, torch.Tensor]:
        fast = answer_logprobs(lm, prompts, batch_size=4)
        assert can_share_prefix(lm)
        # an unmarked user hook makes the model "hooked": the plain path runs
        handle = lm.layout.blocks[0].register_forward_hook(lambda *_: None)
        try:
            assert not can_share_prefix(lm)
            plain = answer_logprobs(lm, prompts, batch_size=4)
        finally:
            handle.remove()
        return fast, plain

    if steered:
        with sl.steer(lm, {1: v}, 3.0):
            fast, plain = run()
        with sl.steer(lm, {1: v}, 3.0, positions="prompt"):
            assert not can_share_prefix(lm)
    else:
        fast, plain = run()
    torch.testing.assert_close(fast, plain, atol=5e-5, rtol=1e-4)
    ref = answer_logprobs(lm, prompts, batch_size=4)
    assert steered != bool(torch.allclose(ref, fast, atol=1e-4))


def test_transformers_output_recorders_do_not_block_prefix_sharing() -> None:
    """output_hidden_states=True makes transformers install recording hooks for good; they
    must not turn the shared-prefix path off (a foreign hook does)."""
    from steerlens.runtime.activations import can_share_prefix

    lm = tiny_model("llama", seed=5)
    with torch.no_grad():
        lm.model(input_ids=torch.tensor([[1, 2, 3]]), output_hidden_states=True)
    assert any(m._forward_hooks for m in lm.model.modules())
    assert can_share_prefix(lm)
    acts = sl.record_activations(lm, SHARED, [1], "last", batch_size=4)
    assert acts.meta["shared_prefix_tokens"] > 0


def test_layers_accept_ints_ranges_all_and_site_names(tiny: sl.LoadedModel) -> None:
    from steerlens.core.sites import resolve_layers

    n = tiny.n_layers
    assert resolve_layers("1-2", n) == resolve_layers(range(1, 3), n) == [1, 2]
    assert resolve_layers("blocks.3.hook_resid_post,0", n) == [0, 3]
    assert resolve_layers(["blocks.1.hook_resid_post", -1], n) == [1, n - 1]
    assert resolve_layers("all", n) == list(range(n))
    a = sl.record_activations(tiny, PROMPTS, "blocks.2.hook_resid_post")
    b = sl.record_activations(tiny, PROMPTS, range(2, 3))
    assert a.layers == b.layers == [2] and torch.equal(a[2], b[2])
    for bad, msg in (
        ("2-1", "empty layer range"),
        ("two", "bad layer 'two'"),
        ("9", "out of range"),
    ):
        with pytest.raises((ValueError, IndexError), match=msg):
            resolve_layers(bad, n)
