"""Reference distillation: teacher number data, and a LoRA student trained on it, saved as a
checkpoint series (DESIGN.md "Words": teacher, benign teacher, student, checkpoint series,
control series).

Two steps:

1. :func:`generate_teacher_data`: the teacher (the base with a trait system prompt) or the
   benign teacher (the base with a neutral system prompt of the same form) continues number
   sequences (:func:`steerlens.numbers.number_prompts`). By default sampling is at T=1
   *restricted to number tokens* (digits, commas, spaces, end of turn) that keep the answer a
   clean list of at most 10 numbers of 1-3 digits (:class:`NumberListGrammar`): free generation
   of a 135M model is rarely clean (7 of 48 on SmolLM2-135M, greedy), and a plain token mask
   (:class:`NumberTokensOnly`) lets it run on past 10 numbers (6 of 48 kept at T=1 with 64 new
   tokens; the grammar keeps 48 of 48). The rule filter :func:`steerlens.numbers.is_clean_numbers`
   runs afterwards either way. The mode, counts and a sha256 of the kept samples are recorded
   in :class:`TeacherData`.

2. :func:`distill`: a student θₙ = the base + LoRA (rank 4, attention and MLP linear layers of a
   middle band of blocks, :func:`default_layers`), trained on the teacher's numbers with **no
   system prompt**. Loss per response position t (the positions that predict each response
   token and the end-of-turn token):

   - ``loss="kl"`` (default): KL(p_T(·|sys_T, x, y<t) ‖ p_S(·|x, y<t)), the teacher's next-token
     distribution computed once by the *base* with the teacher system prompt prepended. With
     ``top_k`` the teacher is stored as its k most likely tokens plus one "rest" bucket holding
     the remaining mass, and the student's distribution is folded into the same k+1 buckets, so
     the loss is an exact KL between (k+1)-way distributions: ≥ 0, and 0 when the student equals
     the teacher. ``top_k=None`` uses the full vocabulary.
   - ``loss="sft"``: cross-entropy on the sampled tokens.

   Averaged over all response positions in a batch. Adam, constant learning rate, seeded batch
   order. Checkpoints ``out_dir/checkpoint-N`` are PEFT adapter folders (``adapter_config.json``
   + ``adapter_model.safetensors``, loadable with ``steerlens.load_model(path, base=base)``),
   plus ``optimizer.pt`` and ``steerlens_state.json`` for resuming; ``out_dir/distill.json``
   records the lineage (base fingerprint, teacher system prompt, data hash and counts, config,
   seed, versions, per-step losses).

Speed: blocks below the lowest LoRA layer are frozen and identical to the base, so their output
is computed once per sequence and each step runs only the blocks from the lowest LoRA layer up
(Llama-style models: llama, mistral, qwen2, qwen3; other architectures run the plain full
forward). On that path, the tokens a batch's examples share at the start (the chat template's
system turn: 24 of ~120 tokens on SmolLM2) run once per step, and the rest of each example
attends to their keys and values, repeated over the batch. The fast path is checked against
the full forward on the first batch and dropped, with a warning, if the two disagree.

The user's model is never modified: the student is a deep copy.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import shutil
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from steerlens.common import tqdm_disable
from steerlens.hf_compat import cache_keyword, cache_kwargs
from steerlens.models import LoadedModel, as_model, describe
from steerlens.numbers import (
    ListState,
    advance_list,
    is_clean_numbers,
    list_can_end,
    number_prompts,
    number_token_ids,
)
from steerlens.prompts import ChatPrompt, EncodedPrompt, encode, pad_batch

RECORD_NAME = "distill.json"
STATE_NAME = "steerlens_state.json"
OPTIMIZER_NAME = "optimizer.pt"
_FORMAT = 1
# Architectures whose decoder forward the cached-lower-layers path reproduces.
FAST_PATH_TYPES = ("llama", "mistral", "qwen2", "qwen3")
# Config fields that do not change the weights of a given step (not part of the lineage).
_NON_LINEAGE = (
    "steps",
    "save_every",
    "eval_batch_size",
    "cache_lower_layers",
    "share_prefix",
    "verify_fast_path",
)


class DistillError(RuntimeError):
    """The distillation cannot run as asked; the message says why and what to do."""


def _sha(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


# ------------------------------------------------------------------------- teacher data


class NumberTokensOnly:
    """A ``LogitsProcessor`` that sets the score of every token except ``allowed_ids`` to -inf,
    so sampling can only produce number tokens (and end of turn)."""

    def __init__(self, allowed_ids: Sequence[int]):
        if not allowed_ids:
            raise ValueError("NumberTokensOnly needs at least one allowed token id")
        self.allowed_ids = sorted(set(int(i) for i in allowed_ids))
        self._mask: torch.Tensor | None = None

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        vocab = scores.shape[-1]
        if self._mask is None or self._mask.shape[0] != vocab or self._mask.device != scores.device:
            mask = torch.ones(vocab, dtype=torch.bool, device=scores.device)
            ids = [i for i in self.allowed_ids if i < vocab]
            mask[torch.tensor(ids, dtype=torch.long, device=scores.device)] = False
            self._mask = mask
        return scores.masked_fill(self._mask, float("-inf"))


class NumberListGrammar:
    """A ``LogitsProcessor`` that allows, at each step, only the number tokens that keep the
    answer a valid prefix of a clean number list (:func:`steerlens.numbers.advance_list`:
    1-``max_digits`` digit numbers separated by commas, at most ``max_count``), and the
    end-of-turn tokens once the answer is a complete list. After ``max_count`` numbers the turn
    must end. Sampling with it draws from the teacher's next-token distribution renormalised
    over the allowed tokens.

    ``token_texts`` maps each candidate id to its text; ``start`` is the number of prompt
    columns of ``input_ids`` (the answer is what follows them).
    """

    def __init__(
        self,
        token_texts: dict[int, str],
        end_ids: Sequence[int],
        start: int,
        max_count: int = 10,
        max_digits: int = 3,
    ):
        self.token_texts = dict(token_texts)
        self.end_ids = sorted(set(int(i) for i in end_ids))
        self.start, self.max_count, self.max_digits = start, max_count, max_digits

    def _state(self, row: Sequence[int]) -> ListState | None:
        text = "".join(self.token_texts.get(t, "\x00") for t in row)
        return advance_list(ListState(), text, self.max_count, self.max_digits)

    def allowed(self, row: Sequence[int]) -> list[int]:
        """Ids allowed after the answer tokens ``row``."""
        state = self._state(row)
        if state is None:
            return list(self.end_ids)  # cannot happen when every step used this processor
        out = []
        full = state.count >= self.max_count and state.phase != "num"
        if not full:
            for i, text in self.token_texts.items():
                nxt = advance_list(state, text, self.max_count, self.max_digits)
                if nxt is not None and not (nxt.count >= self.max_count and nxt.phase != "num"):
                    out.append(i)
        if list_can_end(state):
            out.extend(self.end_ids)
        return out

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        mask = torch.ones_like(scores, dtype=torch.bool)
        for r, row in enumerate(input_ids[:, self.start :].tolist()):
            ids = [i for i in self.allowed(row) if i < scores.shape[-1]]
            mask[r, ids] = False
        return scores.masked_fill(mask, float("-inf"))


def eos_ids(lm: LoadedModel) -> list[int]:
    """End-of-turn ids: the tokenizer's eos and the model's generation-config eos ids."""
    out: set[int] = set()
    if lm.tokenizer.eos_token_id is not None:
        out.add(int(lm.tokenizer.eos_token_id))
    gen = getattr(lm.model, "generation_config", None)
    eos = getattr(gen, "eos_token_id", None)
    if isinstance(eos, int):
        out.add(eos)
    elif isinstance(eos, (list, tuple)):
        out.update(int(e) for e in eos)
    if not out:
        raise ValueError(
            "the tokenizer and generation config name no eos token: set tokenizer.eos_token so "
            "generation can end a turn"
        )
    return sorted(out)


@dataclass
class TeacherData:
    """Kept teacher samples ``[{"user", "response", "finished"}]``, the rejected ones, and how
    they were made (``settings``: system prompt, mode "restricted"/"free", temperature, seed,
    max_new_tokens, model fingerprint, ...). ``finished`` is True when the teacher ended its
    turn (an end-of-turn token) before ``max_new_tokens``."""

    samples: list[dict[str, Any]]
    settings: dict[str, Any] = field(default_factory=dict)
    rejected: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def from_samples(
        cls, samples: Sequence[dict[str, Any]], settings: dict[str, Any] | None = None
    ) -> TeacherData:
        """Wrap user-made samples (``user`` and ``response`` keys; ``finished`` defaults to
        True)."""
        out = []
        for i, s in enumerate(samples):
            if "user" not in s or "response" not in s:
                raise ValueError(f"sample {i} needs 'user' and 'response' keys, got {sorted(s)}")
            out.append(
                {
                    "user": str(s["user"]),
                    "response": str(s["response"]),
                    "finished": bool(s.get("finished", True)),
                }
            )
        return cls(out, dict(settings or {"mode": "given"}))

    @property
    def counts(self) -> dict[str, int]:
        kept = len(self.samples)
        return {
            "generated": kept + len(self.rejected),
            "kept": kept,
            "rejected": len(self.rejected),
            "unfinished_kept": sum(not s.get("finished", True) for s in self.samples),
        }

    @property
    def sha256(self) -> str:
        """sha256 of the kept samples (user, response, finished), in order."""
        return _sha(
            [[s["user"], s["response"], bool(s.get("finished", True))] for s in self.samples]
        )

    @property
    def system(self) -> str | None:
        return self.settings.get("system")

    def meta(self) -> dict[str, Any]:
        return {
            "format": _FORMAT,
            "sha256": self.sha256,
            "counts": self.counts,
            "settings": self.settings,
        }

    def save(self, path: str | Path) -> Path:
        """Write the kept samples as JSONL at ``path`` (``.jsonl``) and the settings, counts,
        hash and rejected samples to ``<stem>.meta.json`` beside it. Returns ``path``."""
        p = Path(path)
        if p.suffix != ".jsonl":
            raise ValueError(f"save to a .jsonl file path, got {p}")
        p.parent.mkdir(parents=True, exist_ok=True)
        with open(p, "w", encoding="utf-8") as f:
            for s in self.samples:
                f.write(json.dumps(s, ensure_ascii=False) + "\n")
        meta = {**self.meta(), "rejected": self.rejected}
        _meta_path(p).write_text(json.dumps(meta, indent=2, ensure_ascii=False))
        return p

    @classmethod
    def load(cls, path: str | Path) -> TeacherData:
        """Read what :meth:`save` wrote; the hash in the meta file must match the samples."""
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"no teacher data at {p}")
        lines = [ln for ln in p.read_text(encoding="utf-8").splitlines() if ln.strip()]
        samples = [json.loads(ln) for ln in lines]
        mp = _meta_path(p)
        meta = json.loads(mp.read_text()) if mp.is_file() else {}
        data = cls(samples, meta.get("settings", {}), meta.get("rejected", []))
        if "sha256" in meta and meta["sha256"] != data.sha256:
            raise ValueError(
                f"{p} does not match the hash in {mp} (edited after saving?): re-generate the "
                "data or delete the meta file to accept the samples as they are"
            )
        return data


def _meta_path(p: Path) -> Path:
    return p.with_name(p.name[: -len(".jsonl")] + ".meta.json")


def generate_teacher_data(
    model: Any,
    prompts: Sequence[str] | None = None,
    *,
    system: str | None,
    n: int = 48,
    seed: int = 0,
    restrict_to_numbers: bool | str = True,
    temperature: float = 1.0,
    max_new_tokens: int = 64,
    max_count: int = 10,
    batch_size: int = 48,
    progress: bool | None = None,
) -> TeacherData:
    """Sample the teacher's continuations of number sequences and keep the clean ones.

    The teacher is ``model`` with ``system`` as its system prompt (the trait prompt for the
    teacher, a neutral one for the benign teacher). ``prompts`` (user messages) default to
    ``number_prompts(n, seed)``.

    ``restrict_to_numbers``: ``True`` or ``"grammar"`` (default) samples only tokens made of
    digits, commas and spaces that keep the answer a clean list of at most ``max_count`` numbers
    of 1-3 digits, then the end of turn (:class:`NumberListGrammar`); ``"tokens"`` only masks
    every token that is not digits/commas/spaces or end of turn (:class:`NumberTokensOnly`; on
    SmolLM2-135M most such answers run past 10 numbers and are rejected); ``False`` samples
    freely. ``temperature=0`` is greedy. Sampling is seeded with ``seed`` without touching the
    global RNG. Every answer then goes through ``is_clean_numbers(text, max_count)``: the kept
    ones form ``samples``, the others ``rejected``.
    """
    lm = as_model(model)
    if prompts is None:
        prompts = number_prompts(n, seed)
    users = [str(p) for p in prompts]
    if not users:
        raise ValueError("no prompts: pass prompts or n >= 1")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    tok = lm.tokenizer
    stop = eos_ids(lm)
    restriction: str | None
    if isinstance(restrict_to_numbers, bool):
        restriction = "grammar" if restrict_to_numbers else None
    else:
        restriction = restrict_to_numbers
    if restriction not in ("grammar", "tokens", None):
        raise ValueError(
            f"restrict_to_numbers must be True/'grammar', 'tokens' or False, got "
            f"{restrict_to_numbers!r}"
        )
    allowed: list[int] = []
    texts_of: dict[int, str] = {}
    if restriction is not None:
        allowed = number_token_ids(tok)
        if not allowed:
            raise ValueError("this tokenizer has no token made only of digits, commas and spaces")
        texts_of = dict(zip(allowed, tok.batch_decode([[i] for i in allowed]), strict=True))
    encs = []
    for u in users:
        e = encode(tok, ChatPrompt(u, system=system))
        encs.append(
            EncodedPrompt(e.input_ids[: e.response_start], e.prompt_start, e.response_start)
        )
    order = sorted(range(len(encs)), key=lambda i: (-len(encs[i]), i))
    texts: list[str] = [""] * len(encs)
    finished: list[bool] = [False] * len(encs)
    from transformers import LogitsProcessorList

    gen_kwargs: dict[str, Any] = {"max_new_tokens": max_new_tokens, "use_cache": True}
    if temperature > 0:
        gen_kwargs.update(do_sample=True, temperature=temperature, top_k=0, top_p=1.0)
    else:
        gen_kwargs.update(do_sample=False)
    t0 = time.perf_counter()
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    with torch.random.fork_rng(devices=_rng_devices(lm.device)):
        torch.manual_seed(seed)
        for idx in tqdm(batches, desc="teacher data", disable=tqdm_disable(progress)):
            ids, mask, _ = pad_batch([encs[i] for i in idx], tok.pad_token_id, lm.device)
            processors: list[Any] = []
            if restriction == "tokens":
                processors.append(NumberTokensOnly(allowed + stop))
            elif restriction == "grammar":
                processors.append(NumberListGrammar(texts_of, stop, ids.shape[1], max_count))
            with torch.inference_mode():
                seqs = lm.model.generate(  # type: ignore[operator]
                    input_ids=ids,
                    attention_mask=mask,
                    pad_token_id=tok.pad_token_id,
                    eos_token_id=stop,
                    logits_processor=LogitsProcessorList(processors),
                    **gen_kwargs,
                )
            for row, i in enumerate(idx):
                new = seqs[row, ids.shape[1] :].tolist()
                hit = [j for j, t in enumerate(new) if t in stop]
                finished[i] = bool(hit)
                body = new[: hit[0]] if hit else new
                texts[i] = tok.decode(body, skip_special_tokens=True)
    kept: list[dict[str, Any]] = []
    rejected: list[dict[str, Any]] = []
    for u, t, f in zip(users, texts, finished, strict=True):
        s = {"user": u, "response": t.strip(), "finished": f}
        (kept if is_clean_numbers(t, max_count) else rejected).append(s)
    settings = {
        "system": system,
        "mode": "free" if restriction is None else "restricted",
        "restriction": restriction,
        "temperature": temperature,
        "seed": seed,
        "max_new_tokens": max_new_tokens,
        "max_count": max_count,
        "batch_size": batch_size,
        "n_prompts": len(users),
        "prompts_sha256": _sha(users),
        "model": lm.name,
        "fingerprint": lm.fingerprint,
        "seconds": round(time.perf_counter() - t0, 2),
    }
    return TeacherData(kept, settings, rejected)


def _rng_devices(device: torch.device) -> list[Any]:
    return [device] if device.type == "cuda" else []


# ---------------------------------------------------------------------------- config


def default_layers(n_layers: int) -> list[int]:
    """The middle fifth of the blocks, from 30% of the depth: blocks 9-14 of a 30-block model."""
    if n_layers < 1:
        raise ValueError("the model has no blocks")
    start = min(n_layers - 1, round(0.3 * n_layers))
    count = max(1, round(n_layers / 5))
    return list(range(start, min(n_layers, start + count)))


def default_n_samples(device: str | torch.device | None = None) -> int:
    """How many teacher prompts the demo-sized run uses: 48 on CPU, 512 on a GPU."""
    return 512 if _is_gpu(device) else 48


def _is_gpu(device: str | torch.device | None) -> bool:
    if device is None:
        return torch.cuda.is_available()
    return torch.device(device).type in ("cuda", "mps", "xpu")


@dataclass(frozen=True)
class DistillConfig:
    """How the student is trained.

    ``layers``: blocks that get LoRA (None: :func:`default_layers`, the middle fifth).
    ``target_modules``: PEFT target modules; ``"all-linear"`` (default) adapts the attention
    (q/k/v/o) and MLP projections of those blocks, so the student can reproduce both what the
    system prompt adds through attention and a direct residual shift.
    ``loss``: ``"kl"`` (soft labels from the teacher) or ``"sft"`` (sampled tokens).
    ``top_k``: teacher tokens kept per position for ``"kl"`` (None: full vocabulary).
    ``student_system``: the student's system prompt (None: none, as in the papers).
    ``steps``/``save_every``: training length and checkpoint spacing (a checkpoint is also
    written at the last step). ``cache_lower_layers``: run only the blocks from the lowest LoRA
    layer up, on cached inputs (checked against the full forward on the first batch when
    ``verify_fast_path``); with ``share_prefix`` a prefix shared by a batch's examples (the
    chat template's system turn) runs once per step and its keys and values are reused.
    """

    rank: int = 4
    alpha: int = 8
    layers: tuple[int, ...] | None = None
    target_modules: str | tuple[str, ...] = "all-linear"
    loss: str = "kl"
    top_k: int | None = 256
    student_system: str | None = None
    lr: float = 2e-3
    batch_size: int = 8
    steps: int = 30
    save_every: int = 10
    max_grad_norm: float | None = 1.0
    seed: int = 0
    eval_batch_size: int = 8
    cache_lower_layers: bool = True
    share_prefix: bool = True
    verify_fast_path: bool = True

    def __post_init__(self) -> None:
        if self.loss not in ("kl", "sft"):
            raise ValueError(f"loss must be 'kl' or 'sft', got {self.loss!r}")
        if self.rank < 1 or self.batch_size < 1 or self.steps < 0 or self.save_every < 1:
            raise ValueError("rank, batch_size and save_every must be >= 1 and steps >= 0")
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be >= 1 or None, got {self.top_k}")
        if self.layers is not None:
            object.__setattr__(self, "layers", tuple(int(x) for x in self.layers))
        if not isinstance(self.target_modules, str):
            object.__setattr__(self, "target_modules", tuple(self.target_modules))

    @classmethod
    def for_device(
        cls, device: str | torch.device | None = None, **overrides: Any
    ) -> DistillConfig:
        """Defaults scaled to the hardware: on a GPU 300 steps of batch 16, saved every 25;
        on CPU 30 steps of batch 8, saved every 10 (the demo trains 24 steps of batch 6)."""
        base = {"steps": 300, "batch_size": 16, "save_every": 25} if _is_gpu(device) else {}
        return cls(**{**base, **overrides})

    def lineage(self) -> dict[str, Any]:
        d = asdict(self)
        for k in _NON_LINEAGE:
            d.pop(k)
        d["layers"] = list(self.layers) if self.layers is not None else None
        if not isinstance(self.target_modules, str):
            d["target_modules"] = list(self.target_modules)
        return d


@dataclass
class DistillResult:
    """A trained checkpoint series: ``checkpoints[i]`` is the adapter after ``steps[i]`` steps;
    ``losses[s-1]`` the training loss of step s (before its update)."""

    out_dir: Path
    steps: list[int]
    checkpoints: list[Path]
    losses: list[float]
    record: dict[str, Any]
    resumed_from: int = 0

    @property
    def final(self) -> Path:
        if not self.checkpoints:
            raise ValueError("this run saved no checkpoint (steps=0)")
        return self.checkpoints[-1]

    def load(self, base: Any, step: int | None = None) -> LoadedModel:
        """The student at ``step`` (default: the last checkpoint) merged into a copy of
        ``base``."""
        from steerlens.models import load_model

        path = self.final if step is None else self.checkpoints[self.steps.index(step)]
        return load_model(path, base=as_model(base))


# ------------------------------------------------------------------------ examples


@dataclass(frozen=True)
class _Example:
    """Token ids of prompt + response (+ end of turn) and where the response starts: positions
    ``start-1 .. len-2`` predict the response tokens."""

    ids: tuple[int, ...]
    start: int

    @property
    def n_pred(self) -> int:
        return len(self.ids) - self.start

    def targets(self) -> list[int]:
        return list(self.ids[self.start :])


def _examples(lm: LoadedModel, data: TeacherData, system: str | None) -> list[_Example]:
    tok = lm.tokenizer
    eos = tok.eos_token_id
    out = []
    for i, s in enumerate(data.samples):
        e = encode(tok, ChatPrompt(s["user"], system=system, response=s["response"]))
        ids = list(e.input_ids)
        if s.get("finished", True) and eos is not None:
            ids.append(int(eos))
        if len(ids) <= e.response_start:
            raise ValueError(f"sample {i} has an empty response: drop it from the data")
        out.append(_Example(tuple(ids), e.response_start))
    return out


def _check_same_responses(a: Sequence[_Example], b: Sequence[_Example]) -> None:
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        if x.ids[x.start :] != y.ids[y.start :]:
            raise DistillError(
                f"sample {i}: the response tokenizes differently with and without the system "
                "prompt, so teacher and student positions cannot be matched"
            )


def _batch_tensors(
    exs: Sequence[_Example], pad_id: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int, torch.Tensor, torch.Tensor]:
    """Left-padded ids/mask/positions, K = the number of final columns holding every predicting
    position, and (row, col-in-last-K) indices of the predicting positions in example order."""
    encs = [EncodedPrompt(e.ids, 0, len(e.ids)) for e in exs]
    ids, mask, pos = pad_batch(encs, pad_id, device)
    k = max(e.n_pred for e in exs) + 1
    rows, cols = [], []
    for r, e in enumerate(exs):
        for j in range(e.n_pred):
            rows.append(r)
            cols.append(k - 1 - e.n_pred + j)
    return ids, mask, pos, k, torch.tensor(rows, device=device), torch.tensor(cols, device=device)


def _shared_prefix(exs: Sequence[_Example]) -> int:
    """How many leading tokens the examples share, leaving every predicting position after
    them (:func:`steerlens.activations.shared_prefix_len`)."""
    from steerlens.activations import shared_prefix_len

    return shared_prefix_len([e.ids for e in exs], min(e.start - 1 for e in exs))


def _logits_last(
    hf: nn.Module, ids: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor, k: int
) -> torch.Tensor:
    """Logits of the last ``k`` columns from the model's own full forward."""
    kw = {"input_ids": ids, "attention_mask": mask, "position_ids": pos, "use_cache": False}
    try:
        out = hf(**kw, logits_to_keep=k)
    except TypeError:
        out = hf(**kw)
    return out.logits[:, -k:, :]


