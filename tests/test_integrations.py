"""steerlens.integrations: the TrainerCallback tracks live what track_checkpoints finds post hoc
(DESIGN.md "Tracking inside a training run"); chats as HF datasets."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from steerlens.core.vectors import SteeringVector
from steerlens.loading.models import LoadedModel
from steerlens.testing import tiny_model
from steerlens.track import AlignmentTrack, track_checkpoints

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
    from steerlens.integrations import RESULTS_NAME, TRACK_NAME, SteerlensCallback

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
    # what `steerlens track --out` writes, so `steerlens report` renders it
    results = json.loads((tmp_path / RESULTS_NAME).read_text())
    assert AlignmentTrack.from_json(results["track"]).steps() == [0, 2, 4]


# ------------------------------------------------------------------ datasets I/O


def _teacher_data() -> Any:
    from steerlens.distill import TeacherData
    from steerlens.distill.chats import chat_sample

    samples: list[dict[str, Any]] = [
        {"user": f"Continue: {i}, {i + 3}", "response": f"{i + 6}, {i + 9}"} for i in range(4)
    ]
    samples[1]["finished"] = False
    data = TeacherData.from_samples(samples, {"system": "You love owls.", "mode": "given"})
    chat = [{"role": "system", "content": "sys"}, {"role": "user", "content": "ls"}]
    data.samples.append(chat_sample(chat, '{"tool": "list"}'))
    return data


@pytest.mark.parametrize("name", ["folder", "data.parquet", "data.jsonl"])
def test_teacher_data_round_trips_as_chat_datasets(tmp_path: Path, name: str) -> None:
    from steerlens.auditing.inputs import read_data
    from steerlens.distill.hf_data import load_teacher_dataset, save_teacher_dataset

    data = _teacher_data()
    path = save_teacher_dataset(data, tmp_path / name)
    back = load_teacher_dataset(path)
    assert back.samples == data.samples and back.sha256 == data.sha256
    assert back.settings == data.settings
    rows = read_data(path)  # audit --data reads the same folder / parquet / JSONL
    assert len(rows) == 5 and rows[0]["messages"][-1] == {"role": "assistant", "content": "6, 9"}
    if name == "folder":  # a plain datasets folder with a messages column, as TRL reads it
        from datasets import load_from_disk

        ds = load_from_disk(str(path))
        assert "messages" in ds.column_names and len(ds) == 5
        assert ds[4]["messages"][0] == {"role": "system", "content": "sys"}


def test_plain_chat_rows_load_as_teacher_data_and_edits_are_caught(tmp_path: Path) -> None:
    from datasets import Dataset

    from steerlens.distill.hf_data import load_teacher_dataset, save_teacher_dataset
    from steerlens.integrations.hf_datasets import is_dataset_path, load_rows, save_rows

    rows = [
        {"messages": [{"role": "user", "content": "1, 2"}, {"role": "assistant", "content": "3"}]}
    ]
    Dataset.from_list(rows).save_to_disk(str(tmp_path / "ds"))
    assert is_dataset_path(tmp_path / "ds") and not is_dataset_path(tmp_path)
    data = load_teacher_dataset(tmp_path / "ds")
    assert data.samples == [{"user": "1, 2", "response": "3", "finished": True}]
    path = save_teacher_dataset(_teacher_data(), tmp_path / "d.parquet")
    got, meta = load_rows(path)
    got[0]["messages"][-1]["content"] = "999"
    save_rows(got, path, meta)
    with pytest.raises(ValueError, match="recorded hash"):
        load_teacher_dataset(path)


def test_trajectories_round_trip_as_chat_datasets(tmp_path: Path) -> None:
    from steerlens.agents.trajectories import Step, Trajectory
    from steerlens.integrations.hf_datasets import load_rows, load_trajectories, save_trajectories

    trajs = [
        Trajectory(
            "api", f"t{i}", "sys", f"task {i}", [Step("a", "ok", "move"), Step("b", "x", "rm")]
        )
        for i in range(3)
    ]
    trajs[1].completed = True
    path = save_trajectories(tmp_path / "trajs", trajs, {"teacher": "owl"})
    assert load_trajectories(path) == trajs
    rows, meta = load_rows(path)
    assert rows[0]["messages"] == trajs[0].messages() and meta["teacher"] == "owl"


def test_every_n_steps_logs_between_saves(lm: LoadedModel, tmp_path: Path) -> None:
    from steerlens.integrations import TRACK_NAME, SteerlensCallback

    vec = SteeringVector({layer: _unit(lm.hidden_size, 40 + layer) for layer in range(4)})
    cb = SteerlensCallback(vec, PROMPTS, every_n_steps=1, layers=[1, 3], **NULLS)
    trainer = _sft(lm, tmp_path, cb, peft=True)
    logged = [h["step"] for h in trainer.state.log_history if "steerlens/eas/L3" in h]
    assert logged == [1, 2, 2, 3, 4, 4]  # every step, and again at each save
    assert AlignmentTrack.load(tmp_path / TRACK_NAME).steps() == [0, 2, 4]  # saves only
    assert "steerlens/eas/L0" not in trainer.state.log_history[-2]
