"""No silent no-op: a steer / ablate block that ran the model but edited nothing raises
NoOpEditError on exit, on every backend (HF hooks, nnsight, TransformerLens)."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch

import steerlens as sl
from steerlens import edits
from steerlens.core.hf_compat import cache_keyword, past_length
from steerlens.inputs.prompts import encode, pad_batch
from steerlens.runtime.edits import NoOpEditError
from steerlens.testing import tiny_model

nnsight = pytest.importorskip("nnsight", reason="the backends extra is not installed")
tl_bridge = pytest.importorskip(
    "transformer_lens.model_bridge", reason="TransformerLens 4 is not installed"
)

PROMPTS = [sl.ChatPrompt("hi there"), sl.ChatPrompt("a longer message here")]


@pytest.fixture(scope="module")
def trio(tmp_path_factory: pytest.TempPathFactory) -> dict[str, sl.LoadedModel]:
    from transformers import AutoTokenizer

    ref = tiny_model("llama", seed=3)
    ref.model.set_attn_implementation("eager")  # type: ignore[operator]
    folder = tmp_path_factory.mktemp("tok")
    ref.tokenizer.save_pretrained(folder)
    bridge = tl_bridge.TransformerBridge.boot_transformers(
        str(folder),
        hf_model=copy.deepcopy(ref.model),
        tokenizer=AutoTokenizer.from_pretrained(folder),
    )
    nn_model = nnsight.LanguageModel(
        copy.deepcopy(ref.model), tokenizer=copy.deepcopy(ref.tokenizer)
    )
    return {
        "hf": ref,
        "nnsight": sl.wrap(nn_model),
        "transformer_lens": sl.wrap(bridge, ref.tokenizer),
    }


BACKENDS = ["hf", "nnsight", "transformer_lens"]


def _forward(lm: sl.LoadedModel) -> torch.Tensor:
    encs = [encode(lm.tokenizer, p) for p in PROMPTS]
    ids, mask, pos = pad_batch(encs, lm.tokenizer.pad_token_id)
    with torch.no_grad():
        return lm.model(input_ids=ids, attention_mask=mask, position_ids=pos).logits


def _v(lm: sl.LoadedModel) -> torch.Tensor:
    return torch.randn(lm.hidden_size, generator=torch.Generator().manual_seed(2)) * 3


@pytest.mark.parametrize("backend", BACKENDS)
def test_generated_positions_on_a_plain_forward_raise(backend: str, trio: dict[str, Any]) -> None:
    lm = trio[backend]
    with pytest.raises(NoOpEditError, match=r"positions='generated'.*none continued a filled KV"):  # noqa: SIM117
        with sl.steer(lm, _v(lm), 4.0, layers=[1], positions="generated") as m:
            _forward(m)


@pytest.mark.parametrize("backend", BACKENDS)
def test_forced_no_op_during_generate_raises(
    backend: str, trio: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A transformers release that hides the decoding steps from steerlens (forced here: every
    forward looks like a prompt pass) must give an error, not the unsteered model."""
    lm = trio[backend]
    with sl.steer(lm, _v(lm), 8.0, layers=[1], positions="generated") as m:
        m.generate(PROMPTS, max_new_tokens=4)  # the real path: edits, no error
    monkeypatch.setattr(edits, "past_length", lambda args, kwargs: 0)
    with pytest.raises(NoOpEditError, match=r"mode='add', positions='generated', layers=\[1\]"):  # noqa: SIM117
        with sl.steer(lm, _v(lm), 8.0, layers=[1], positions="generated") as m:
            m.generate(PROMPTS, max_new_tokens=4)