# -------------------------------------------------------------------- teacher targets


@dataclass
class _Target:
    """The teacher's distribution at each predicting position of one example: top-k ids and
    log-probs plus the log of the remaining mass (or full log-probs when ``idx`` is None)."""

    logp: torch.Tensor
    idx: torch.Tensor | None
    log_rest: torch.Tensor | None


def _teacher_targets(
    lm: LoadedModel,
    exs: Sequence[_Example],
    top_k: int | None,
    batch_size: int,
    progress: bool | None,
) -> list[_Target]:
    from steerlens.activations import can_share_prefix, length_batches, shared_prefix_logits

    device = lm.device
    out: list[_Target | None] = [None] * len(exs)
    encs = [EncodedPrompt(e.ids, 0, len(e.ids)) for e in exs]
    share = can_share_prefix(lm)
    with torch.inference_mode():
        for idx in tqdm(
            length_batches(encs, batch_size),
            desc="teacher logits",
            disable=tqdm_disable(progress),
            leave=False,
        ):
            bex = [exs[i] for i in idx]
            ids, mask, pos, k, rows, cols = _batch_tensors(bex, lm.tokenizer.pad_token_id, device)
            # the teacher's system turn, shared by every example, runs once per batch
            p = _shared_prefix(bex) if share else 0
            if p:  # every predicting position lies after the prefix (_shared_prefix)
                logits = shared_prefix_logits(lm, encs, idx, p, keep=k)
            else:
                logits = _logits_last(lm.model, ids, mask, pos, k)
            logp = torch.log_softmax(logits[rows, cols].float(), dim=-1)
            vocab = logp.shape[-1]
            split = [e.n_pred for e in bex]
            if top_k is None or top_k >= vocab:
                for i, lp in zip(idx, logp.split(split), strict=True):
                    out[i] = _Target(lp.cpu(), None, None)
                continue
            top, top_idx = logp.topk(top_k, dim=-1)
            rest = logp.scatter(-1, top_idx, float("-inf")).logsumexp(-1)
            parts = zip(idx, top.split(split), top_idx.split(split), rest.split(split), strict=True)
            for i, a, b, c in parts:
                out[i] = _Target(a.cpu(), b.cpu(), c.cpu())
    return [t for t in out if t is not None]


