"""track_checkpoints: planted ground truth, nulls, PEFT replay path, resumable cache."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import steerlens.track.core as track_core
from steerlens import stats
from steerlens.checkpoints import CheckpointSeries
from steerlens.core.vectors import SteeringVector
from steerlens.inputs.prompts import ChatPrompt, encode
from steerlens.loading.models import LoadedModel
from steerlens.runtime.activations import length_batches, record_activations
from steerlens.testing import plant_vector, tiny_model
from steerlens.track import (
    AlignmentTrack,
    ExcessAlignment,
    SeriesTrack,
    base_pass,
    cov_null_cosines,
    excess_bootstrap,
    replay_rows,
    track_checkpoints,
)

PLANT_LAYER = 1
SCALES = (0.5, 1.0, 2.0)
PROMPTS = [f"Continue: {i}, {(i * 7) % 13}, {(i * 3) % 11}" for i in range(16)]
FAST = {"n_null": 300, "n_boot": 200}


def save_adapters(
    lm: LoadedModel, root: Path, steps: list[int], layers: list[int], merged_root: Path
) -> None:
    """Random LoRA adapters (A and B random, so they change activations) on ``layers`` as
    checkpoint-N, and the same adapters merged into full checkpoints under ``merged_root``."""
    import copy

    from peft import LoraConfig, get_peft_model

    for k, step in enumerate(steps):
        cfg = LoraConfig(
            r=4,
            target_modules=["q_proj", "v_proj", "down_proj"],
            layers_to_transform=layers,
            init_lora_weights=False,
        )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(200 + k)
            pm = get_peft_model(copy.deepcopy(lm.model), cfg)
        pm.save_pretrained(root / f"checkpoint-{step}")
        pm.merge_and_unload().save_pretrained(merged_root / f"checkpoint-{step}")


def _unit(d: int, seed: int) -> torch.Tensor:
    v = torch.randn(d, generator=torch.Generator().manual_seed(seed))
    return v / v.norm()


@pytest.fixture(scope="module")
def lm() -> LoadedModel:
    return tiny_model("llama", seed=0)


@pytest.fixture(scope="module")
def planted(lm: LoadedModel, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Base = the tiny model with a zero planted bias (same config as the students);
    main students plant a·v at PLANT_LAYER, control students a·u (u ⟂-ish random, same norm)."""
    root = tmp_path_factory.mktemp("planted")
    v, u = _unit(lm.hidden_size, 1), _unit(lm.hidden_size, 2)
    for name, direction in (("main", v), ("control", u)):
        for k, a in enumerate(SCALES, start=1):
            m = plant_vector(lm, PLANT_LAYER, a * direction)
            m.model.save_pretrained(root / name / f"checkpoint-{10 * k}")
    base = plant_vector(lm, PLANT_LAYER, 0 * v)
    vec = SteeringVector({layer: v.clone() for layer in range(lm.n_layers)})
    return {"root": root, "base": base, "v": v, "u": u, "vec": vec}


@pytest.fixture(scope="module")
def planted_track(planted: dict[str, Any]) -> AlignmentTrack:
    root = planted["root"]
    return track_checkpoints(
        planted["base"],
        root / "main",
        planted["vec"],
        PROMPTS,
        control=root / "control",
        cache_dir=False,
        **FAST,
    )


def test_planted_vector_is_recovered_at_its_layer(planted_track: AlignmentTrack) -> None:
    tr = planted_track
    assert tr.steps() == [0, 10, 20, 30]
    L = tr.layers.index(PLANT_LAYER)
    eas, proj, norm = tr.eas(), tr.proj(), tr.norm()
    # step 0 is the base itself: no shift
    assert np.all(norm[0] == 0) and np.all(eas[0] == 0)
    for r, a in enumerate(SCALES, start=1):
        # below the planted layer nothing changes; at it, the shift is exactly a·v
        assert np.all(norm[r, :L] < 1e-6)
        assert eas[r, L] == pytest.approx(1.0, abs=1e-5)
        assert proj[r, L] == pytest.approx(a, rel=1e-4)
        assert norm[r, L] == pytest.approx(a, rel=1e-4)
        # the first layer with a large shift is the planted one
        assert int(np.argmax(norm[r] > 0.1 * a)) == L
        # above it the residual stream carries a·v on, partly mixed: still strongly aligned
        assert np.all(eas[r, L + 1 :] > 0.8)
    # projection rises with the planted scale, at the planted layer and above
    assert np.all(np.diff(proj[1:, L:], axis=0) > 0)
    # propagated alignment gets cleaner as the planted term dominates the block outputs
    assert np.all(np.diff(eas[1:, L + 1 :], axis=0) > 0)
    sig = tr.significant()
    assert sig[1:, L:].all() and not sig[:, :L].any() and not sig[0].any()
    assert tr.best_layer("eas") == PLANT_LAYER


