"""CheckpointSeries: discovery, validation, adapter swapping over one base, full reuse."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from steerlens.checkpoints import (
    Checkpoint,
    CheckpointSeries,
    first_changed_block,
)
from steerlens.loading.models import LoadedModel, ModelLoadError, load_model
from steerlens.testing import plant_vector, tiny_model


@pytest.fixture(scope="module")
def base() -> LoadedModel:
    return tiny_model("llama", seed=3)


def _lora(lm: LoadedModel, seed: int, layers: list[int] | None = None) -> torch.nn.Module:
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(
        r=4,
        target_modules=["q_proj", "v_proj", "down_proj"],
        layers_to_transform=layers,
        init_lora_weights=False,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return get_peft_model(copy.deepcopy(lm.model), cfg)


def save_adapters(
    lm: LoadedModel,
    root: Path,
    steps: list[int],
    layers: list[int] | None = None,
    merged_root: Path | None = None,
) -> None:
    """LoRA adapters with random A and B (so they change activations) as checkpoint-N, and
    optionally the same adapters merged into full checkpoints."""
    for k, step in enumerate(steps):
        pm = _lora(lm, 100 + k, layers)
        pm.save_pretrained(root / f"checkpoint-{step}")
        if merged_root is not None:
            pm.merge_and_unload().save_pretrained(merged_root / f"checkpoint-{step}")


def _logits(lm: LoadedModel) -> torch.Tensor:
    ids = torch.tensor([[5, 9, 40, 77, 3, 120]])
    with torch.inference_mode():
        return lm.model(input_ids=ids).logits.clone()


def _snapshot(model: torch.nn.Module) -> dict[str, object]:
    return {
        "modules": [(n, type(m).__name__) for n, m in model.named_modules()],
        "params": {
            n: (p.data_ptr(), p.detach().clone(), p.requires_grad)
            for n, p in model.named_parameters()
        },
        "training": {n: m.training for n, m in model.named_modules()},
        "attrs": sorted(vars(model)),
        "config": model.config.to_dict(),
    }


def _same_snapshot(a: dict[str, object], b: dict[str, object]) -> bool:
    pa, pb = a["params"], b["params"]
    assert isinstance(pa, dict) and isinstance(pb, dict)
    return (
        a["modules"] == b["modules"]
        and a["training"] == b["training"]
        and a["attrs"] == b["attrs"]
        and a["config"] == b["config"]
        and pa.keys() == pb.keys()
        and all(
            pa[k][0] == pb[k][0] and torch.equal(pa[k][1], pb[k][1]) and pa[k][2] == pb[k][2]
            for k in pa
        )
    )


def test_discover_orders_numerically_and_classifies(base: LoadedModel, tmp_path: Path) -> None:
    for step in (10, 2, 1):
        base.model.save_pretrained(tmp_path / f"checkpoint-{step}")
    save_adapters(base, tmp_path, [30])
    (tmp_path / "logs").mkdir()  # unrelated folders are ignored
    series = CheckpointSeries.discover(tmp_path)
    assert series.steps == [1, 2, 10, 30]
    assert [c.kind for c in series] == ["full", "full", "full", "adapter"]
    assert series.by_step(0).kind == "base"
    with pytest.raises(KeyError, match="no checkpoint at step 7"):
        series.by_step(7)


def test_discover_single_model_or_adapter_folder(base: LoadedModel, tmp_path: Path) -> None:
    base.model.save_pretrained(tmp_path / "final")
    (tmp_path / "final" / "trainer_state.json").write_text(json.dumps({"global_step": 42}))
    s = CheckpointSeries.discover(tmp_path / "final")
    assert len(s) == 1 and s[0].kind == "full" and s[0].step == 42
    save_adapters(base, tmp_path / "ad", [5])
    s2 = CheckpointSeries.discover(tmp_path / "ad" / "checkpoint-5")
    assert s2[0].kind == "adapter" and s2[0].step == 5


def test_discover_errors_name_the_path_and_fix(base: LoadedModel, tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        CheckpointSeries.discover(tmp_path / "nope")
    with pytest.raises(ModelLoadError, match="no checkpoint-N subfolders"):
        CheckpointSeries.discover(tmp_path)
    (tmp_path / "checkpoint-3").mkdir()
    base.model.save_pretrained(tmp_path / "checkpoint-4")
    with pytest.raises(ModelLoadError, match=r"checkpoint-3.*neither a model"):
        CheckpointSeries.discover(tmp_path)
    with pytest.warns(UserWarning, match="checkpoint-3"):
        s = CheckpointSeries.discover(tmp_path, on_error="skip")
    assert s.steps == [4]


def test_corrupt_checkpoints_raise_clear_errors(base: LoadedModel, tmp_path: Path) -> None:
    base.model.save_pretrained(tmp_path / "checkpoint-1")
    base.model.save_pretrained(tmp_path / "checkpoint-2")
    weights = tmp_path / "checkpoint-2" / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])  # truncated
    with pytest.raises(ModelLoadError, match=r"truncated weights file .*checkpoint-2.*Re-save"):
        CheckpointSeries.discover(tmp_path)
    with pytest.warns(UserWarning, match="skipping"):
        assert CheckpointSeries.discover(tmp_path, on_error="skip").steps == [1]
    (tmp_path / "checkpoint-1" / "config.json").write_text("{not json")
    weights.write_bytes(data)
    with pytest.raises(ModelLoadError, match=r"unreadable config.json in .*checkpoint-1"):
        CheckpointSeries.discover(tmp_path)


def test_adapter_swap_matches_merged_and_restores_base(base: LoadedModel, tmp_path: Path) -> None:
    save_adapters(base, tmp_path, [1, 2, 3])
    series = CheckpointSeries.discover(tmp_path)
    before = _snapshot(base.model)
    logits_before = _logits(base)
    outs = []
    with series.open(base) as load:
        for ck in series:
            m = load(ck)
            outs.append(_logits(m))
            # one adapter in memory at a time: the previous one was deleted
            names = {k for mod in m.model.modules() if hasattr(mod, "lora_A") for k in mod.lora_A}
            assert len(names) == 1
        assert torch.equal(_logits(load(0)), logits_before)  # step 0 is the base itself
        m = load(series[0])
        assert torch.allclose(_logits(m), outs[0], atol=1e-6)
    for ck, out in zip(series, outs, strict=True):
        merged = load_model(ck.path, base=base)  # independent path: PEFT merge into a copy
        assert torch.allclose(out, _logits(merged), atol=1e-5)
    assert not torch.allclose(outs[0], outs[1], atol=1e-3)  # the adapters do change outputs
    assert _same_snapshot(before, _snapshot(base.model))
    assert torch.equal(_logits(base), logits_before)


def test_base_restored_after_an_exception(base: LoadedModel, tmp_path: Path) -> None:
    save_adapters(base, tmp_path, [1])
    series = CheckpointSeries.discover(tmp_path)
    before = _snapshot(base.model)
    with pytest.raises(RuntimeError, match="boom"), series.open(base) as load:
        load(series[0])
        raise RuntimeError("boom")
    assert _same_snapshot(before, _snapshot(base.model))


def test_full_checkpoints_reuse_one_copy(base: LoadedModel, tmp_path: Path) -> None:
    v = torch.zeros(base.hidden_size)
    v[3] = 1.0
    for k in range(1, 4):
        plant_vector(base, 1, k * v).model.save_pretrained(tmp_path / f"checkpoint-{k}")
    series = CheckpointSeries.discover(tmp_path)
    before = _snapshot(base.model)
    objs, outs = [], []
    with series.open(base) as load:
        for ck in series:
            m = load(ck)
            objs.append(m.model)
            outs.append(_logits(m))
    assert objs[0] is objs[1] is objs[2]  # weights loaded into one reused model
    from transformers import AutoModelForCausalLM

    for ck, out in zip(series, outs, strict=True):
        ref = AutoModelForCausalLM.from_pretrained(ck.path).eval()
        assert torch.equal(out, _logits(LoadedModel(ref, base.tokenizer, "ref")))
    assert _same_snapshot(before, _snapshot(base.model))


def test_full_checkpoint_with_missing_weights_is_refused(base: LoadedModel, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    for k in (1, 2):
        base.model.save_pretrained(tmp_path / f"checkpoint-{k}")
    f = tmp_path / "checkpoint-2" / "model.safetensors"
    state = load_file(str(f))
    state.pop("model.layers.1.mlp.up_proj.weight")
    save_file(state, str(f), metadata={"format": "pt"})
    series = CheckpointSeries.discover(tmp_path)
    with series.open(base) as load:
        load(series[0])
        with pytest.raises(ModelLoadError, match=r"lacks weights.*up_proj"):
            load(series[1])


def test_first_changed_block(base: LoadedModel, tmp_path: Path) -> None:
    save_adapters(base, tmp_path / "ad", [1], layers=[2, 3], merged_root=tmp_path / "full")
    ad = CheckpointSeries.discover(tmp_path / "ad")[0]
    full = CheckpointSeries.discover(tmp_path / "full")[0]
    assert first_changed_block(base, ad) == 2
    assert first_changed_block(base, full) == 2
    base.model.save_pretrained(tmp_path / "same")
    same = Checkpoint(1, tmp_path / "same", "full")
    assert first_changed_block(base, same) == base.n_layers
    plant_vector(base, 1, torch.ones(base.hidden_size)).model.save_pretrained(tmp_path / "pl")
    assert first_changed_block(base, Checkpoint(1, tmp_path / "pl", "full")) == 0  # new config
    emb = copy.deepcopy(base.model)
    with torch.no_grad():
        emb.get_input_embeddings().weight[7] += 1.0
    emb.save_pretrained(tmp_path / "emb")
    assert first_changed_block(base, Checkpoint(1, tmp_path / "emb", "full")) == 0


def test_checkpoint_of_another_shape_is_refused(base: LoadedModel, tmp_path: Path) -> None:
    tiny_model("llama", seed=3, n_layers=2).model.save_pretrained(tmp_path / "checkpoint-1")
    series = CheckpointSeries.discover(tmp_path)
    with series.open(base) as load, pytest.raises(ModelLoadError, match=r"2 blocks.*base"):
        load(series[0])
