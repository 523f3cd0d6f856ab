"""Contrast sets in the formats the field uses: CAA A/B files, persona_vectors trait files, and
plain JSONL of ``{"pos", "neg"}`` pairs (:meth:`ContrastSet.from_file`, detected by content).

- **CAA** (Rimsky et al. 2024, "Steering Llama 2 via Contrastive Activation Addition"): a JSON
  list (or JSONL) of ``{"question", "answer_matching_behavior", "answer_not_matching_behavior"}``
  with answers such as ``"(A)"``. CAA appends the answer as the model's turn and reads the
  residual stream at the answer letter (index −2 of ``... (A)``). Here each item becomes two
  :class:`~steerlens.inputs.prompts.ChatPrompt` s whose answer prefill ends at the letter (``"(A"``), so
  position ``"last"`` is the letter token; the model is causal, so the activation there is the
  one CAA reads (the closing parenthesis after it changes nothing before it).
- **persona_vectors** (Chen et al. 2025, "Persona Vectors"): a JSON object ``{"instruction":
  [{"pos", "neg"}, ...], "questions": [...], "eval_prompt": "..."}``. Every instruction pair ×
  question is one contrast: the question under the system prompt persona_vectors builds,
  ``"You are {a|an} {trait} assistant. {pos}"`` against ``"You are a helpful assistant. {neg}"``
  (``eval/eval_persona.py``), read at the last prompt token (their ``prompt_last`` variant; their
  main ``response_avg`` vector needs generated, judge-filtered responses, which an offline
  contrast set does not have).
- **pairs**: JSONL (or a JSON list) of ``{"pos": P, "neg": N}``, each P/N a string or a
  ``{user, system, prefill, response}`` object.

A file that mixes formats, or an item that lacks a key, fails with the line and the keys
expected. Import-light: JSON and :mod:`steerlens.inputs.prompts` only.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from steerlens.inputs.prompts import ChatPrompt, PromptLike, as_prompt, prompt_set_hash

__all__ = ["CAA_KEYS", "PAIR_KEYS", "PERSONA_KEYS", "ContrastSet", "ContrastSetError"]

CAA_KEYS = ("question", "answer_matching_behavior", "answer_not_matching_behavior")
PAIR_KEYS = ("pos", "neg")
PERSONA_KEYS = ("instruction", "questions", "eval_prompt")
_LETTER = re.compile(r"^\(?\s*([A-Za-z0-9])\s*\)?$")


class ContrastSetError(ValueError):
    """A contrast file is malformed; the message names the line and the keys expected."""


@dataclass(frozen=True)
class ContrastSet:
    """Paired positive and negative prompts, read from a file in a known format.

    ``pos[i]`` and ``neg[i]`` are one contrast; ``position`` is where the format reads the
    residual stream (every format here reads ``"last"``); ``format`` is ``"caa"``,
    ``"persona_vectors"`` or ``"pairs"``; ``extra`` keeps the file's other fields (the
    persona_vectors ``questions`` and ``eval_prompt``, the trait name).
    """

    pos: tuple[str | ChatPrompt, ...]
    neg: tuple[str | ChatPrompt, ...]
    format: str = "pairs"
    position: str = "last"
    source: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "pos", tuple(as_prompt(p) for p in self.pos))
        object.__setattr__(self, "neg", tuple(as_prompt(p) for p in self.neg))
        if not self.pos:
            raise ContrastSetError(f"{self.source or 'contrast set'}: no contrasts")
        if len(self.pos) != len(self.neg):
            raise ContrastSetError(
                f"{self.source or 'contrast set'}: {len(self.pos)} positive and {len(self.neg)} "
                "negative prompts; a contrast set pairs them one to one"
            )

    def __len__(self) -> int:
        return len(self.pos)

    def provenance(self) -> dict[str, Any]:
        """What the vector's meta records about the set (hashes, not the texts)."""
        return {
            "contrast_format": self.format,
            "contrast_source": None if self.source is None else Path(self.source).name,
            "n_contrasts": len(self),
            "pos_prompts_hash": prompt_set_hash(self.pos),
            "neg_prompts_hash": prompt_set_hash(self.neg),
        }

    def __repr__(self) -> str:
        src = f", source={Path(self.source).name!r}" if self.source else ""
        return (
            f"ContrastSet(format={self.format!r}, n={len(self)}, position={self.position!r}{src})"
        )

    # ------------------------------------------------------------------ readers
    @classmethod
    def from_pairs(
        cls, pos: Sequence[PromptLike], neg: Sequence[PromptLike], **kw: Any
    ) -> ContrastSet:
        """A set from two paired prompt lists."""
        return cls(tuple(as_prompt(p) for p in pos), tuple(as_prompt(p) for p in neg), **kw)

    @classmethod
    def from_file(
        cls, path: str | os.PathLike[str], *, assistant_name: str | None = None
    ) -> ContrastSet:
        """Read a CAA, persona_vectors or pairs file (format detected from the content, see the
        module doc). ``assistant_name``: the persona_vectors trait name in the positive system
        prompt (default: the file's stem, as persona_vectors uses the trait name)."""
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"no contrast file at {p}")
        text = p.read_text(encoding="utf-8")
        stripped = text.lstrip()
        if not stripped:
            raise ContrastSetError(f"{p} is empty: {_EXPECTED}")
        whole = _whole_object(text)
        if isinstance(whole, Mapping) and "instruction" in whole:
            return persona_contrasts(whole, str(p), assistant_name or p.stem)
        rows = list(_json_rows(text, p))
        return _rows_contrasts(rows, str(p))

    @classmethod
    def coerce(cls, value: Any) -> ContrastSet | None:
        """A ContrastSet from a set or a contrast file path; None for anything else."""
        if isinstance(value, ContrastSet):
            return value
        if isinstance(value, (str, os.PathLike)) and Path(value).suffix in (".json", ".jsonl"):
            return cls.from_file(value)
        return None


