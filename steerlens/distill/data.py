"""Teacher data: number-only sampling (:class:`NumberListGrammar`, :class:`NumberTokensOnly`),
:func:`generate_teacher_data` and the :class:`TeacherData` it returns."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from steerlens.core.common import atomic_write_text, read_json, tqdm_disable
from steerlens.core.vectors import SteeringVector
from steerlens.distill.config import RECORD_FORMAT, json_sha256, rng_devices
from steerlens.distill.sampling import generate_batch
from steerlens.inputs.numbers import (
    ListState,
    advance_list,
    is_clean_numbers,
    list_can_end,
    number_prompts,
    number_token_ids,
)
from steerlens.inputs.prompts import ChatPrompt, EncodedPrompt, encode
from steerlens.loading.models import LoadedModel, as_model
from steerlens.teachers import Teacher, as_teacher

__all__ = [
    "NumberListGrammar",
    "NumberTokensOnly",
    "TeacherData",
    "eos_ids",
    "generate_teacher_data",
    "resolve_teacher",
]


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
    answer a valid prefix of a clean number list (:func:`steerlens.inputs.numbers.advance_list`:
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
    #: the teacher that wrote the samples (its vector travels in ``<stem>.vector.safetensors``)
    teacher: Teacher | None = field(default=None, compare=False, repr=False)

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
        return json_sha256(
            [[s["user"], s["response"], bool(s.get("finished", True))] for s in self.samples]
        )

    @property
    def system(self) -> str | None:
        return self.settings.get("system")

    @property
    def teacher_description(self) -> dict[str, Any] | None:
        """The recorded :meth:`~steerlens.teachers.Teacher.describe` of the teacher that wrote
        the data (None for data made before teachers were recorded, or given by hand)."""
        return self.settings.get("teacher")

    def meta(self) -> dict[str, Any]:
        return {
            "format": RECORD_FORMAT,
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
        lines = "".join(json.dumps(s, ensure_ascii=False) + "\n" for s in self.samples)
        atomic_write_text(p, lines)
        meta = {**self.meta(), "rejected": self.rejected}
        atomic_write_text(_meta_path(p), json.dumps(meta, indent=2, ensure_ascii=False))
        if self.teacher is not None and self.teacher.vector is not None:
            self.teacher.vector.save(_vector_path(p))
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
        meta = read_json(mp) if mp.is_file() else {}
        data = cls(samples, meta.get("settings", {}), meta.get("rejected", []))
        data.teacher = _recorded_teacher(data.teacher_description, _vector_path(p))
        if "sha256" in meta and meta["sha256"] != data.sha256:
            raise ValueError(
                f"{p} does not match the hash in {mp} (edited after saving?): re-generate the "
                "data or delete the meta file to accept the samples as they are"
            )
        return data


def _meta_path(p: Path) -> Path:
    return p.with_name(p.name[: -len(".jsonl")] + ".meta.json")


def _vector_path(p: Path) -> Path:
    return p.with_name(p.name[: -len(".jsonl")] + ".vector.safetensors")


def _recorded_teacher(desc: dict[str, Any] | None, vector_path: Path) -> Teacher | None:
    """The teacher a data file records, rebuilt when everything it needs is there (its vector
    file, an unchanged fine-tune folder); else None (pass ``teacher=`` to use it again)."""
    if not desc:
        return None
    vec = SteeringVector.load(vector_path) if vector_path.is_file() else None
    try:
        return Teacher.from_description(desc, vector=vec)
    except (ValueError, FileNotFoundError):
        return None


def generate_teacher_data(
    model: Any,
    prompts: Sequence[str] | None = None,
    *,
    system: str | None = None,
    teacher: Teacher | str | None = None,
    n: int = 48,
    seed: int = 0,
    restrict_to_numbers: bool | str = True,
    temperature: float = 1.0,
    max_new_tokens: int = 64,
    max_count: int = 10,
    batch_size: int = 48,
    share_prefix: bool = True,
    progress: bool | None = None,
) -> TeacherData:
    """Sample the teacher's continuations of number sequences and keep the clean ones.

    The teacher is ``teacher`` (a :class:`~steerlens.teachers.Teacher`: ``model`` plus a system
    prompt, a steering edit, an ablation or a fine-tune), or the shorthand ``system``: ``model``
    with that system prompt (the trait prompt for the teacher, a neutral one for the benign
    teacher; None with no ``teacher``: the base itself). Every kind samples through the same
    batched path, its edit active while it writes; ``settings["teacher"]`` records its
    :meth:`~steerlens.teachers.Teacher.describe`. ``prompts`` (user messages) default to
    ``number_prompts(n, seed)``.

    ``restrict_to_numbers``: ``True`` or ``"grammar"`` (default) samples only tokens made of
    digits, commas and spaces that keep the answer a clean list of at most ``max_count`` numbers
    of 1-3 digits, then the end of turn (:class:`NumberListGrammar`); ``"tokens"`` only masks
    every token that is not digits/commas/spaces or end of turn (:class:`NumberTokensOnly`; on
    SmolLM2-135M most such answers run past 10 numbers and are rejected); ``False`` samples
    freely. ``share_prefix``: a batch's shared system-prompt prefix runs once into a KV cache
    that every row continues from (:func:`steerlens.distill.sampling.generate_batch`; the same
    distributions up to float rounding). ``temperature=0`` is greedy. Sampling is seeded with ``seed`` without touching the
    global RNG. Every answer then goes through ``is_clean_numbers(text, max_count)``: the kept
    ones form ``samples``, the others ``rejected``.
    """
    lm = as_model(model)
    tch = resolve_teacher(teacher, system)
    if prompts is None:
        prompts = number_prompts(n, seed)
    users = [str(p) for p in prompts]
    if not users:
        raise ValueError("no prompts: pass prompts or n >= 1")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    restriction = _restriction(restrict_to_numbers)
    t0 = time.perf_counter()
    with tch.apply(lm) as tlm:
        sampling = (restriction, temperature, max_new_tokens, max_count, batch_size, seed)
        texts, finished = _sample_answers(tlm, users, tch.system, *sampling, progress, share_prefix)
    kept: list[dict[str, Any]] = []
    rejected: list[dict[str, Any]] = []
    for u, t, f in zip(users, texts, finished, strict=True):
        s = {"user": u, "response": t.strip(), "finished": f}
        (kept if is_clean_numbers(t, max_count) else rejected).append(s)
    settings = {
        "system": tch.system,
        "teacher": tch.describe(),
        "mode": "free" if restriction is None else "restricted",
        "restriction": restriction,
        "temperature": temperature,
        "seed": seed,
        "max_new_tokens": max_new_tokens,
        "max_count": max_count,
        "batch_size": batch_size,
        "n_prompts": len(users),
        "prompts_sha256": json_sha256(users),
        "model": lm.name,
        "fingerprint": lm.fingerprint,
        "seconds": round(time.perf_counter() - t0, 2),
    }
    return TeacherData(kept, settings, rejected, teacher=tch)


def resolve_teacher(teacher: Teacher | str | None, system: str | None) -> Teacher:
    """The teacher from ``teacher=`` or the old shorthand ``system=`` (a system prompt); giving
    both is an error."""
    if teacher is not None and system is not None:
        raise ValueError(
            "pass the teacher once: teacher=Teacher... or the shorthand system='...', not both "
            "(a teacher with a system prompt carries it: Teacher.ablated(v, layer, system) ...)"
        )
    return as_teacher(teacher if teacher is not None else system)


def _restriction(restrict_to_numbers: bool | str) -> str | None:
    """``"grammar"``, ``"tokens"`` or None (free sampling) from the user's setting."""
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
    return restriction