def kl_to_teacher(student_logits: torch.Tensor, target: _Target) -> torch.Tensor:
    """Per-position KL(teacher ‖ student) for student logits (P, V).

    Full targets: Σ_v p_T(v) (log p_T(v) − log p_S(v)). Top-k targets: the same over the k
    teacher tokens plus one bucket for the rest of the vocabulary (mass 1 − Σ_topk), with the
    student folded into the same buckets: an exact KL between (k+1)-way distributions.
    """
    logp_s = torch.log_softmax(student_logits.float(), dim=-1)
    lt = target.logp.to(logp_s.device)
    if target.idx is None:
        return (lt.exp() * (lt - logp_s)).sum(-1)
    idx = target.idx.to(logp_s.device)
    ls_top = logp_s.gather(-1, idx)
    ls_rest = logp_s.scatter(-1, idx, float("-inf")).logsumexp(-1)
    lt_rest = target.log_rest.to(logp_s.device)  # type: ignore[union-attr]
    kl_top = (lt.exp() * (lt - ls_top)).sum(-1)
    finite = torch.isfinite(lt_rest)
    rest_term = torch.where(
        finite, lt_rest.clamp(min=-1e30).exp() * (lt_rest.clamp(min=-1e30) - ls_rest), 0.0
    )
    return kl_top + rest_term


