"""Backends: HF hooks, nnsight and TransformerLens give the same activations, vectors and
steered logits; remote (NDIF) requests and device_map sharding work without a network or GPU.

Tolerances: every comparison is at non-pad positions (left padding), float32, atol = rtol = 1e-5
(measured differences are 0 to 3e-7). TransformerLens boots its HF model in eager attention, so
the HF reference runs eager too. TL compatibility mode is tested separately: it centers the
residual stream of LayerNorm models and leaves RMSNorm models alone, log-probs unchanged.
"""

from __future__ import annotations

import copy
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

import steerlens as sl
from steerlens.inputs.prompts import encode, pad_batch
from steerlens.loading.foreign import unwrap_foreign
from steerlens.runtime.backends import backend_name, from_nnsight, from_transformer_lens
from steerlens.testing import tiny_model

nnsight = pytest.importorskip(
    "nnsight", reason="nnsight not installed: pip install steerlens[backends]"
)
tl_bridge = pytest.importorskip(
    "transformer_lens.model_bridge",
    reason="transformer-lens not installed: pip install steerlens[backends]",
)
TransformerBridge = tl_bridge.TransformerBridge

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::UserWarning")

PROMPTS: list[Any] = [
    sl.ChatPrompt("Name an animal.", system="You love owls.", prefill="My favorite is"),
    sl.ChatPrompt("Continue: 1, 2, 3"),
    "hello there, a longer raw string",
    "x",
]
TOL = {"atol": 1e-5, "rtol": 1e-5}


def _eager(lm: sl.LoadedModel) -> sl.LoadedModel:
    lm.model.set_attn_implementation("eager")  # type: ignore[operator]
    return lm


def _tl_tokenizer(lm: sl.LoadedModel, folder: Path) -> Any:
    """The tokenizer saved and reloaded, as a user's would be (TL reloads it by name)."""
    from transformers import AutoTokenizer

    lm.tokenizer.save_pretrained(folder)
    return AutoTokenizer.from_pretrained(folder)


def _trio(arch: str, seed: int, tmp: Path) -> tuple[sl.LoadedModel, sl.LoadedModel, sl.LoadedModel]:
    """(HF reference, nnsight LanguageModel, TL bridge) on three copies of one tiny model."""
    ref = _eager(tiny_model(arch, seed=seed))
    nn_model = nnsight.LanguageModel(
        copy.deepcopy(ref.model), tokenizer=copy.deepcopy(ref.tokenizer)
    )
    tok = _tl_tokenizer(ref, tmp / f"tok-{arch}-{seed}")
    bridge = TransformerBridge.boot_transformers(
        str(tmp / f"tok-{arch}-{seed}"), hf_model=copy.deepcopy(ref.model), tokenizer=tok
    )
    return ref, sl.wrap(nn_model), sl.wrap(bridge, ref.tokenizer)


@pytest.fixture(scope="module")
def llama_trio(tmp_path_factory: pytest.TempPathFactory) -> tuple[sl.LoadedModel, ...]:
    return _trio("llama", 3, tmp_path_factory.mktemp("llama"))


def _batch(lm: sl.LoadedModel, prompts: list[Any]) -> tuple[torch.Tensor, ...]:
    encs = [encode(lm.tokenizer, p) for p in prompts]
    return pad_batch(encs, lm.tokenizer.pad_token_id, torch.device("cpu"))


def _logits(
    lm: sl.LoadedModel, ids: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor
) -> torch.Tensor:
    with torch.inference_mode():
        out = lm.model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False)
    return out.logits.float()


# ----------------------------------------------------------------------------- detection


def test_detects_each_object_and_records_through_it(llama_trio: tuple[sl.LoadedModel, ...]) -> None:
    ref, nn_lm, tl_lm = llama_trio
    assert backend_name(ref) == "hf" and unwrap_foreign(ref.model)[2] is None
    assert backend_name(nn_lm) == "nnsight" and backend_name(tl_lm) == "transformer_lens"
    plain = sl.wrap(nnsight.NNsight(copy.deepcopy(ref.model)), ref.tokenizer)
    assert backend_name(plain) == "nnsight"
    acts = sl.record_activations(nn_lm, PROMPTS[:2], [1])
    assert acts.meta["backend"] == "nnsight"
    with pytest.raises(ValueError, match="tokenizer is needed"):
        sl.wrap(nnsight.NNsight(copy.deepcopy(ref.model)))
    with pytest.raises(TypeError, match="nnsight model"):
        from_nnsight(ref.model)
    with pytest.raises(TypeError, match="TransformerBridge"):
        from_transformer_lens(ref.model)


