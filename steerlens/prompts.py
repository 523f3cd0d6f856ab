"""Chat prompts, templating and token position masks (DESIGN.md "position").

A prompt is either a plain string (tokenized as raw text, the tokenizer's special tokens added)
or a :class:`ChatPrompt` (system, user, optional answer prefill and response) rendered with the
tokenizer's chat template. Positions:

- ``last``: the final prompt token (after the assistant header and any prefill);
- ``prompt``: every prompt token after the system prompt (from the user's text on; for a plain
  string, every token);
- ``response``: the tokens of ``ChatPrompt.response``;
- ``all``: every non-pad token;
- a custom mask: a callable ``(EncodedPrompt) -> list[int]`` of token indices, or one list of
  indices per prompt.

Left padding never enters a mean: masks index each prompt's own tokens.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Union

import torch
from tqdm.auto import tqdm

from steerlens.core.precision import compute_context

if TYPE_CHECKING:
    from steerlens.loading.models import LoadedModel


@dataclass(frozen=True)
class ChatPrompt:
    """One chat turn: optional system prompt, user message, answer prefill and response."""

    user: str
    system: str | None = None
    prefill: str = ""
    response: str = ""

    def with_system(self, system: str | None) -> ChatPrompt:
        return ChatPrompt(self.user, system, self.prefill, self.response)

    def with_response(self, response: str) -> ChatPrompt:
        return ChatPrompt(self.user, self.system, self.prefill, response)


PromptLike = Union[str, ChatPrompt, Mapping[str, Any]]


@dataclass(frozen=True)
class EncodedPrompt:
    """Token ids of one prompt and where its regions start (token indices)."""

    input_ids: tuple[int, ...]
    prompt_start: int
    response_start: int

    def __len__(self) -> int:
        return len(self.input_ids)


PositionSpec = Union[str, Callable[[EncodedPrompt], Sequence[int]], Sequence[Sequence[int]]]
POSITIONS = ("last", "prompt", "response", "all")


def as_prompt(p: PromptLike) -> str | ChatPrompt:
    if isinstance(p, (str, ChatPrompt)):
        return p
    if isinstance(p, Mapping):
        return ChatPrompt(
            user=str(p["user"]),
            system=p.get("system"),
            prefill=str(p.get("prefill", "")),
            response=str(p.get("response", "")),
        )
    raise TypeError(f"a prompt must be a str, ChatPrompt or mapping, got {type(p).__name__}")


def prompt_set_hash(prompts: Iterable[PromptLike]) -> str:
    """sha256 (first 16 hex) of a prompt list, order included: provenance for vectors."""
    items = [p if isinstance(p, str) else asdict(p) for p in map(as_prompt, prompts)]
    return hashlib.sha256(json.dumps(items, sort_keys=True).encode()).hexdigest()[:16]


def render(tokenizer: Any, prompt: ChatPrompt) -> tuple[str, int, int]:
    """Render a chat prompt; return (text, char where the prompt region starts, char where the
    response starts)."""
    if getattr(tokenizer, "chat_template", None) is None:
        raise ValueError(
            "this tokenizer has no chat template, so ChatPrompt cannot be rendered: set "
            "tokenizer.chat_template, or pass plain strings (tokenized as raw text)"
        )
    msgs: list[dict[str, str]] = []
    if prompt.system is not None:
        msgs.append({"role": "system", "content": prompt.system})
    msgs.append({"role": "user", "content": prompt.user})
    text = tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    after = 0
    if prompt.system is not None:
        sys_text = tokenizer.apply_chat_template(msgs[:1], tokenize=False)
        if text.startswith(sys_text):
            after = len(sys_text)
    start = text.find(prompt.user, after) if prompt.user else -1
    if start < 0:
        start = after
    text = text + prompt.prefill
    return text + prompt.response, start, len(text)


def _char_to_token(offsets: Sequence[tuple[int, int]], char: int) -> int:
    """Index of the first token that ends after ``char`` (the token holding or following it)."""
    for i, (_, end) in enumerate(offsets):
        if end > char:
            return i
    return len(offsets)


def encode(tokenizer: Any, prompt: PromptLike) -> EncodedPrompt:
    """Tokenize one prompt and locate its prompt and response regions."""
    p = as_prompt(prompt)
    if isinstance(p, str):
        if not p:
            raise ValueError("empty prompt string: every prompt needs at least one token")
        ids = tokenizer(p, add_special_tokens=True)["input_ids"]
        return EncodedPrompt(tuple(ids), 0, len(ids))
    text, p_char, r_char = render(tokenizer, p)
    if getattr(tokenizer, "is_fast", False):
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids = enc["input_ids"]
        offs = enc["offset_mapping"]
        p_tok = _char_to_token(offs, p_char)
        r_tok = _char_to_token(offs, r_char) if r_char < len(text) else len(ids)
    else:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        p_tok = len(tokenizer(text[:p_char], add_special_tokens=False)["input_ids"])
        r_tok = len(tokenizer(text[:r_char], add_special_tokens=False)["input_ids"])
    return EncodedPrompt(tuple(ids), p_tok, r_tok)


def position_indices(enc: EncodedPrompt, position: PositionSpec, index: int = 0) -> list[int]:
    """Token indices (into this prompt's own, unpadded ids) that ``position`` selects."""
    n = len(enc)
    if callable(position):
        idx = list(position(enc))
    elif isinstance(position, str):
        if position == "last":
            idx = [enc.response_start - 1]
        elif position == "prompt":
            idx = list(range(enc.prompt_start, enc.response_start))
        elif position == "response":
            idx = list(range(enc.response_start, n))
            if not idx:
                raise ValueError(
                    f"prompt {index} has no response tokens: position='response' needs "
                    "ChatPrompt(..., response='...')"
                )
        elif position == "all":
            idx = list(range(n))
        else:
            raise ValueError(f"unknown position {position!r}: use one of {POSITIONS} or a mask")
    else:
        idx = list(position[index])
    if not idx:
        raise ValueError(f"position {position!r} selects no tokens of prompt {index}")
    for i in idx:
        if not -n <= i < n:
            raise IndexError(f"position index {i} is outside prompt {index} ({n} tokens)")
    return [i % n for i in idx]


def position_name(position: PositionSpec) -> str:
    return position if isinstance(position, str) else "custom"


def pad_batch(
    encs: Sequence[EncodedPrompt], pad_id: int, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Left-pad a batch: (input_ids, attention_mask, position_ids), positions counting from 0
    at each prompt's first real token so padding changes nothing."""
    width = max(len(e) for e in encs)
    ids = torch.full((len(encs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(encs), width), dtype=torch.long)
    for row, e in enumerate(encs):
        ids[row, width - len(e) :] = torch.tensor(e.input_ids, dtype=torch.long)
        mask[row, width - len(e) :] = 1
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    return ids.to(device), mask.to(device), pos.to(device)


def check_prompts(prompts: Sequence[PromptLike], what: str = "prompts") -> list[str | ChatPrompt]:
    out = [as_prompt(p) for p in prompts]
    if not out:
        raise ValueError(f"empty prompt set: {what} needs at least one prompt")
    return out


def generate_texts(
    model: LoadedModel,
    prompts: Sequence[PromptLike],
    *,
    max_new_tokens: int = 32,
    do_sample: bool = False,
    seed: int | None = None,
    batch_size: int = 16,
    temperature: float = 1.0,
    progress: bool = False,
    **kwargs: Any,
) -> list[str]:
    """Generate the new text for each prompt (chat-templated for ``ChatPrompt``), batched with
    left padding. Sampling is seeded without touching the global RNG state."""
    tok = model.tokenizer
    items = check_prompts(prompts)
    encs = [encode(tok, p) for p in items]
    encs = [
        EncodedPrompt(e.input_ids[: e.response_start], e.prompt_start, e.response_start)
        for e in encs
    ]
    out: list[str] = [""] * len(encs)
    order = sorted(range(len(encs)), key=lambda i: -len(encs[i]))
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        batches = range(0, len(order), batch_size)
        for start in tqdm(batches, desc="generate", disable=not progress, leave=False):
            idx = order[start : start + batch_size]
            ids, mask, _ = pad_batch([encs[i] for i in idx], tok.pad_token_id, model.device)
            gen_kwargs: dict[str, Any] = {"max_new_tokens": max_new_tokens, "do_sample": do_sample}
            if do_sample:
                gen_kwargs["temperature"] = temperature
                gen_kwargs["top_k"] = 0
                gen_kwargs["top_p"] = 1.0
            gen_kwargs.update(kwargs)
            with torch.inference_mode(), compute_context(model.model):
                seqs = model.model.generate(  # type: ignore[operator]
                    input_ids=ids, attention_mask=mask, pad_token_id=tok.pad_token_id, **gen_kwargs
                )
            for row, i in enumerate(idx):
                out[i] = tok.decode(seqs[row, ids.shape[1] :], skip_special_tokens=True)
    return out