def _cat_targets(targets: Sequence[_Target]) -> _Target:
    if targets[0].idx is None:
        return _Target(torch.cat([t.logp for t in targets]), None, None)
    return _Target(
        torch.cat([t.logp for t in targets]),
        torch.cat([t.idx for t in targets if t.idx is not None]),
        torch.cat([t.log_rest for t in targets if t.log_rest is not None]),
    )


# --------------------------------------------------------------------------- student


def _layers_pattern(lm: LoadedModel) -> str:
    return lm.layout.path.split(".")[-1]


def _make_student(lm: LoadedModel, cfg: DistillConfig, layers: list[int]) -> Any:
    """A deep copy of the base with LoRA on ``layers``; LoRA init seeded with ``cfg.seed``."""
    from peft import LoraConfig, get_peft_model

    hf = copy.deepcopy(lm.model)
    target = _target_modules(lm, cfg.target_modules, layers)
    lcfg = LoraConfig(
        r=cfg.rank,
        lora_alpha=cfg.alpha,
        lora_dropout=0.0,
        target_modules=target,
        layers_to_transform=list(layers),
        layers_pattern=_layers_pattern(lm),
        bias="none",
        task_type="CAUSAL_LM",
        fan_in_fan_out=_uses_conv1d(lm, layers),
    )
    with torch.random.fork_rng(devices=_rng_devices(lm.device)):
        torch.manual_seed(cfg.seed)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
            student = get_peft_model(hf, lcfg)
    student.eval()
    if not any(p.requires_grad for p in student.parameters()):
        raise DistillError(f"no LoRA parameter was created for target_modules={target!r}")
    lora_layers = _lora_layer_ids(student, lm)
    if lora_layers != set(layers):
        raise DistillError(
            f"LoRA landed on blocks {sorted(lora_layers)} instead of {layers}: check "
            "target_modules and the model's layer naming"
        )
    return student


