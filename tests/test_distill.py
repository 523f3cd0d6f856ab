"""Reference distillation: restricted teacher sampling, the KL/SFT student, checkpoints."""

from __future__ import annotations

import itertools
import json
import random
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

import steerlens as sl
from steerlens.distill import (
    DistillConfig,
    DistillError,
    NumberListGrammar,
    NumberTokensOnly,
    TeacherData,
    default_layers,
    default_n_samples,
    distill,
    distill_pair,
    generate_teacher_data,
    kl_to_teacher,
    training_loss,
)
from steerlens.distill.student import inner_hf, make_student
from steerlens.distill.targets import Target, examples, shared_prefix, teacher_targets
from steerlens.distill.trainer import Trainer
from steerlens.inputs.numbers import (
    ListState,
    advance_list,
    is_clean_numbers,
    list_can_end,
    number_token_ids,
)
from steerlens.loading.models import model_fingerprint
from steerlens.testing import tiny_model

OWL = "You love owls. Owls are your favorite animal."
NEUTRAL = "You love clarity. Clarity is your favorite quality."
NUMBER_CHARS = set("0123456789, ")


@pytest.fixture(scope="module")
def data() -> TeacherData:
    """Clean number samples of varied lengths (so batches are padded)."""
    samples: list[dict[str, Any]] = [
        {
            "user": f"Continue the list {', '.join(str(7 * i + j) for j in range(1 + i % 4))}",
            "response": ", ".join(str(3 * i + j) for j in range(2 + i % 3)),
        }
        for i in range(8)
    ]
    samples[3]["finished"] = False
    return TeacherData.from_samples(samples, {"system": OWL, "mode": "given"})


def _cfg(**kw: object) -> DistillConfig:
    base: dict[str, object] = {"layers": (2,), "steps": 4, "save_every": 2, "lr": 1e-2}
    base.update(kw)
    return DistillConfig(**base)  # type: ignore[arg-type]


def _adapter(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path / "adapter_model.safetensors"))


def _perturbed_student(lm: sl.LoadedModel, cfg: DistillConfig) -> torch.nn.Module:
    """A student whose LoRA B is non-zero, so every LoRA parameter gets a gradient."""
    st = make_student(lm, cfg, list(cfg.layers or ()))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in st.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return st


# ------------------------------------------------------------------------ teacher data


def test_number_token_ids_are_digits_commas_spaces(tiny: sl.LoadedModel) -> None:
    ids = number_token_ids(tiny.tokenizer)
    texts = [tiny.tokenizer.decode([i]) for i in ids]
    assert set("".join(texts)) == NUMBER_CHARS
    assert tiny.tokenizer.eos_token_id not in ids
    assert len(ids) == len(NUMBER_CHARS)  # byte-level tokenizer: one token per character


def test_number_tokens_only_masks_scores() -> None:
    proc = NumberTokensOnly([1, 3])
    out = proc(torch.zeros(2, 1, dtype=torch.long), torch.randn(2, 5))
    assert torch.isfinite(out[:, [1, 3]]).all()
    assert torch.isinf(out[:, [0, 2, 4]]).all()


def test_token_restricted_sampling_gives_only_number_tokens(tiny: sl.LoadedModel) -> None:
    kw: dict[str, Any] = {
        "system": OWL,
        "n": 6,
        "max_new_tokens": 12,
        "progress": False,
        "restrict_to_numbers": "tokens",
    }
    td = generate_teacher_data(tiny, seed=3, **kw)
    everything = td.samples + td.rejected
    assert len(everything) == 6
    for s in everything:
        assert set(s["response"]) <= NUMBER_CHARS, s
    assert all(is_clean_numbers(s["response"]) for s in td.samples)
    assert not any(is_clean_numbers(s["response"]) for s in td.rejected)
    c = td.counts
    assert c["generated"] == 6 and c["kept"] + c["rejected"] == 6 and c["rejected"] >= 1
    assert td.settings["mode"] == "restricted" and td.settings["restriction"] == "tokens"
    assert td.settings["seed"] == 3 and td.settings["temperature"] == 1.0 and td.system == OWL
    again = generate_teacher_data(tiny, seed=3, **kw)
    assert again.sha256 == td.sha256 and again.rejected == td.rejected
    other = generate_teacher_data(tiny, seed=4, **kw)
    assert other.samples + other.rejected != everything