@pytest.mark.parametrize("backend", BACKENDS)
def test_prompt_positions_only_on_cached_continuations_raise(
    backend: str, trio: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    lm = trio[backend]
    monkeypatch.setattr(edits, "past_length", lambda args, kwargs: 5)
    with pytest.raises(NoOpEditError, match=r"positions='prompt'.*continued a filled KV cache"):  # noqa: SIM117
        with sl.ablate(lm, _v(lm), layers=[1], positions="prompt") as m:
            _forward(m)


def test_edit_below_the_deepest_read_layer_raises(trio: dict[str, Any]) -> None:
    lm = trio["hf"]
    with (
        pytest.raises(NoOpEditError, match=r"blocks \[3\] never did"),
        sl.steer(lm, _v(lm), 2.0, layers=[3]),
    ):
        sl.record_activations(lm, PROMPTS, [0])
    with sl.steer(lm, _v(lm), 2.0, layers=[0, 3]):  # layer 0 runs: an edit happened
        sl.record_activations(lm, PROMPTS, [0])


@pytest.mark.parametrize("backend", BACKENDS)
def test_edits_that_run_do_not_raise_and_unused_blocks_are_fine(
    backend: str, trio: dict[str, Any]
) -> None:
    lm = trio[backend]
    plain = _forward(lm)
    for mode in ("add", "project_out"):
        with sl.steer(lm, _v(lm), 4.0, layers=[1, 2], mode=mode) as m:  # type: ignore[arg-type]
            assert (_forward(m) - plain).abs().max() > 1e-4
    with sl.steer(lm, _v(lm), 4.0, layers=[1], positions="prompt") as m:
        assert (_forward(m) - plain).abs().max() > 1e-4
    with sl.steer(lm, _v(lm), 4.0, layers=[1]):
        pass  # the model never ran: nothing was expected to change
    with (
        pytest.raises(RuntimeError, match="boom"),
        sl.steer(lm, _v(lm), 4.0, layers=[1], positions="generated") as m,
    ):
        _forward(m)
        raise RuntimeError("boom")  # the user's error, not the no-op one


def test_past_length_reads_the_forward_not_keyword_names() -> None:
    from transformers import DynamicCache

    tiny = tiny_model("llama", seed=0)
    cache = DynamicCache(config=tiny.config)
    ids = torch.ones(2, 1, dtype=torch.long)
    # a filled cache under either keyword, or under a name no release uses yet
    encs = [encode(tiny.tokenizer, p) for p in PROMPTS]
    full, mask, pos = pad_batch(encs, tiny.tokenizer.pad_token_id)
    with torch.no_grad():
        tiny.model(
            input_ids=full,
            attention_mask=mask,
            position_ids=pos,
            **{cache_keyword(tiny.model): cache},
            use_cache=True,
        )
    n = full.shape[1]
    for key in ("cache", "past_key_values", "kv_state_2030"):
        assert past_length((), {"input_ids": ids, key: cache}) == n
    # no cache object at all: the attention mask, or the position ids, still tell
    longer = torch.ones(2, n + 1, dtype=torch.long)
    assert past_length((), {"input_ids": ids, "attention_mask": longer}) == n
    assert (
        past_length((), {"input_ids": ids, "position_ids": torch.tensor([[n], [n - 3]])}) == n - 3
    )
    # a prompt pass: left padding puts 0 or 1 at column 0 of padded rows, 0 for the longest
    assert past_length((ids,), {"attention_mask": mask[:, :1], "position_ids": pos}) == 0
    assert (
        past_length(
            (full,),
            {
                "attention_mask": mask,
                "position_ids": pos,
                "cache": DynamicCache(config=tiny.config),
            },
        )
        == 0
    )


def test_cache_keyword_follows_the_installed_signature() -> None:
    import inspect

    tiny = tiny_model("llama", seed=0)
    params = inspect.signature(type(tiny.model).forward).parameters
    want = "cache" if "cache" in params else "past_key_values"
    assert cache_keyword(tiny.model) == want
    from peft import LoraConfig, get_peft_model

    peft_model = get_peft_model(
        copy.deepcopy(tiny.model), LoraConfig(r=2, target_modules=["q_proj"])
    )
    assert cache_keyword(peft_model) == want
    assert cache_keyword(lambda x, past_key_values=None: x) == "past_key_values"
    assert cache_keyword(lambda x, cache=None: x) == "cache"


def test_no_future_warning_from_steerlens_cache_calls(
    tiny: sl.LoadedModel, recwarn: pytest.WarningsRecorder
) -> None:
    """Recording with a shared prefix, answer log-probs and steering during generate pass the
    KV cache with the keyword the installed transformers expects (no deprecation warning)."""
    from steerlens.measures.behavior import answer_logprobs

    prompts = [
        sl.ChatPrompt(f"say {w} please, now", system="You love owls and more owls.")
        for w in "abcdefgh"
    ]
    sl.record_activations(tiny, prompts, [1], "prompt", batch_size=8)
    answer_logprobs(tiny, prompts, batch_size=8)
    with sl.steer(tiny, _v(tiny), 4.0, layers=[1], positions="generated") as m:
        m.generate(prompts[:2], max_new_tokens=3)
    cache_warnings = [w for w in recwarn if "past_key_values" in str(w.message)]
    assert not cache_warnings, [str(w.message) for w in cache_warnings]