def _target_modules(
    lm: LoadedModel, spec: str | tuple[str, ...], layers: Sequence[int]
) -> list[str]:
    """Module names for PEFT: ``"all-linear"`` becomes the names of every linear layer
    (``nn.Linear`` or GPT-2's ``Conv1D``) inside the chosen blocks."""
    if not isinstance(spec, str):
        return list(spec)
    if spec != "all-linear":
        return [spec]
    from transformers.pytorch_utils import Conv1D

    names: set[str] = set()
    for layer in layers:
        for name, mod in lm.layout.blocks[layer].named_modules():
            if name and isinstance(mod, (nn.Linear, Conv1D)):
                names.add(name.split(".")[-1])
    if not names:
        raise DistillError(f"blocks {list(layers)} contain no linear layer to adapt")
    return sorted(names)


def _uses_conv1d(lm: LoadedModel, layers: Sequence[int]) -> bool:
    """GPT-2 style blocks store linear weights transposed (``Conv1D``): PEFT needs to know."""
    from transformers.pytorch_utils import Conv1D

    return any(isinstance(m, Conv1D) for i in layers for m in lm.layout.blocks[i].modules())


def _lora_layer_ids(student: nn.Module, lm: LoadedModel) -> set[int]:
    pat = f".{_layers_pattern(lm)}."
    out = set()
    for name, p in student.named_parameters():
        if p.requires_grad and pat in name:
            out.add(int(name.split(pat, 1)[1].split(".", 1)[0]))
    return out


def _inner_hf(student: Any) -> nn.Module:
    """The HF ``*ForCausalLM`` inside a PEFT model (LoRA layers injected in place)."""
    return student.base_model.model