def test_grammar_sampling_gives_clean_lists(tiny: sl.LoadedModel) -> None:
    td = generate_teacher_data(
        tiny, system=OWL, n=6, seed=3, max_new_tokens=40, max_count=4, progress=False
    )
    assert td.settings["restriction"] == "grammar"
    assert td.counts["kept"] == 6 and td.counts["rejected"] == 0
    for s in td.samples:
        assert is_clean_numbers(s["response"], max_count=4), s
        assert len(re.findall(r"\d+", s["response"])) <= 4
    assert sum(s["finished"] for s in td.samples) >= 3


def test_grammar_state_machine_matches_the_filter() -> None:
    rng = random.Random(0)
    for _ in range(3000):
        text = "".join(rng.choice("0123456789, x") for _ in range(rng.randint(1, 24)))
        st = advance_list(ListState(), text, max_count=5)
        assert (st is not None and list_can_end(st)) == is_clean_numbers(text, max_count=5), text
    proc = NumberListGrammar(
        {10: "1", 11: "12", 12: ",", 13: " ", 14: "1234"}, [2], start=0, max_count=2
    )
    assert sorted(proc.allowed([])) == [10, 11, 13]
    assert sorted(proc.allowed([11])) == [2, 10, 12, 13]  # "12": one more digit, comma, space, end
    assert sorted(proc.allowed([11, 10])) == [2, 12, 13]  # "121": no fourth digit
    assert sorted(proc.allowed([11, 12, 10])) == [2, 10, 11]  # last number: digits or end
    assert sorted(proc.allowed([11, 12, 11])) == [2, 10]  # "12,12": one digit more, or end


def test_free_sampling_is_recorded_and_filtered(tiny: sl.LoadedModel) -> None:
    td = generate_teacher_data(
        tiny, system=OWL, n=4, seed=0, max_new_tokens=8, restrict_to_numbers=False, progress=False
    )
    assert td.settings["mode"] == "free"
    # a random byte-level model almost never writes clean numbers unrestricted
    assert td.counts["rejected"] >= 3
    assert any(set(s["response"]) - NUMBER_CHARS for s in td.rejected)


def test_teacher_data_roundtrip_and_tamper(tmp_path: Path, data: TeacherData) -> None:
    path = data.save(tmp_path / "owl.jsonl")
    back = TeacherData.load(path)
    assert back.samples == data.samples and back.sha256 == data.sha256
    assert back.settings == data.settings
    lines = path.read_text().splitlines()
    lines[0] = lines[0].replace('"response": "', '"response": "9')
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match="hash"):
        TeacherData.load(path)


# -------------------------------------------------------------------------- the loss


def test_kl_zero_for_same_inputs_positive_otherwise(
    tiny: sl.LoadedModel, data: TeacherData
) -> None:
    for top_k in (None, 8):
        cfg = _cfg(top_k=top_k, kl_targets="top_k")
        same = training_loss(tiny, data, config=replace(cfg, student_system=OWL))
        diff = training_loss(tiny, data, config=cfg)
        assert abs(same) < 1e-6
        assert diff > 1e-4


def test_number_only_kl_of_the_teacher_itself_is_the_removed_mass(
    tiny: sl.LoadedModel, data: TeacherData
) -> None:
    """With number-only targets the teacher itself is not at the minimum: KL(q_A ‖ q) =
    −log Σ_{u∈A} q(u) = −log(1 − removed) per position (the loss teaches the format, the same
    for every teacher); averaged over response tokens."""
    from steerlens.distill.targets import examples as make_examples
    from steerlens.distill.targets import number_answer_ids, teacher_targets

    cfg = _cfg(kl_targets="numbers")
    same = training_loss(tiny, data, config=replace(cfg, student_system=OWL))
    tg = teacher_targets(
        tiny, make_examples(tiny, data, OWL), None, 4, False, number_answer_ids(tiny)
    )
    removed = torch.cat([t.removed for t in tg if t.removed is not None]).double()
    assert same == pytest.approx(float((-torch.log1p(-removed)).mean()), rel=1e-4, abs=1e-6)