def _number_tokens(tok: Any, restriction: str | None) -> tuple[list[int], dict[int, str]]:
    """The number-only token ids and their texts (none when sampling freely)."""
    if restriction is None:
        return [], {}
    allowed = number_token_ids(tok)
    if not allowed:
        raise ValueError("this tokenizer has no token made only of digits, commas and spaces")
    return allowed, dict(zip(allowed, tok.batch_decode([[i] for i in allowed]), strict=True))


def _sample_answers(
    lm: LoadedModel,
    users: Sequence[str],
    system: str | None,
    restriction: str | None,
    temperature: float,
    max_new_tokens: int,
    max_count: int,
    batch_size: int,
    seed: int,
    progress: bool | None,
    share_prefix: bool = True,
) -> tuple[list[str], list[bool]]:
    """The teacher's decoded answer to each user message (longest prompts first, in batches,
    seeded without touching the global RNG) and whether it ended its turn."""
    tok = lm.tokenizer
    stop = eos_ids(lm)
    allowed, texts_of = _number_tokens(tok, restriction)
    encs = []
    for u in users:
        e = encode(tok, ChatPrompt(u, system=system))
        encs.append(
            EncodedPrompt(e.input_ids[: e.response_start], e.prompt_start, e.response_start)
        )
    order = sorted(range(len(encs)), key=lambda i: (-len(encs[i]), i))
    texts: list[str] = [""] * len(encs)
    finished: list[bool] = [False] * len(encs)
    gen_kwargs: dict[str, Any] = {"max_new_tokens": max_new_tokens, "use_cache": True}
    if temperature > 0:
        gen_kwargs.update(do_sample=True, temperature=temperature, top_k=0, top_p=1.0)
    else:
        gen_kwargs.update(do_sample=False)
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]

    def procs(width: int) -> list[Any]:
        if restriction == "tokens":
            return [NumberTokensOnly(allowed + stop)]
        if restriction == "grammar":
            return [NumberListGrammar(texts_of, stop, width, max_count)]
        return []

    with torch.random.fork_rng(devices=rng_devices(lm.device)):
        torch.manual_seed(seed)
        for idx in tqdm(batches, desc="teacher data", disable=tqdm_disable(progress)):
            seqs, width = generate_batch(
                lm, [encs[i] for i in idx], procs, gen_kwargs, stop, share_prefix
            )
            for row, i in enumerate(idx):
                new = seqs[row, width:].tolist()
                hit = [j for j, t in enumerate(new) if t in stop]
                finished[i] = bool(hit)
                texts[i] = tok.decode(new[: hit[0]] if hit else new, skip_special_tokens=True)
    return texts, finished