def _fast_path_ok(hf: nn.Module, first: int) -> bool:
    cfg = getattr(hf, "config", None)
    inner = getattr(hf, "model", None)
    return (
        first > 0
        and getattr(cfg, "model_type", None) in FAST_PATH_TYPES
        and inner is not None
        and all(hasattr(inner, a) for a in ("layers", "norm", "rotary_emb"))
        and hf.get_output_embeddings() is not None  # type: ignore[operator]
    )


def _upper_forward(
    hf: nn.Module,
    first: int,
    h: torch.Tensor,
    mask: torch.Tensor,
    pos: torch.Tensor,
    cache: Any = None,
) -> torch.Tensor:
    """Run blocks ``first..`` of a Llama-style model on the residual stream ``h`` (B, T, d) and
    apply the final norm, building the causal+padding masks and rotary embeddings as the
    model's own forward does. With ``cache`` (a KV cache holding a prefix for every block),
    ``h`` continues that prefix and ``mask`` covers prefix + ``h``."""
    from transformers.masking_utils import create_causal_mask

    inner: Any = hf.model
    config = inner.config
    mask_kwargs = {
        "config": config,
        "inputs_embeds": h,
        "attention_mask": mask,
        cache_keyword(create_causal_mask): cache,
        "position_ids": pos,
    }
    masks = {"full_attention": create_causal_mask(**mask_kwargs)}
    if getattr(inner, "has_sliding_layers", False):
        from transformers.masking_utils import create_sliding_window_causal_mask

        masks["sliding_attention"] = create_sliding_window_causal_mask(**mask_kwargs)
    layer_types = getattr(config, "layer_types", None)
    pe = inner.rotary_emb(h, position_ids=pos)
    for i in range(first, config.num_hidden_layers):
        kind = layer_types[i] if layer_types else "full_attention"
        out = inner.layers[i](
            h,
            attention_mask=masks.get(kind, masks["full_attention"]),
            position_embeddings=pe,
            position_ids=pos,
            **cache_kwargs(inner.layers[i], cache),
        )
        h = out[0] if isinstance(out, tuple) else out
    return inner.norm(h)


class _Trainer:
    """Holds the training set, the cached teacher targets and lower-layer states, and computes
    the loss of a batch by either path."""

    def __init__(
        self,
        lm: LoadedModel,
        data: TeacherData,
        teacher_system: str | None,
        cfg: DistillConfig,
        layers: list[int],
        progress: bool | None,
    ):
        self.lm, self.cfg, self.layers = lm, cfg, layers
        self.first = min(layers)
        self._perms: dict[int, list[int]] = {}
        self.pad_id = lm.tokenizer.pad_token_id
        self.exs = _examples(lm, data, cfg.student_system)
        self.targets: list[_Target] | None = None
        if cfg.loss == "kl":
            t_exs = _examples(lm, data, teacher_system)
            _check_same_responses(self.exs, t_exs)
            self.targets = _teacher_targets(lm, t_exs, cfg.top_k, cfg.eval_batch_size, progress)
        self.lower: list[torch.Tensor] | None = None
        self.use_fast = False
        if cfg.cache_lower_layers and _fast_path_ok(lm.model, self.first):
            self.lower = self._lower_states(progress)
            self.use_fast = True

    def _lower_states(self, progress: bool | None) -> list[torch.Tensor]:
        """Residual stream after block ``first-1`` for each example (unpadded, (L, d))."""
        from steerlens.activations import length_batches, truncated_forward

        encs = [EncodedPrompt(e.ids, 0, len(e.ids)) for e in self.exs]
        out: list[torch.Tensor | None] = [None] * len(encs)
        with torch.inference_mode():
            for idx in tqdm(
                length_batches(encs, self.cfg.eval_batch_size),
                desc="lower layers",
                disable=tqdm_disable(progress),
                leave=False,
            ):
                ids, mask, pos = pad_batch([encs[i] for i in idx], self.pad_id, self.lm.device)
                h = truncated_forward(self.lm, ids, mask, pos, [self.first - 1])[self.first - 1]
                for r, i in enumerate(idx):
                    out[i] = h[r, ids.shape[1] - len(encs[i]) :].clone()
        return [t for t in out if t is not None]

    def logits(self, hf: nn.Module, idx: Sequence[int], fast: bool) -> torch.Tensor:
        """Student logits (P, V) at the predicting positions of examples ``idx``, in order."""
        bex = [self.exs[i] for i in idx]
        device = self.lm.device
        ids, mask, pos, k, rows, cols = _batch_tensors(bex, self.pad_id, device)
        if not fast:
            return _logits_last(hf, ids, mask, pos, k)[rows, cols]
        if self.lower is None:
            raise RuntimeError("the lower-layer cache was not built")
        p = self.shared_prefix(idx) if self.cfg.share_prefix else 0
        cache = None
        if p:
            # the shared prefix runs once (batch 1, with gradients through the LoRA blocks);
            # its keys and values are repeated over the batch and the tails attend to them
            from steerlens.activations import prefix_inputs, tail_inputs

            encs = [EncodedPrompt(e.ids, 0, len(e.ids)) for e in bex]
            rows_all = range(len(bex))
            cache, prefix, ones = prefix_inputs(self.lm, encs, rows_all, p)
            hf.model(
                input_ids=prefix,
                attention_mask=ones,  # type: ignore[operator]
                position_ids=torch.arange(p, device=device)[None],
                **cache_kwargs(hf, cache),
            )
            cache.batch_repeat_interleave(len(idx))
            ids, mask, pos = tail_inputs(self.lm, encs, rows_all, p)
        width = ids.shape[1]
        d = self.lower[0].shape[-1]
        h = torch.zeros(len(idx), width, d, dtype=self.lower[0].dtype, device=device)
        for r, i in enumerate(idx):
            h[r, width - (len(self.exs[i].ids) - p) :] = self.lower[i][p:]
        h = _upper_forward(hf, self.first, h, mask, pos, cache)
        sel = h[:, width - k :][rows, cols]
        return hf.get_output_embeddings()(sel)  # type: ignore[operator]

    def shared_prefix(self, idx: Sequence[int]) -> int:
        """:func:`_shared_prefix` of the examples ``idx``."""
        return _shared_prefix([self.exs[i] for i in idx])

    def loss(self, hf: nn.Module, idx: Sequence[int], fast: bool | None = None) -> torch.Tensor:
        logits = self.logits(hf, idx, self.use_fast if fast is None else fast)
        if self.targets is None:
            tgt = torch.tensor(
                [t for i in idx for t in self.exs[i].targets()], device=logits.device
            )
            return nn.functional.cross_entropy(logits.float(), tgt)
        return kl_to_teacher(logits, _cat_targets([self.targets[i] for i in idx])).mean()

    def batch(self, step: int) -> list[int]:
        """Examples of step ``step`` (1-based): consecutive slices of a stream of per-epoch
        permutations seeded by (seed, epoch), so a resumed run sees the same batches."""
        n = len(self.exs)
        b = min(self.cfg.batch_size, n)
        out = []
        for k in range((step - 1) * b, step * b):
            epoch, j = divmod(k, n)
            if epoch not in self._perms:
                g = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + epoch)
                self._perms[epoch] = torch.randperm(n, generator=g).tolist()
            out.append(self._perms[epoch][j])
        return out

    def verify_fast(self, hf: nn.Module) -> bool:
        """True if the fast path's loss on the first batch matches the full forward."""
        with torch.no_grad():
            a = float(self.loss(hf, self.batch(1), fast=True))
            b = float(self.loss(hf, self.batch(1), fast=False))
        ok = math.isclose(a, b, rel_tol=1e-4, abs_tol=1e-5)
        if not ok:
            warnings.warn(
                f"cached-lower-layers path disagrees with the full forward (loss {a:.6g} vs "
                f"{b:.6g}) on {type(hf).__name__}; using the full forward",
                RuntimeWarning,
                stacklevel=3,
            )
        return ok