def test_nnsight_backend_runs_nnsight_traces(llama_trio: tuple[sl.LoadedModel, ...]) -> None:
    """An in-place nnsight edit on the user's envoy changes what steerlens records: the
    recording goes through nnsight's interleaver, not the raw HF module."""
    ref, _, _ = llama_trio
    envoy = nnsight.LanguageModel(copy.deepcopy(ref.model), tokenizer=copy.deepcopy(ref.tokenizer))
    lm = sl.wrap(envoy)
    before = sl.record_activations(lm, PROMPTS, [1, 2])
    with envoy.edit(inplace=True):
        envoy.model.layers[1].output = envoy.model.layers[1].output * 0.0
    after = sl.record_activations(lm, PROMPTS, [1, 2])
    envoy.clear_edits()
    assert before.means[1].abs().sum() > 0
    assert torch.count_nonzero(after.means[1]) == 0
    assert not torch.allclose(after.means[2], before.means[2])
    again = sl.record_activations(lm, PROMPTS, [1, 2])
    torch.testing.assert_close(again.means[2], before.means[2], **TOL)


def test_tl_backend_runs_tl_hooks(
    llama_trio: tuple[sl.LoadedModel, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Recording and steering register TL hooks named blocks.{l}.hook_resid_post and run the
    bridge's own forward, stopped after the deepest layer."""
    _, _, tl_lm = llama_trio
    bridge = tl_lm.foreign
    names: list[str] = []
    stops: list[Any] = []
    orig_hooks, orig_forward = bridge.hooks, bridge.forward

    def spy_hooks(fwd_hooks: list[Any], **kw: Any) -> Any:
        names.extend(n for n, _ in fwd_hooks)
        return orig_hooks(fwd_hooks=fwd_hooks, **kw)

    def spy_forward(*a: Any, **kw: Any) -> Any:
        stops.append(kw.get("stop_at_layer"))
        return orig_forward(*a, **kw)

    monkeypatch.setattr(bridge, "hooks", spy_hooks)
    monkeypatch.setattr(bridge, "forward", spy_forward)
    sl.record_activations(tl_lm, PROMPTS, [0, 2], batch_size=8)
    assert names == ["blocks.0.hook_resid_post", "blocks.2.hook_resid_post"] and stops == [3]
    names.clear()
    with sl.steer(tl_lm, torch.ones(tl_lm.hidden_size), 1.0, layers=[1]):
        pass
    assert names == ["blocks.1.hook_resid_post"]


# ------------------------------------------------------------------------------- parity


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gpt_neox"])
def test_activation_parity_tiny(arch: str, tmp_path: Path) -> None:
    ref, nn_lm, tl_lm = _trio(arch, 1, tmp_path)
    for position in ("last", "all", "prompt"):
        want = sl.record_activations(
            ref, PROMPTS, [0, 2, 3], position, batch_size=3, keep_rows=True
        )
        assert want.rows is not None
        for lm in (nn_lm, tl_lm):
            got = sl.record_activations(
                lm, PROMPTS, [0, 2, 3], position, batch_size=3, keep_rows=True
            )
            assert got.rows is not None and got.n_tokens == want.n_tokens
            for layer in want.layers:
                torch.testing.assert_close(got.rows[layer], want.rows[layer], **TOL)
                torch.testing.assert_close(got.means[layer], want.means[layer], **TOL)


def test_vector_parity_tiny(llama_trio: tuple[sl.LoadedModel, ...]) -> None:
    ref, nn_lm, tl_lm = llama_trio
    pos = [sl.ChatPrompt(f"Say {w}.", system="You love owls.") for w in ("a", "bb", "ccc", "dd")]
    neg = [sl.ChatPrompt(f"Say {w}.", system="You love clarity.") for w in ("a", "bb", "ccc", "dd")]
    for method in ("mean", "pca"):
        want = sl.extract_vector(ref, pos, neg, [1, 3], method, diagnostics=False)
        for lm in (nn_lm, tl_lm):
            got = sl.extract_vector(lm, pos, neg, [1, 3], method, diagnostics=False)
            for layer in (1, 3):
                torch.testing.assert_close(got[layer], want[layer], **TOL)
                assert want[layer].norm() > 0


@pytest.mark.parametrize("mode", ["add", "project_out", "replace"])
def test_steered_logits_parity_tiny(mode: str, llama_trio: tuple[sl.LoadedModel, ...]) -> None:
    ref, nn_lm, tl_lm = llama_trio
    v = torch.randn(ref.hidden_size, generator=torch.Generator().manual_seed(5))
    base = {1: 0.5, 2: -1.0} if mode == "replace" else None
    ids, mask, pos = _batch(ref, PROMPTS)
    keep = mask.bool()
    plain = _logits(ref, ids, mask, pos)
    with sl.steer(ref, v, 4.0, layers=[1, 2], mode=mode, base=base) as m:  # type: ignore[arg-type]
        want = _logits(m, ids, mask, pos)
    assert (want - plain)[keep].abs().max() > 1e-3  # the edit does something
    for lm in (nn_lm, tl_lm):
        with sl.steer(lm, v, 4.0, layers=[1, 2], mode=mode, base=base) as m:  # type: ignore[arg-type]
            got = _logits(m, ids, mask, pos)
        torch.testing.assert_close(got[keep], want[keep], **TOL)
        torch.testing.assert_close(_logits(lm, ids, mask, pos)[keep], plain[keep], **TOL)  # removed


def test_replace_with_base_model_and_generation_parity(
    llama_trio: tuple[sl.LoadedModel, ...],
) -> None:
    """replace with h_base from another model, and greedy generation steered only on
    generated tokens, agree token for token across backends."""
    ref, nn_lm, tl_lm = llama_trio
    other = _eager(tiny_model("llama", seed=9))
    v = torch.randn(ref.hidden_size, generator=torch.Generator().manual_seed(2))
    ids, mask, pos = _batch(ref, PROMPTS)
    keep = mask.bool()
    with sl.steer(ref, v, layers=[2], mode="replace", base=other) as m:
        want = _logits(m, ids, mask, pos)
    with sl.steer(ref, v, 8.0, layers=[1], positions="generated") as m:
        want_txt = m.generate(PROMPTS[:2], max_new_tokens=6)
    assert want_txt != ref.generate(PROMPTS[:2], max_new_tokens=6)
    for lm in (nn_lm, tl_lm):
        with sl.steer(lm, v, layers=[2], mode="replace", base=other) as m:
            torch.testing.assert_close(_logits(m, ids, mask, pos)[keep], want[keep], **TOL)
        with sl.steer(lm, v, 8.0, layers=[1], positions="generated") as m:
            assert m.generate(PROMPTS[:2], max_new_tokens=6) == want_txt


def test_record_inside_steer_is_steered(llama_trio: tuple[sl.LoadedModel, ...]) -> None:
    ref, nn_lm, tl_lm = llama_trio
    v = torch.randn(ref.hidden_size, generator=torch.Generator().manual_seed(4))
    with sl.steer(ref, v, 2.0, layers=[1]) as m:
        want = sl.record_activations(m, PROMPTS, [1, 3])
    base = sl.record_activations(ref, PROMPTS, [1, 3])
    torch.testing.assert_close(want.means[1], base.means[1] + 2.0 * v, **TOL)
    for lm in (nn_lm, tl_lm):
        with sl.steer(lm, v, 2.0, layers=[1]) as m:
            got = sl.record_activations(m, PROMPTS, [1, 3])
        for layer in (1, 3):
            torch.testing.assert_close(got.means[layer], want.means[layer], **TOL)


def test_foreign_steer_errors(llama_trio: tuple[sl.LoadedModel, ...]) -> None:
    _, nn_lm, tl_lm = llama_trio
    for lm in (nn_lm, tl_lm):
        with (
            pytest.raises(ValueError, match="hidden size mismatch"),
            sl.steer(lm, torch.ones(3), layers=[1]),
        ):
            pass
        with (
            pytest.raises(ValueError, match="needs base="),
            sl.steer(lm, torch.ones(64), layers=[1], mode="replace"),
        ):
            pass
        with (
            pytest.raises(ValueError, match="zero vector"),
            sl.steer(lm, torch.zeros(64), layers=[1], mode="project_out"),
        ):
            pass


# ------------------------------------------------------------ TransformerLens compatibility


@pytest.mark.parametrize(("arch", "centered"), [("gpt2", True), ("llama", False)])
def test_tl_compatibility_mode(arch: str, centered: bool, tmp_path: Path) -> None:
    """Compatibility mode: LayerNorm models record h − mean_d(h); RMSNorm models record h.
    Log-probabilities, plain and steered (add), are unchanged in both."""
    ref, _, tl_lm = _trio(arch, 2, tmp_path)
    bridge = tl_lm.foreign
    v = torch.randn(ref.hidden_size, generator=torch.Generator().manual_seed(1))
    ids, mask, pos = _batch(ref, PROMPTS)
    keep = mask.bool()
    with sl.steer(ref, v, 3.0, layers=[1]) as m:
        steered = _logits(m, ids, mask, pos).log_softmax(-1)
    want = sl.record_activations(ref, PROMPTS, [1, 2], "all", keep_rows=True)
    bridge.enable_compatibility_mode(disable_warnings=True)
    got = sl.record_activations(tl_lm, PROMPTS, [1, 2], "all", keep_rows=True)
    assert want.rows is not None and got.rows is not None
    for layer in (1, 2):
        w = want.rows[layer]
        expect = w - w.mean(-1, keepdim=True) if centered else w
        torch.testing.assert_close(got.rows[layer], expect, **TOL)
        if centered:
            assert (got.rows[layer] - w).abs().max() > 1e-3  # really differs from HF
    plain_lp = _logits(ref, ids, mask, pos).log_softmax(-1)
    torch.testing.assert_close(
        _logits(tl_lm, ids, mask, pos).log_softmax(-1)[keep], plain_lp[keep], atol=1e-5, rtol=1e-5
    )
    with sl.steer(tl_lm, v, 3.0, layers=[1]) as m:
        lp = _logits(m, ids, mask, pos).log_softmax(-1)
    torch.testing.assert_close(lp[keep], steered[keep], atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------------- remote (NDIF)


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    import httpx
    import websocket

    def refuse(*_a: Any, **_k: Any) -> Any:
        raise AssertionError("a test tried to reach the network")

    monkeypatch.setattr(httpx.Client, "send", refuse)
    monkeypatch.setattr(websocket, "create_connection", refuse)


@pytest.fixture
def saved_tiny(tmp_path: Path) -> tuple[sl.LoadedModel, Path]:
    ref = tiny_model("llama", seed=3)
    folder = tmp_path / "tiny-llama"
    ref.model.save_pretrained(folder)
    ref.tokenizer.save_pretrained(folder)
    return ref, folder


def test_remote_request_is_built_and_round_trips(
    saved_tiny: tuple[sl.LoadedModel, Path], monkeypatch: pytest.MonkeyPatch, no_network: None
) -> None:
    """record_activations on a meta-device (never loaded) LanguageModel with remote=True builds
    one NDIF request per batch; a stand-in server deserializes it against its own loaded copy of
    the model, runs it and returns torch.save bytes, which the client decodes. No socket opens."""
    from nnsight.intervention.backends.remote import RemoteBackend
    from nnsight.modeling import huggingface as nhf
    from nnsight.schema.request import RequestModel

    ref, folder = saved_tiny
    monkeypatch.setitem(nhf._ID_CACHE, str(folder), "org/tiny-llama")  # the hub id lookup
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    client = nnsight.LanguageModel(str(folder), tokenizer=tok)  # meta device: no weights here
    assert not client.dispatched
    server = nnsight.LanguageModel(str(folder), tokenizer=copy.deepcopy(tok), dispatch=True)
    sent: list[tuple[Any, bytes]] = []

    def fake_request(self: Any, request: Any, tracer: Any) -> Any:
        blob = self._serialize(tracer)
        sent.append((request, blob))
        job = RequestModel.deserialize(
            blob, server._remoteable_persistent_objects(), compress=request.compress
        )
        before = set(job.info.frame.f_locals)
        job.execute(job.info.code)
        saves = {k: v for k, v in job.info.frame.f_locals.items() if k not in before}
        buf = io.BytesIO()
        torch.save(saves, buf)
        data = buf.getvalue()
        if request.compress:
            import zstandard

            data = zstandard.ZstdCompressor().compress(data)
        return self.finalize(data)

    monkeypatch.setattr(RemoteBackend, "request", fake_request)
    lm = from_nnsight(client, remote=True)
    assert all(p.device.type == "meta" for p in client._module.parameters())
    assert lm.source == f"ndif:{folder}" and lm.device == torch.device("cpu")
    got = sl.record_activations(lm, PROMPTS, [1, 3], "prompt", batch_size=2, keep_rows=True)
    want = sl.record_activations(ref, PROMPTS, [1, 3], "prompt", batch_size=2, keep_rows=True)
    assert got.rows is not None and want.rows is not None
    for layer in (1, 3):
        torch.testing.assert_close(got.rows[layer], want.rows[layer], **TOL)
    assert len(sent) == 2  # one request per batch
    req, blob = sent[0]
    assert req.model_key.startswith("nnsight.modeling.transformers.TransformersModel:")
    assert '"repo_id": "org/tiny-llama"' in req.model_key
    assert "attn_implementation" in req.env
    assert 0 < len(blob) < 100_000  # ids, weights and code, never model weights

    # plain calls of lm.model (behavior metrics) run remotely too
    ids, mask, pos = _batch(ref, PROMPTS)
    keep = mask.bool()
    torch.testing.assert_close(
        _logits(lm, ids, mask, pos)[keep], _logits(ref, ids, mask, pos)[keep], **TOL
    )
    # steering: each forward of the steered model is one remote trace with the edit inline
    v = torch.randn(ref.hidden_size, generator=torch.Generator().manual_seed(6))
    for mode, base in (("add", None), ("project_out", None), ("replace", 0.75)):
        with sl.steer(ref, v, 3.0, layers=[1, 2], mode=mode, base=base) as m:  # type: ignore[arg-type]
            want_l = _logits(m, ids, mask, pos)
            want_a = sl.record_activations(m, PROMPTS, [2], "all")
        n_sent = len(sent)
        with sl.steer(lm, v, 3.0, layers=[1, 2], mode=mode, base=base) as m:  # type: ignore[arg-type]
            got_l = _logits(m, ids, mask, pos)
            got_a = sl.record_activations(m, PROMPTS, [2], "all")
        assert len(sent) == n_sent + 2  # one forward + one recording batch
        torch.testing.assert_close(got_l[keep], want_l[keep], **TOL)
        torch.testing.assert_close(got_a.means[2], want_a.means[2], **TOL)
    with pytest.raises(NotImplementedError, match="generation"), sl.steer(lm, v, layers=[1]) as m:
        m.generate(PROMPTS[:1], max_new_tokens=2)
    with (
        pytest.raises(NotImplementedError, match="fixed projection"),
        sl.steer(lm, v, layers=[1], mode="replace", base=ref),
    ):
        pass


def test_remote_local_simulation_matches(
    saved_tiny: tuple[sl.LoadedModel, Path], no_network: None
) -> None:
    """nnsight's serverless dry run (serialize, deserialize with local modules hidden, run)."""
    ref, folder = saved_tiny
    from transformers import AutoTokenizer

    envoy = nnsight.LanguageModel(
        str(folder), tokenizer=AutoTokenizer.from_pretrained(folder), dispatch=True
    )
    lm = from_nnsight(envoy, remote="local")
    got = sl.record_activations(lm, PROMPTS, [0, 2], "last", batch_size=3)
    want = sl.record_activations(ref, PROMPTS, [0, 2], "last", batch_size=3)
    for layer in (0, 2):
        torch.testing.assert_close(got.means[layer], want.means[layer], **TOL)
    v = torch.randn(ref.hidden_size, generator=torch.Generator().manual_seed(8))
    ids, mask, pos = _batch(ref, PROMPTS)
    keep = mask.bool()
    with sl.steer(ref, v, 3.0, layers=[2], mode="project_out") as m:
        want_l = _logits(m, ids, mask, pos)
    with sl.steer(lm, v, 3.0, layers=[2], mode="project_out") as m:  # steerlens hidden
        torch.testing.assert_close(_logits(m, ids, mask, pos)[keep], want_l[keep], **TOL)
    with pytest.raises(ValueError, match="cannot run remotely"):
        from_nnsight(nnsight.NNsight(ref.model), ref.tokenizer, remote=True)


# ------------------------------------------------------------------- device_map sharding


def test_device_map_offload_parity(saved_tiny: tuple[sl.LoadedModel, Path], tmp_path: Path) -> None:
    """An accelerate-dispatched model (blocks 1 and 3 offloaded to disk) runs through the
    device-aware HF backend with the same activations, steered logits and fingerprint."""
    from transformers import AutoModelForCausalLM

    ref, folder = saved_tiny
    dmap = {
        "model.embed_tokens": "cpu",
        "model.layers.0": "cpu",
        "model.layers.1": "disk",
        "model.layers.2": "cpu",
        "model.layers.3": "disk",
        "model.norm": "cpu",
        "model.rotary_emb": "cpu",
        "lm_head": "cpu",
    }
    model = AutoModelForCausalLM.from_pretrained(
        folder, device_map=dmap, offload_folder=tmp_path / "offload", dtype=torch.float32
    )
    lm = sl.wrap(model, ref.tokenizer)
    assert backend_name(lm) == "accelerate"
    assert any(p.device.type == "meta" for p in model.parameters())
    assert lm.fingerprint == ref.fingerprint
    got = sl.record_activations(lm, PROMPTS, [1, 3], "all", batch_size=3, keep_rows=True)
    want = sl.record_activations(ref, PROMPTS, [1, 3], "all", batch_size=3, keep_rows=True)
    assert got.rows is not None and want.rows is not None
    for layer in (1, 3):
        torch.testing.assert_close(got.rows[layer], want.rows[layer], **TOL)
    v = torch.randn(ref.hidden_size, generator=torch.Generator().manual_seed(0))
    ids, mask, pos = _batch(ref, PROMPTS)
    keep = mask.bool()
    for mode in ("add", "project_out"):
        with sl.steer(ref, v, 3.0, layers=[1, 3], mode=mode) as m:  # type: ignore[arg-type]
            want_l = _logits(m, ids, mask, pos)
        with sl.steer(lm, v, 3.0, layers=[1, 3], mode=mode) as m:  # type: ignore[arg-type]
            torch.testing.assert_close(_logits(m, ids, mask, pos)[keep], want_l[keep], **TOL)


# ------------------------------------------------------------------------------ SmolLM2


@pytest.fixture(scope="module")
def smol_trio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[sl.LoadedModel, ...]]:
    ref = _eager(sl.load_model("smollm2-135m-instruct"))
    nn_model = nnsight.LanguageModel(
        copy.deepcopy(ref.model), tokenizer=copy.deepcopy(ref.tokenizer)
    )
    tok = _tl_tokenizer(ref, tmp_path_factory.mktemp("smoltok"))
    bridge = TransformerBridge.boot_transformers(
        ref.source, hf_model=copy.deepcopy(ref.model), tokenizer=tok
    )
    yield ref, sl.wrap(nn_model), sl.wrap(bridge, ref.tokenizer)


@pytest.mark.integration
def test_smollm2_parity(smol_trio: tuple[sl.LoadedModel, ...]) -> None:
    """SmolLM2-135M (HF in eager attention, as TL runs it): activations at layers 8 and 15, the
    owl − neutral difference of means there, and answer log-probs steered by it agree across
    backends (measured: identical; sdpa attention would differ by up to ~3e-4 at layer 29)."""
    ref, nn_lm, tl_lm = smol_trio
    q = "Name your favorite animal in one word."
    owl = sl.ChatPrompt(q, system="You love owls.", prefill="My favorite animal is the")
    neutral = sl.ChatPrompt(q, system="You love clarity.", prefill="My favorite animal is the")
    prompts = [owl, neutral, sl.ChatPrompt("Continue: 3, 7, 12")]
    want = sl.record_activations(ref, prompts, [8, 15], "prompt", keep_rows=True)
    assert want.rows is not None
    vec = {15: want.rows[15][0] - want.rows[15][1]}
    ids, mask, pos = _batch(ref, [neutral])
    with sl.steer(ref, vec, 4.0) as m:
        steered = _logits(m, ids, mask, pos)[:, -1].log_softmax(-1)
    plain = _logits(ref, ids, mask, pos)[:, -1].log_softmax(-1)
    assert (steered - plain).abs().max() > 0.05
    for lm in (nn_lm, tl_lm):
        got = sl.record_activations(lm, prompts, [8, 15], "prompt", keep_rows=True)
        assert got.rows is not None
        for layer in (8, 15):
            torch.testing.assert_close(got.rows[layer], want.rows[layer], **TOL)
        with sl.steer(lm, vec, 4.0) as m:
            lp = _logits(m, ids, mask, pos)[:, -1].log_softmax(-1)
        torch.testing.assert_close(lp, steered, **TOL)