def test_control_series_and_excess_alignment(planted_track: AlignmentTrack) -> None:
    tr = planted_track
    L = tr.layers.index(PLANT_LAYER)
    ctrl = tr.eas("control")
    # the control plants an unrelated direction: |cos| of the order of 1/sqrt(d)
    assert np.all(np.abs(ctrl[1:, L]) < 0.5)
    ex = tr.excess
    assert ex is not None and ex.steps == [10, 20, 30]
    assert np.allclose(ex.estimate, tr.eas()[1:] - ctrl[1:], atol=1e-9)
    # every prompt's shift at the planted layer is exactly a·v: a degenerate (exact) CI
    assert np.all(ex.lo[:, L] > 0.4) and np.all(ex.p[:, L] < 0.01)
    assert np.all(ex.lo[:, L] <= ex.estimate[:, L] + 1e-12)
    assert np.all(ex.hi[:, L] >= ex.estimate[:, L] - 1e-12)
    assert tr.best_layer() in tr.layers  # by excess when a control exists
    assert np.all(tr.norm("control")[1:, L] == pytest.approx(np.array(SCALES), rel=1e-4))


def test_track_json_roundtrip_and_summary(planted_track: AlignmentTrack, tmp_path: Path) -> None:
    path = planted_track.save(tmp_path / "track.json")
    back = AlignmentTrack.load(path)
    for name in ("main", "control"):
        for key in ("eas", "proj", "norm", "p_adj", "z_iso", "p_cov"):
            a, b = planted_track.metric(key, name), back.metric(key, name)
            assert np.array_equal(np.isnan(a), np.isnan(b))
            assert np.allclose(a[~np.isnan(a)], b[~np.isnan(b)])
    assert back.excess is not None and planted_track.excess is not None
    assert np.allclose(back.excess.lo, planted_track.excess.lo)
    js = json.loads(path.read_text())
    fp = planted_track.provenance["base"]["fingerprint"]
    assert js["provenance"]["base"]["fingerprint"] == fp
    assert js["settings"]["null_span"] == "base"
    text = planted_track.summary()
    assert "excess" in text and f"{PLANT_LAYER:>10d}" in text
    assert planted_track.final("eas")[PLANT_LAYER] == pytest.approx(1.0, abs=1e-5)


def test_track_from_json_roundtrip_and_html(planted_track: AlignmentTrack, tmp_path: Path) -> None:
    d = planted_track.to_json()
    back = AlignmentTrack.from_json(json.loads(json.dumps(d)))
    assert back.to_json() == json.loads(json.dumps(d))
    assert back.layers == planted_track.layers and back.settings == planted_track.settings
    for name in ("main", "control"):
        a, b = planted_track.series[name], back.series[name]
        assert a.steps == b.steps and a.paths == b.paths and a.first_block == b.first_block
        assert np.array_equal(a.eas, b.eas, equal_nan=True)
        assert np.array_equal(a.p_adj, b.p_adj, equal_nan=True)
        assert SeriesTrack.from_json(a.to_json()).to_json() == a.to_json()
    ex, ex_back = planted_track.excess, back.excess
    assert ex is not None and ex_back is not None
    assert np.array_equal(ex.estimate, ex_back.estimate, equal_nan=True)
    assert ExcessAlignment.from_json(ex.to_json()).to_json() == ex.to_json()
    assert d["kind"] == "steerlens.AlignmentTrack"  # the layout earlier releases wrote
    assert {"replay_start_block", "seconds"} <= set(d["provenance"])
    html = planted_track._repr_html_()
    assert "<table>" in html and "<th>EAS</th>" in html and "<th>excess</th>" in html
    assert html.count("<tr>") == 1 + len(planted_track.layers)
    assert "excess alignment" in ex.summary() and "main" in planted_track.series["main"].summary()
    assert str(planted_track) == planted_track.summary()
    path = planted_track.save(tmp_path / "t.json")
    assert AlignmentTrack.load(path).to_json() == back.to_json()
    with pytest.raises(ValueError, match=r"not 'steerlens\.SeriesTrack'"):
        SeriesTrack.load(path)