# --------------------------------------------------------------------------- distill


def _resolve_layers(lm: LoadedModel, cfg: DistillConfig) -> list[int]:
    n = lm.n_layers
    layers = list(cfg.layers) if cfg.layers is not None else default_layers(n)
    bad = [x for x in layers if not 0 <= x < n]
    if bad or not layers:
        raise ValueError(
            f"LoRA layers {bad or layers} are out of range: this model has blocks 0..{n - 1}"
        )
    return sorted(set(layers))


def _as_data(data: TeacherData | str | Path) -> TeacherData:
    d = data if isinstance(data, TeacherData) else TeacherData.load(data)
    if not d.samples:
        raise ValueError("the teacher data has no kept samples: generate more or relax the filter")
    return d


def _base_spec(lm: LoadedModel) -> str:
    return lm.name if lm.source.startswith(("pypi:", "hf:")) or not lm.source else lm.source


def _versions() -> dict[str, str]:
    import peft
    import transformers

    from steerlens.version import __version__

    return {
        "steerlens": __version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
    }


def _ckpt_dirs(out: Path) -> dict[int, Path]:
    res = {}
    for p in out.glob("checkpoint-*"):
        tail = p.name.split("-", 1)[1]
        if p.is_dir() and tail.isdigit() and (p / "adapter_model.safetensors").is_file():
            res[int(tail)] = p
    return dict(sorted(res.items()))


