"""steerlens.integrations: the TrainerCallback tracks live what track_checkpoints finds post hoc
(DESIGN.md "Tracking inside a training run"); chats as HF datasets."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from steerlens.models import LoadedModel
from steerlens.testing import tiny_model
from steerlens.track import AlignmentTrack, track_checkpoints
from steerlens.vectors import SteeringVector

pytest.importorskip("trl")
pytest.importorskip("datasets")

PROMPTS = [f"Continue: {i}, {(i * 7) % 13}, {(i * 3) % 11}" for i in range(12)]
NULLS = {"n_null": 200}


def _chats(n: int = 16) -> list[dict[str, Any]]:
    rows = []
    for i in range(n):
        q = f"Continue: {i}, {(i * 5) % 17}, {(i * 3) % 11}"
        a = ", ".join(str((i * k) % 97) for k in range(2, 7))
        rows.append(
            {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
        )
    return rows


def _unit(d: int, seed: int) -> torch.Tensor:
    v = torch.randn(d, generator=torch.Generator().manual_seed(seed))
    return v / v.norm()


@pytest.fixture(scope="module")
def lm() -> LoadedModel:
    return tiny_model("llama", seed=0)


def _sft(lm: LoadedModel, out: Path, callback: Any, *, peft: bool, steps: int = 4) -> Any:
    from datasets import Dataset
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    args = SFTConfig(
        output_dir=str(out),
        max_steps=steps,
        save_steps=2,
        per_device_train_batch_size=4,
        learning_rate=2e-2,
        logging_steps=1,
        report_to=[],
        use_cpu=True,
        seed=0,
        max_length=64,
        save_only_model=False,
        dataloader_num_workers=0,
    )
    peft_config = (
        LoraConfig(
            r=4,
            lora_alpha=8,
            target_modules=["q_proj", "v_proj", "down_proj"],
            layers_to_transform=[1, 2, 3],
        )
        if peft
        else None
    )
    trainer = SFTTrainer(
        model=copy.deepcopy(lm.model),
        args=args,
        train_dataset=Dataset.from_list(_chats()),
        processing_class=lm.tokenizer,
        peft_config=peft_config,
    )
    callback.attach(trainer)
    trainer.train()
    return trainer


@pytest.mark.parametrize("peft", [True, False], ids=["lora", "full"])
def test_callback_track_equals_post_hoc_track(lm: LoadedModel, tmp_path: Path, peft: bool) -> None:
    from steerlens.integrations import TRACK_NAME, SteerlensCallback

    vec = SteeringVector({layer: _unit(lm.hidden_size, 40 + layer) for layer in range(4)})
    cb = SteerlensCallback(vec, PROMPTS, **NULLS)
    trainer = _sft(lm, tmp_path, cb, peft=peft)
    live = AlignmentTrack.load(tmp_path / TRACK_NAME)
    post = track_checkpoints(lm, tmp_path, vec, PROMPTS, cache_dir=False, n_boot=10, **NULLS)
    assert live.steps() == post.steps() == [0, 2, 4]
    assert np.all(post.norm()[1:, 1:] > 0)  # training moved the student
    if peft:  # blocks 1.. replayed on the base's captured inputs; block 0 exactly the base's
        assert cb.start == 1 and cb.inputs is not None and live.settings["fast"]
        assert np.all(live.norm()[:, 0] == 0) and np.all(post.norm()[:, 0] == 0)
    else:
        assert cb.start == 0 and cb.inputs is None
    for key in ("eas", "proj", "norm"):
        assert np.allclose(live.metric(key), post.metric(key), rtol=1e-4, atol=1e-5), key
    assert np.allclose(live.metric("p_adj"), post.metric("p_adj"), atol=0.02)
    # logged through the trainer: the EAS per layer at each save
    logged = [h for h in trainer.state.log_history if "steerlens/eas/L1" in h]
    assert [h["step"] for h in logged] == [2, 4]
    assert logged[-1]["steerlens/eas/L1"] == pytest.approx(float(post.eas()[-1, 1]), abs=1e-5)
    assert set(cb.seconds["saves"]) == {2, 4}