def test_random_plants_are_not_flagged_beyond_alpha(lm: LoadedModel, tmp_path: Path) -> None:
    """20 students each plant a random direction (norm 1) at a random layer; the teacher is an
    unrelated random vector. Flagged students (any layer, Holm-corrected, alpha 0.05) must stay
    near the nominal rate: P(X >= 4 | n=20, p=0.05) ≈ 0.016."""
    gen = torch.Generator().manual_seed(7)
    plants: list[tuple[int, torch.Tensor]] = []
    base = plant_vector(lm, 0, torch.zeros(lm.hidden_size))
    for k in range(20):
        layer = int(torch.randint(0, lm.n_layers, (1,), generator=gen))
        u = _unit(lm.hidden_size, 1000 + k)
        plants.append((layer, u))
        plant_vector(lm, layer, u).model.save_pretrained(tmp_path / f"checkpoint-{k + 1}")
    teacher = SteeringVector(
        {layer: _unit(lm.hidden_size, 5000 + layer) for layer in range(lm.n_layers)}
    )
    tr = track_checkpoints(base, tmp_path, teacher, PROMPTS, cache_dir=False, n_null=300, n_boot=10)
    flagged = tr.significant()[1:].any(axis=1)
    assert flagged.sum() <= 3
    # the test has power: a student tracked against its own planted direction is flagged at
    # the planted layer
    layer, u = plants[0]
    own = SteeringVector({k: u.clone() for k in range(lm.n_layers)})
    one = CheckpointSeries.from_paths([tmp_path / "checkpoint-1"])
    tr_own = track_checkpoints(base, one, own, PROMPTS, cache_dir=False, n_null=300, n_boot=10)
    assert tr_own.significant()[1, layer]


def test_cov_null_matches_span_directions() -> None:
    g = torch.Generator().manual_seed(0)
    v = torch.randn(32, generator=g, dtype=torch.float64)
    for m in (8, 50):  # fewer rows than columns (Gram path) and more
        rows = torch.randn(m, 32, generator=g, dtype=torch.float64)
        fast = cov_null_cosines(v, rows, 200, seed=3)
        ref = stats.cosines(v, stats.span_directions(rows, 200, seed=3))
        assert torch.allclose(fast, ref, atol=1e-5)


@pytest.mark.parametrize(("n", "d"), [(12, 16), (20, 8)])  # Gram path and direct path
def test_excess_bootstrap_matches_stats_bootstrap(n: int, d: int) -> None:
    g = torch.Generator().manual_seed(1)
    main = torch.randn(n, d, generator=g, dtype=torch.float64) + 0.5
    ctrl = torch.randn(n, d, generator=g, dtype=torch.float64)
    vt = torch.randn(d, generator=g, dtype=torch.float64)

    def stat(idx: np.ndarray) -> float:
        t = torch.from_numpy(np.asarray(idx))
        cm = torch.nn.functional.cosine_similarity(main[t].mean(0), vt, dim=0)
        cc = torch.nn.functional.cosine_similarity(ctrl[t].mean(0), vt, dim=0)
        return float(cm - cc)

    ref = stats.bootstrap(stat, n, n_boot=300, seed=4)
    got = excess_bootstrap(main, ctrl, vt, n_boot=300, seed=4)
    assert got["estimate"] == pytest.approx(ref["estimate"], abs=1e-10)
    assert got["lo"] == pytest.approx(ref["lo"], abs=1e-10)
    assert got["hi"] == pytest.approx(ref["hi"], abs=1e-10)
    assert got["lo"] < got["estimate"] < got["hi"]


def _perturbed(lm: LoadedModel, from_block: int, seed: int) -> LoadedModel:
    """A copy of ``lm`` with noise added to every parameter of blocks ``from_block`` and up."""
    import copy

    from steerlens.core.sites import find_layers

    m = copy.deepcopy(lm.model)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for block in find_layers(m).blocks[from_block:]:
            for p in block.parameters():
                p.add_(0.05 * torch.randn(p.shape, generator=gen))
    return LoadedModel(m, lm.tokenizer, "perturbed")


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gpt2"])
@pytest.mark.parametrize("position", ["last", "prompt"])
def test_replay_fast_path_matches_full_forward(arch: str, position: str) -> None:
    lm = tiny_model(arch, seed=1)
    prompts = [
        ChatPrompt(p, system="Be brief." if i % 2 else None) for i, p in enumerate(PROMPTS[:10])
    ]
    encs = [encode(lm.tokenizer, p) for p in prompts]
    batches = length_batches(encs, 4)  # several batches, padding inside each
    layers = [1, 2, 3]
    rows, inputs = base_pass(lm, encs, batches, layers, position, capture_from=2)
    assert inputs is not None and inputs.start == 2
    ref = record_activations(lm, prompts, layers, position, batch_size=4, keep_rows=True)
    assert ref.rows is not None
    for layer in layers:
        assert torch.allclose(rows[layer], ref.rows[layer], atol=1e-5)
    student = _perturbed(lm, 2, seed=5)
    got = replay_rows(student, inputs, encs, layers, position, rows)
    want = record_activations(student, prompts, layers, position, batch_size=4, keep_rows=True)
    assert want.rows is not None
    for layer in layers:
        assert torch.allclose(got[layer], want.rows[layer], atol=1e-5)
    assert not torch.allclose(got[3], rows[3], atol=1e-3)  # the student differs