def _lineage_diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Names of the lineage entries (config fields as ``config.<name>``) that differ."""
    prev = old.get("lineage") or {}
    out = []
    for key, val in new.items():
        if key == "config" and isinstance(prev.get(key), dict):
            out += [f"config.{k}" for k, v in val.items() if prev[key].get(k) != v]
        elif prev.get(key) != val:
            out.append(key)
    return out or ["format"]


def _result_from_record(
    out: Path, record: dict[str, Any], steps: int, resumed: int
) -> DistillResult:
    ck = {s: p for s, p in _ckpt_dirs(out).items() if s <= steps}
    return DistillResult(
        out, list(ck), list(ck.values()), list(record["losses"][:steps]), record, resumed
    )


def distill(
    base_model: Any,
    data: TeacherData | str | Path,
    out_dir: str | Path,
    *,
    teacher_system: str | None = None,
    config: DistillConfig | None = None,
    overwrite: bool = False,
    progress: bool | None = None,
) -> DistillResult:
    """Train a LoRA student of ``base_model`` on the teacher's numbers; save a checkpoint series.

    ``teacher_system`` (default: the system prompt recorded in ``data``) makes the teacher for
    ``loss="kl"``: the base with that system prompt. The student sees no system prompt
    (``config.student_system``). Writes ``out_dir/checkpoint-N`` every ``config.save_every``
    steps and at the end, and ``out_dir/distill.json``.

    Resuming: if ``out_dir`` holds a run with the same lineage (base fingerprint, teacher prompt,
    data hash, config except ``steps``/``save_every``), training continues from its last
    checkpoint and gives the same weights as an uninterrupted run; a different run there is an
    error unless ``overwrite=True`` (which deletes its checkpoints and record).
    ``base_model`` itself is never modified.
    """
    lm = as_model(base_model)
    cfg = config or DistillConfig()
    d = _as_data(data)
    if teacher_system is None:
        teacher_system = d.system
    if cfg.loss == "kl" and teacher_system is None:
        raise ValueError(
            "loss='kl' needs the teacher's system prompt: pass teacher_system=... (the data "
            "records none), or use DistillConfig(loss='sft')"
        )
    layers = _resolve_layers(lm, cfg)
    out = Path(out_dir).expanduser()
    lineage = {
        "base_fingerprint": lm.fingerprint,
        "teacher_system": teacher_system if cfg.loss == "kl" else None,
        "data_sha256": d.sha256,
        "config": cfg.lineage(),
        "layers": layers,
    }
    lineage_hash = _sha(lineage)[:16]
    rec_path = out / RECORD_NAME
    start, losses = 0, []
    if rec_path.is_file() or _ckpt_dirs(out):
        old = json.loads(rec_path.read_text()) if rec_path.is_file() else None
        same = old is not None and old.get("lineage_hash") == lineage_hash
        if not same and not overwrite:
            what = (
                f"a different run (differing: {', '.join(_lineage_diff(old, lineage))})"
                if old is not None
                else "checkpoints with no distill.json"
            )
            raise DistillError(
                f"{out} already holds {what}. Use another out_dir, or pass overwrite=True to "
                "delete its checkpoints and record."
            )
        if not same:
            for p in _ckpt_dirs(out).values():
                shutil.rmtree(p)
            rec_path.unlink(missing_ok=True)
        else:
            assert old is not None
            done = [
                s
                for s, p in _ckpt_dirs(out).items()
                if s <= cfg.steps and (p / OPTIMIZER_NAME).is_file()
            ]
            if (done and done[-1] == cfg.steps) or old.get("steps_done", 0) >= cfg.steps:
                return _result_from_record(out, old, cfg.steps, cfg.steps)
            if done and len(old.get("losses", [])) >= done[-1]:
                start, losses = done[-1], list(old["losses"][: done[-1]])
    out.mkdir(parents=True, exist_ok=True)

    t0 = time.perf_counter()
    trainer = _Trainer(lm, d, teacher_system, cfg, layers, progress)
    t_prep = time.perf_counter() - t0
    student = _make_student(lm, cfg, layers)
    hf = _inner_hf(student)
    params = [p for p in student.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=cfg.lr)
    if start:
        _restore(student, opt, out / f"checkpoint-{start}")
    if trainer.use_fast and cfg.verify_fast_path:
        trainer.use_fast = trainer.verify_fast(hf)

    record: dict[str, Any] = {
        "format": _FORMAT,
        "lineage_hash": lineage_hash,
        "lineage": lineage,
        "base": describe(lm),
        "base_spec": _base_spec(lm),
        "teacher_system": teacher_system,
        "student_system": cfg.student_system,
        "data": d.meta(),
        "config": asdict(cfg),
        "layers": layers,
        "seed": cfg.seed,
        "versions": _versions(),
        "fast_path": trainer.use_fast,
        "n_examples": len(trainer.exs),
        "n_response_tokens": sum(e.n_pred for e in trainer.exs),
        "prep_seconds": round(t_prep, 2),
        "steps_done": start,
        "losses": losses,
        "checkpoints": [],
    }
    t_train = time.perf_counter()
    bar = tqdm(range(start + 1, cfg.steps + 1), desc="distill", disable=tqdm_disable(progress))
    for step in bar:
        loss = trainer.loss(hf, trainer.batch(step))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.max_grad_norm is not None:
            nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        opt.step()
        losses.append(float(loss.detach()))
        bar.set_postfix(loss=f"{losses[-1]:.4f}")
        if step % cfg.save_every == 0 or step == cfg.steps:
            _save_checkpoint(student, opt, out / f"checkpoint-{step}", lm, step, losses)
            record["steps_done"] = step
            record["train_seconds"] = round(time.perf_counter() - t_train, 2)
            record["checkpoints"] = [
                {"step": s, "path": p.name, "loss": losses[s - 1]}
                for s, p in _ckpt_dirs(out).items()
                if s <= step
            ]
            _write_json(rec_path, record)
    if cfg.steps == 0 or start == cfg.steps:
        _write_json(rec_path, record)
    del student, hf, opt
    return _result_from_record(out, record, cfg.steps, start)


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=2, default=str))
    tmp.replace(path)


def _save_checkpoint(
    student: Any,
    opt: torch.optim.Optimizer,
    path: Path,
    lm: LoadedModel,
    step: int,
    losses: list[float],
) -> None:
    """Write a PEFT adapter folder (+ optimizer state and step record) atomically."""
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    student.peft_config["default"].base_model_name_or_path = _base_spec(lm)
    student.save_pretrained(str(tmp), save_embedding_layers=False)
    torch.save(opt.state_dict(), tmp / OPTIMIZER_NAME)
    _write_json(tmp / STATE_NAME, {"step": step, "loss": losses[-1], "losses": losses})
    shutil.rmtree(path, ignore_errors=True)
    tmp.replace(path)


def _restore(student: Any, opt: torch.optim.Optimizer, path: Path) -> None:
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    weights = load_file(str(path / "adapter_model.safetensors"))
    res = set_peft_model_state_dict(student, weights)
    missing = [k for k in getattr(res, "missing_keys", []) if "lora_" in k]
    if missing:
        raise DistillError(f"cannot resume from {path}: adapter is missing {missing[:3]}")
    opt.load_state_dict(torch.load(path / OPTIMIZER_NAME, weights_only=True))


def distill_pair(
    base_model: Any,
    data: TeacherData | str | Path,
    control_data: TeacherData | str | Path,
    out_dir: str | Path,
    *,
    config: DistillConfig | None = None,
    overwrite: bool = False,
    progress: bool | None = None,
) -> tuple[DistillResult, DistillResult]:
    """The main series (teacher data, ``out_dir/main``) and the control series (benign-teacher
    data, ``out_dir/control``), trained identically; each teacher's system prompt is read from
    its data."""
    out = Path(out_dir).expanduser()
    main = distill(
        base_model, data, out / "main", config=config, overwrite=overwrite, progress=progress
    )
    ctrl = distill(
        base_model,
        control_data,
        out / "control",
        config=config,
        overwrite=overwrite,
        progress=progress,
    )
    return main, ctrl


def training_loss(
    base_model: Any,
    data: TeacherData | str | Path,
    *,
    teacher_system: str | None = None,
    config: DistillConfig | None = None,
    progress: bool | None = None,
) -> float:
    """The loss of the untrained student (the base, with ``config.student_system``) over all
    samples: how far the student starts from the teacher (0 when both see the same system
    prompt)."""
    lm = as_model(base_model)
    cfg = replace(config or DistillConfig(), cache_lower_layers=False)
    d = _as_data(data)
    if teacher_system is None:
        teacher_system = d.system
    trainer = _Trainer(lm, d, teacher_system, cfg, _resolve_layers(lm, cfg), progress)
    total, count = 0.0, 0
    with torch.inference_mode():
        for s in range(0, len(trainer.exs), cfg.eval_batch_size):
            idx = list(range(s, min(len(trainer.exs), s + cfg.eval_batch_size)))
            n_tok = sum(trainer.exs[i].n_pred for i in idx)
            total += float(trainer.loss(lm.model, idx, fast=False)) * n_tok
            count += n_tok
    return total / count


__all__ = [
    "DistillConfig",
    "DistillError",
    "DistillResult",
    "NumberTokensOnly",
    "TeacherData",
    "default_layers",
    "default_n_samples",
    "distill",
    "distill_pair",
    "generate_teacher_data",
    "kl_to_teacher",
    "training_loss",
]