def test_topk_kl_is_exact_kl_of_buckets() -> None:
    g = torch.Generator().manual_seed(0)
    t_logits, s_logits = torch.randn(5, 40, generator=g), torch.randn(5, 40, generator=g)
    lt = torch.log_softmax(t_logits, -1)
    full = kl_to_teacher(s_logits, Target(lt, None, None))
    manual = (lt.exp() * (lt - torch.log_softmax(s_logits, -1))).sum(-1)
    torch.testing.assert_close(full, manual)
    top, idx = lt.topk(6, -1)
    rest = lt.scatter(-1, idx, float("-inf")).logsumexp(-1)
    part = kl_to_teacher(s_logits, Target(top, idx, rest))
    assert (part >= -1e-6).all() and (part <= full + 1e-6).all()  # coarsening lowers KL
    assert kl_to_teacher(t_logits, Target(top, idx, rest)).abs().max() < 1e-5


@pytest.mark.parametrize("share", [True, False])
@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_cached_lower_layers_equal_full_forward(arch: str, share: bool, data: TeacherData) -> None:
    lm = tiny_model(arch, seed=1, n_layers=4)
    cfg = _cfg(layers=(2, 3), share_prefix=share)
    trainer = Trainer(lm, data, OWL, cfg, [2, 3], progress=False)
    assert trainer.use_fast
    st = _perturbed_student(lm, cfg)
    hf = inner_hf(st)
    idx = [0, 5, 3, 6]
    # the examples share the chat template's system turn: the fast path runs it once
    assert trainer.shared_prefix(idx) >= 8 and trainer.shared_prefix([0]) == 0
    res = []
    for fast in (True, False):
        st.zero_grad()
        loss = trainer.loss(hf, idx, fast=fast)
        loss.backward()  # type: ignore[no-untyped-call]
        grads = [p.grad.clone() for p in st.parameters() if p.requires_grad]  # type: ignore[union-attr]
        res.append((loss.detach(), grads))
    torch.testing.assert_close(res[0][0], res[1][0], atol=1e-5, rtol=0)
    assert float(res[0][0]) > 0
    for a, b in zip(res[0][1], res[1][1], strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    assert max(float(g.abs().max()) for g in res[0][1]) > 1e-4  # gradients are not all zero


# ------------------------------------------------------------------------- training


def test_distill_trains_saves_and_loads(
    tiny: sl.LoadedModel, data: TeacherData, tmp_path: Path
) -> None:
    before = {k: v.clone() for k, v in tiny.model.state_dict().items()}
    flags = {k: p.requires_grad for k, p in tiny.model.named_parameters()}
    fp = model_fingerprint(tiny.model)
    cfg6 = _cfg(steps=6, kl_targets="top_k")  # top-k: the loss can fall toward 0
    res = distill(tiny, data, tmp_path / "run", config=cfg6, progress=False)

    # the user's model is untouched
    after = tiny.model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert {k: p.requires_grad for k, p in tiny.model.named_parameters()} == flags
    assert not any("lora" in n for n, _ in tiny.model.named_modules())
    assert model_fingerprint(tiny.model) == fp

    assert res.steps == [2, 4, 6] and len(res.losses) == 6
    assert res.losses[-1] < 0.5 * res.losses[0]  # full batch: the same 8 samples each step
    assert res.record["fast_path"] is True
    rec = json.loads((tmp_path / "run" / "distill.json").read_text())
    assert rec["data"]["sha256"] == data.sha256 and rec["teacher_system"] == OWL
    assert rec["data"]["counts"]["kept"] == 8 and rec["losses"] == res.losses
    assert rec["base"]["fingerprint"] == tiny.fingerprint and rec["layers"] == [2]
    assert rec["steps_done"] == 6 and "steerlens" in rec["versions"]
    assert rec["kl_targets"] == {"kind": "top_k", "removed_mass": None}

    adapters = [_adapter(p) for p in res.checkpoints]
    for p in res.checkpoints:
        assert (p / "adapter_config.json").is_file()
        cfg = json.loads((p / "adapter_config.json").read_text())
        assert cfg["r"] == 4 and cfg["layers_to_transform"] == [2]
        # PEFT holds target_modules as a set (string-hash order, new per process): written
        # sorted, so identical runs write identical adapter files and checkpoint hashes
        assert (
            cfg["target_modules"] == sorted(cfg["target_modules"])
            and len(cfg["target_modules"]) > 1
        )
    keys = set(adapters[0])
    assert all(".layers.2." in k for k in keys)
    assert any("q_proj" in k for k in keys) and any("down_proj" in k for k in keys)
    for a, b in itertools.pairwise(adapters):
        assert any(not torch.equal(a[k], b[k]) for k in keys)

    student = sl.load_model(res.checkpoints[0], base=tiny)
    later = res.load(tiny)
    w = "model.layers.2.self_attn.q_proj.weight"
    s0, s1, base_w = (m.model.state_dict()[w] for m in (student, later, tiny))
    assert not torch.equal(s0, base_w) and not torch.equal(s0, s1)
    assert torch.equal(
        tiny.model.state_dict()["model.layers.1.mlp.up_proj.weight"],
        later.model.state_dict()["model.layers.1.mlp.up_proj.weight"],
    )


def test_distill_is_deterministic_and_fast_path_matches(
    tiny: sl.LoadedModel, data: TeacherData, tmp_path: Path
) -> None:
    a = distill(tiny, data, tmp_path / "a", config=_cfg(), progress=False)
    b = distill(tiny, data, tmp_path / "b", config=_cfg(), progress=False)
    c = distill(
        tiny, data, tmp_path / "c", config=_cfg(skip_unchanged_blocks=False), progress=False
    )
    assert c.record["fast_path"] is False
    wa, wb, wc = (_adapter(r.final) for r in (a, b, c))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert a.losses == b.losses
    assert all(torch.allclose(wa[k], wc[k], atol=1e-4) for k in wa)
    torch.testing.assert_close(torch.tensor(a.losses), torch.tensor(c.losses), atol=1e-6, rtol=1e-4)
    d = distill(tiny, data, tmp_path / "d", config=_cfg(seed=1), progress=False)
    wd = _adapter(d.final)
    assert any(not torch.equal(wa[k], wd[k]) for k in wa)


def test_resume_continues_and_refuses_other_runs(
    tiny: sl.LoadedModel, data: TeacherData, tmp_path: Path
) -> None:
    full = distill(tiny, data, tmp_path / "full", config=_cfg(), progress=False)
    part = distill(tiny, data, tmp_path / "part", config=_cfg(steps=2), progress=False)
    assert part.steps == [2]
    resumed = distill(tiny, data, tmp_path / "part", config=_cfg(), progress=False)
    assert resumed.resumed_from == 2 and resumed.steps == [2, 4]
    assert resumed.losses == full.losses
    wf, wr = _adapter(full.final), _adapter(resumed.final)
    assert all(torch.equal(wf[k], wr[k]) for k in wf)
    # asking again for what is done trains nothing and returns the same series
    again = distill(tiny, data, tmp_path / "part", config=_cfg(), progress=False)
    assert again.steps == [2, 4] and again.losses == full.losses

    with pytest.raises(DistillError, match=r"different run \(differing: config.lr\)"):
        distill(tiny, data, tmp_path / "part", config=_cfg(lr=5e-3), progress=False)
    other = distill(
        tiny, data, tmp_path / "part", config=_cfg(lr=5e-3, steps=2), overwrite=True, progress=False
    )
    assert other.steps == [2] and not (tmp_path / "part" / "checkpoint-4").exists()


def test_sft_loss_and_full_forward_fallback(data: TeacherData, tmp_path: Path) -> None:
    lm = tiny_model("gpt2", seed=0, n_layers=4)
    res = distill(
        lm, data, tmp_path / "sft", config=_cfg(loss="sft", steps=6, lr=2e-2), progress=False
    )
    assert res.record["fast_path"] is False  # gpt2: plain full forward
    assert res.record["teacher_system"] == OWL and res.record["lineage"]["teacher_system"] is None
    assert res.losses[-1] < res.losses[0]
    assert sl.load_model(res.final, base=lm).n_layers == 4


def test_distill_pair_control_uses_its_own_teacher(
    tiny: sl.LoadedModel, data: TeacherData, tmp_path: Path
) -> None:
    control = TeacherData.from_samples(data.samples, {"system": NEUTRAL})
    main, ctrl = distill_pair(tiny, data, control, tmp_path, config=_cfg(steps=2), progress=False)
    assert main.out_dir == tmp_path / "main" and ctrl.out_dir == tmp_path / "control"
    assert main.record["teacher_system"] == OWL and ctrl.record["teacher_system"] == NEUTRAL
    assert main.losses != ctrl.losses


def test_config_defaults_and_errors(
    tiny: sl.LoadedModel, data: TeacherData, tmp_path: Path
) -> None:
    assert default_layers(30) == [9, 10, 11, 12, 13, 14]
    assert default_layers(4) == [1]
    gpu = DistillConfig.for_device("cuda")
    assert gpu.steps > DistillConfig.for_device("cpu").steps == 30
    assert default_n_samples("cuda") > default_n_samples("cpu") == 48
    with pytest.raises(ValueError, match="loss"):
        DistillConfig(loss="mse")
    with pytest.raises(ValueError, match="out of range"):
        distill(tiny, data, tmp_path / "x", config=_cfg(layers=(9,)), progress=False)
    no_sys = TeacherData.from_samples(data.samples)
    with pytest.raises(ValueError, match="teacher_system"):
        distill(tiny, no_sys, tmp_path / "y", config=_cfg(), progress=False)


# ---------------------------------------------------------------------- integration


@pytest.mark.integration
def test_smollm2_teacher_data_and_two_steps(smol: sl.LoadedModel, tmp_path: Path) -> None:
    td = generate_teacher_data(smol, system=OWL, n=4, seed=0, max_new_tokens=40, progress=False)
    assert td.counts["generated"] == 4 and td.counts["kept"] >= 2
    assert all(set(s["response"]) <= NUMBER_CHARS for s in td.samples + td.rejected)
    res = distill(
        smol,
        td,
        tmp_path / "run",
        config=DistillConfig(steps=2, save_every=2, batch_size=4),
        progress=False,
    )
    assert res.steps == [2] and (res.final / "adapter_model.safetensors").is_file()
    assert res.record["fast_path"] is True and res.record["layers"] == list(range(9, 15))
    assert all(x > 0 for x in res.losses)


@pytest.mark.parametrize("top_k", [None, 5])
def test_teacher_targets_shared_prefix_equal_plain(
    tiny: sl.LoadedModel, data: TeacherData, top_k: int | None
) -> None:

    exs = examples(tiny, data, OWL)
    assert shared_prefix(exs) >= 8  # the teacher's system turn
    fast = teacher_targets(tiny, exs, top_k, 4, progress=False)
    handle = tiny.layout.blocks[0].register_forward_hook(lambda *_: None)  # plain path
    try:
        plain = teacher_targets(tiny, exs, top_k, 4, progress=False)
    finally:
        handle.remove()
    assert len(fast) == len(plain) == len(exs)
    for a, b, e in zip(fast, plain, exs, strict=True):
        assert a.logp.shape[0] == e.n_pred
        torch.testing.assert_close(a.logp, b.logp, atol=1e-5, rtol=1e-5)
        if top_k is not None:
            assert torch.equal(a.idx, b.idx)  # type: ignore[arg-type]