@pytest.fixture(scope="module")
def adapters(lm: LoadedModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("adapters")
    save_adapters(lm, root / "ad", [1, 2, 3, 4], layers=[2, 3], merged_root=root / "full")
    return root


def test_adapter_series_equals_merged_full_checkpoints(lm: LoadedModel, adapters: Path) -> None:
    vec = SteeringVector({layer: _unit(lm.hidden_size, 40 + layer) for layer in range(4)})
    before = {n: p.detach().clone() for n, p in lm.model.named_parameters()}
    fast = track_checkpoints(lm, adapters / "ad", vec, PROMPTS, cache_dir=False, **FAST)
    full = track_checkpoints(lm, adapters / "full", vec, PROMPTS, cache_dir=False, **FAST)
    plain = track_checkpoints(
        lm, adapters / "ad", vec, PROMPTS, cache_dir=False, skip_unchanged_blocks=False, **FAST
    )
    assert fast.provenance["replay_start_block"] == 2
    assert fast.series["main"].first_block[1:] == [2, 2, 2, 2]
    assert plain.provenance["replay_start_block"] is None
    for key in ("eas", "proj", "norm"):
        assert np.allclose(fast.metric(key), full.metric(key), atol=1e-5)
        assert np.allclose(fast.metric(key), plain.metric(key), atol=1e-6)
    assert np.all(fast.norm()[1:, :2] == 0)  # unadapted layers: exactly no shift
    assert np.all(fast.norm()[1:, 2:] > 1e-3)
    assert all(torch.equal(before[n], p) for n, p in lm.model.named_parameters())


def _counting(monkeypatch: pytest.MonkeyPatch, fail_after: int | None = None) -> list[int]:
    calls: list[int] = []
    real: Callable[..., Any] = track_core.checkpoint_rows

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if fail_after is not None and len(calls) >= fail_after:
            raise KeyboardInterrupt
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(track_core, "checkpoint_rows", wrapped)
    return calls


def test_cache_resumes_and_recomputes_corrupt_entries(
    lm: LoadedModel, adapters: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    vec = SteeringVector({layer: _unit(lm.hidden_size, 60 + layer) for layer in range(4)})
    kw: dict[str, Any] = {"cache_dir": tmp_path / "cache", **FAST}
    ref = track_checkpoints(lm, adapters / "ad", vec, PROMPTS, cache_dir=False, **FAST)
    with monkeypatch.context() as mp:  # interrupted after two checkpoints
        calls = _counting(mp, fail_after=2)
        with pytest.raises(KeyboardInterrupt):
            track_checkpoints(lm, adapters / "ad", vec, PROMPTS, **kw)
        assert len(calls) == 2
    with monkeypatch.context() as mp:  # resume: only the two missing ones are computed
        calls = _counting(mp)
        resumed = track_checkpoints(lm, adapters / "ad", vec, PROMPTS, **kw)
        assert len(calls) == 2
        assert resumed.provenance["computed"]["main"] == [3, 4]
    with monkeypatch.context() as mp:  # complete: nothing is computed
        calls = _counting(mp)
        again = track_checkpoints(lm, adapters / "ad", vec, PROMPTS, **kw)
        assert len(calls) == 0
    for t in (resumed, again):
        for key in ("eas", "proj", "norm", "p_adj"):
            assert np.array_equal(t.metric(key), ref.metric(key))
    entries = sorted((tmp_path / "cache").glob("*.json"))
    assert len(entries) == 5  # base + 4 checkpoints
    # corrupt three entries three ways: truncated rows, wrong key, missing JSON (partial write)
    metas = {p: json.loads(p.read_text()) for p in entries}
    ckpt_entries = [p for p, m in metas.items() if m["key"]["checkpoint"] != "base"]
    st = ckpt_entries[0].with_suffix(".safetensors")
    st.write_bytes(st.read_bytes()[:-100])
    bad = metas[ckpt_entries[1]]
    bad["key"]["prompts"] = "0000"
    ckpt_entries[1].write_text(json.dumps(bad))
    ckpt_entries[2].unlink()
    with monkeypatch.context() as mp:
        calls = _counting(mp)
        with pytest.warns(UserWarning, match="corrupt cache entry"):
            fixed = track_checkpoints(lm, adapters / "ad", vec, PROMPTS, **kw)
        assert len(calls) == 3
    assert np.array_equal(fixed.metric("eas"), ref.metric("eas"))
    # a different prompt set is a different key: computed afresh, not reused
    with monkeypatch.context() as mp:
        calls = _counting(mp)
        track_checkpoints(lm, adapters / "ad", vec, PROMPTS[:8], **kw)
        assert len(calls) == 4


def test_trait_duck_typing_and_input_errors(lm: LoadedModel, adapters: Path) -> None:
    class Trait:
        def probe_chats(self, system: str | None = None) -> list[ChatPrompt]:
            assert system is None
            return [ChatPrompt(p) for p in PROMPTS[:6]]

    vec = SteeringVector({2: _unit(lm.hidden_size, 1), 3: _unit(lm.hidden_size, 2)})
    a = track_checkpoints(lm, adapters / "ad", vec, Trait(), cache_dir=False, **FAST)
    b = track_checkpoints(
        lm, adapters / "ad", vec, [ChatPrompt(p) for p in PROMPTS[:6]], cache_dir=False, **FAST
    )
    assert a.layers == [2, 3] and np.array_equal(a.eas(), b.eas())
    small = SteeringVector({1: torch.ones(32)})
    with pytest.raises(ValueError, match="hidden size mismatch"):
        track_checkpoints(lm, adapters / "ad", small, PROMPTS, cache_dir=False)
    deep = SteeringVector({7: torch.ones(lm.hidden_size)})
    with pytest.raises(ValueError, match=r"layer count mismatch.*4 blocks"):
        track_checkpoints(lm, adapters / "ad", deep, PROMPTS, cache_dir=False)
    with pytest.raises(ValueError, match="empty prompt set"):
        track_checkpoints(lm, adapters / "ad", vec, [], cache_dir=False)


@pytest.mark.integration
def test_smollm2_adapter_replay_matches_plain_path(smol: LoadedModel, tmp_path: Path) -> None:
    """On the real model: LoRA adapters on blocks 20-29, replay from block 20 equals full
    truncated forwards, blocks below show exactly no shift, and the base is left untouched."""
    from peft import LoraConfig
    from safetensors.torch import save_file

    from steerlens.loading.models import model_fingerprint

    # adapter files written directly (random A and B), no copy of the 135M base needed
    blocks = smol.layout.blocks
    for k in (1, 2):
        gen = torch.Generator().manual_seed(k)
        tensors = {}
        for i in range(20, 30):
            for sub in ("self_attn.q_proj", "mlp.down_proj"):
                lin = blocks[i].get_submodule(sub)
                pre = f"base_model.model.model.layers.{i}.{sub}"
                tensors[f"{pre}.lora_A.weight"] = 0.05 * torch.randn(
                    4, lin.in_features, generator=gen
                )
                tensors[f"{pre}.lora_B.weight"] = 0.05 * torch.randn(
                    lin.out_features, 4, generator=gen
                )
        folder = tmp_path / f"checkpoint-{k}"
        LoraConfig(
            r=4, target_modules=["q_proj", "down_proj"], layers_to_transform=list(range(20, 30))
        ).save_pretrained(str(folder))
        save_file(tensors, str(folder / "adapter_model.safetensors"))
    fp = model_fingerprint(smol.model)
    prompts = [ChatPrompt(f"Continue: {k}, {k + 3}, {k + 9}") for k in range(4)]
    vec = SteeringVector({layer: _unit(smol.hidden_size, layer) for layer in (10, 21, 22)})
    fast = track_checkpoints(smol, tmp_path, vec, prompts, cache_dir=False, **FAST)
    plain = track_checkpoints(
        smol, tmp_path, vec, prompts, cache_dir=False, skip_unchanged_blocks=False, **FAST
    )
    assert fast.provenance["replay_start_block"] == 20
    assert np.all(fast.norm()[:, 0] == 0) and np.all(fast.norm()[1:, 1:] > 0)
    for key in ("eas", "proj", "norm"):
        assert np.allclose(fast.metric(key), plain.metric(key), atol=1e-5, rtol=1e-5)
    assert model_fingerprint(smol.model) == fp