_EXPECTED = (
    f"expected a CAA JSON list of {list(CAA_KEYS)}, a persona_vectors trait file "
    f"{{{', '.join(map(repr, PERSONA_KEYS))}}}, or JSONL of {{'pos': ..., 'neg': ...}} pairs"
)


def _whole_object(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return None


def _json_rows(text: str, path: Path) -> Iterator[tuple[int, Any]]:
    """(line, item) of a top-level JSON list, or of each non-empty line of a JSONL file."""
    stripped = text.lstrip()
    if stripped.startswith("["):
        dec = json.JSONDecoder()
        i = len(text) - len(stripped) + 1
        while True:
            while i < len(text) and text[i] in " \t\r\n,":
                i += 1
            if i >= len(text):
                raise ContrastSetError(f"{path}: the JSON list is not closed with ']'")
            if text[i] == "]":
                return
            line = text.count("\n", 0, i) + 1
            try:
                item, i = dec.raw_decode(text, i)
            except json.JSONDecodeError as exc:
                raise ContrastSetError(f"{path}:{line}: not valid JSON ({exc.msg})") from None
            yield line, item
    for n, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        try:
            yield n, json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ContrastSetError(f"{path}:{n}: not valid JSON ({exc.msg}); {_EXPECTED}") from None


def _kind(item: Any) -> str | None:
    if not isinstance(item, Mapping):
        return None
    if any(k in item for k in CAA_KEYS):
        return "caa"
    if any(k in item for k in PAIR_KEYS):
        return "pairs"
    return None


def _rows_contrasts(rows: Sequence[tuple[int, Any]], source: str) -> ContrastSet:
    if not rows:
        raise ContrastSetError(f"{source} holds no items: {_EXPECTED}")
    first_line, first = rows[0]
    fmt = _kind(first)
    if fmt is None:
        got = sorted(first) if isinstance(first, Mapping) else type(first).__name__
        raise ContrastSetError(f"{source}:{first_line}: got {got}; {_EXPECTED}")
    keys = CAA_KEYS if fmt == "caa" else PAIR_KEYS
    pos: list[str | ChatPrompt] = []
    neg: list[str | ChatPrompt] = []
    for line, item in rows:
        kind = _kind(item)
        if kind != fmt:
            got = sorted(item) if isinstance(item, Mapping) else type(item).__name__
            raise ContrastSetError(
                f"{source}:{line}: this item has keys {got}, but line {first_line} began a "
                f"{fmt} file; every item needs {list(keys)} (do not mix formats in one file)"
            )
        missing = [k for k in keys if k not in item]
        if missing:
            raise ContrastSetError(
                f"{source}:{line}: missing {missing}; a {fmt} item needs {list(keys)}"
            )
        a, b = caa_pair(item, f"{source}:{line}") if fmt == "caa" else _pair(item, source, line)
        pos.append(a)
        neg.append(b)
    return ContrastSet(tuple(pos), tuple(neg), fmt, "last", source)


def _pair(item: Mapping[str, Any], source: str, line: int) -> tuple[str | ChatPrompt, ...]:
    out: list[str | ChatPrompt] = []
    for key in PAIR_KEYS:
        val = item[key]
        if isinstance(val, str) and val:
            out.append(val)
        elif isinstance(val, Mapping) and isinstance(val.get("user"), str):
            out.append(as_prompt(val))
        else:
            raise ContrastSetError(
                f"{source}:{line}: {key!r} must be a non-empty string or an object "
                f"{{'user': ..., 'system': ..., 'prefill': ...}}, got {val!r}"
            )
    return tuple(out)


def caa_answer_prefill(answer: Any, where: str) -> str:
    """The answer prefill up to and including its letter: ``"(A)"`` → ``"(A"`` (the token CAA
    reads at index −2 of the full answer)."""
    if not isinstance(answer, str):
        raise ContrastSetError(f"{where}: a CAA answer must be a string like '(A)', got {answer!r}")
    m = _LETTER.match(answer.strip())
    if m is None:
        raise ContrastSetError(
            f"{where}: CAA answer {answer!r} is not an answer letter like '(A)' or 'B': the A/B "
            "format reads the residual stream at the letter; for free-text contrasts write a "
            "pairs file of {'pos': ..., 'neg': ...}"
        )
    s = answer.strip()
    return s[: s.index(m.group(1)) + 1]


def caa_pair(item: Mapping[str, Any], where: str) -> tuple[ChatPrompt, ChatPrompt]:
    """One CAA item as (matching, not matching) chat prompts ending at the answer letter."""
    q = item["question"]
    if not isinstance(q, str) or not q.strip():
        raise ContrastSetError(f"{where}: 'question' must be a non-empty string")
    return (
        ChatPrompt(q, None, caa_answer_prefill(item["answer_matching_behavior"], where)),
        ChatPrompt(q, None, caa_answer_prefill(item["answer_not_matching_behavior"], where)),
    )


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def persona_system(instruction: str, assistant_name: str) -> str:
    """persona_vectors' system prompt: ``"You are {a|an} {name} assistant. {instruction}"``."""
    return f"You are {_article(assistant_name)} {assistant_name} assistant. {instruction}"


def check_persona(data: Mapping[str, Any], source: str) -> None:
    """Raise naming the field when a persona_vectors trait file is malformed."""
    missing = [k for k in PERSONA_KEYS if k not in data]
    if missing:
        raise ContrastSetError(
            f"{source}: a persona_vectors trait file needs {list(PERSONA_KEYS)}; missing {missing}"
        )
    pairs, questions = data["instruction"], data["questions"]
    if not isinstance(pairs, list) or not pairs:
        raise ContrastSetError(f"{source}: 'instruction' must be a non-empty list of pos/neg pairs")
    for i, pair in enumerate(pairs):
        if not isinstance(pair, Mapping) or not all(
            isinstance(pair.get(k), str) and pair.get(k) for k in PAIR_KEYS
        ):
            raise ContrastSetError(
                f"{source}: instruction[{i}] must be {{'pos': str, 'neg': str}}, got {pair!r}"
            )
    if not isinstance(questions, list) or not questions:
        raise ContrastSetError(f"{source}: 'questions' must be a non-empty list of strings")
    for i, q in enumerate(questions):
        if not isinstance(q, str) or not q.strip():
            raise ContrastSetError(f"{source}: questions[{i}] must be a non-empty string")
    if not isinstance(data["eval_prompt"], str):
        raise ContrastSetError(f"{source}: 'eval_prompt' must be a string (the judge prompt)")


def persona_contrasts(data: Mapping[str, Any], source: str, assistant_name: str) -> ContrastSet:
    """Every instruction pair × question of a persona_vectors trait file (pair-major order)."""
    check_persona(data, source)
    pos: list[str | ChatPrompt] = []
    neg: list[str | ChatPrompt] = []
    for pair in data["instruction"]:
        sys_pos = persona_system(pair["pos"], assistant_name)
        sys_neg = persona_system(pair["neg"], "helpful")
        for q in data["questions"]:
            pos.append(ChatPrompt(q, sys_pos))
            neg.append(ChatPrompt(q, sys_neg))
    extra = {
        "trait": assistant_name,
        "questions": list(data["questions"]),
        "eval_prompt": data["eval_prompt"],
        "instruction": [dict(p) for p in data["instruction"]],
    }
    return ContrastSet(tuple(pos), tuple(neg), "persona_vectors", "last", source, extra)
