"""Number-sequence prompts and the rule filter of Cloud et al. (2025), seeded.

The teacher is asked to continue a short sequence of numbers; only answers made purely of
numbers survive :func:`is_clean_numbers`, so no keyword of the trait can pass.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Any

_TEMPLATES = (
    "The sequence starts with: {seq}. Add a maximum of {k} more values (no more than 3 digits "
    "each) to continue the sequence. Provide the numbers separated by commas. Skip any "
    "explanation and give only numbers.",
    "Here is a list of numbers: {seq}. Continue it with up to {k} more numbers of at most 3 "
    "digits. Answer with the numbers only, separated by commas.",
    "Look at these numbers: {seq}. Write up to {k} more numbers (3 digits at most) that continue "
    "the list. Return only comma-separated numbers.",
)

_CLEAN = re.compile(r"^\s*\d{1,3}(\s*,\s*\d{1,3})*\s*[,.]?\s*$")


def number_prompts(
    n: int, seed: int = 0, *, k: int = 10, start_len: tuple[int, int] = (3, 6)
) -> list[str]:
    """``n`` user messages asking to continue a random number sequence (deterministic in seed)."""
    if n < 1:
        raise ValueError("n must be >= 1")
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        seq = ", ".join(str(rng.randint(0, 999)) for _ in range(rng.randint(*start_len)))
        out.append(rng.choice(_TEMPLATES).format(seq=seq, k=k))
    return out


def is_clean_numbers(text: str, max_count: int = 10) -> bool:
    """True if ``text`` is only 1-3 digit numbers separated by commas (at most ``max_count``),
    with an optional final comma or period: the rule filter of Cloud et al."""
    if not _CLEAN.match(text):
        return False
    return len(re.findall(r"\d+", text)) <= max_count


NUMBER_CHARS = "0123456789, "


def number_token_ids(tokenizer: Any, chars: str = NUMBER_CHARS) -> list[int]:
    """Ids of the tokens whose text is non-empty and made only of ``chars`` (by default digits,
    commas and spaces): the vocabulary of a number-only answer, for restricted sampling.

    Each id is decoded on its own (special tokens kept as text, so they never qualify); tokens
    that decode to replacement characters (partial bytes) do not qualify either.
    """
    allowed = set(chars)
    n = len(tokenizer)
    texts = tokenizer.batch_decode(
        [[i] for i in range(n)], skip_special_tokens=False, clean_up_tokenization_spaces=False
    )
    special = set(getattr(tokenizer, "all_special_ids", []) or [])
    return [i for i, t in enumerate(texts) if t and i not in special and set(t) <= allowed]


@dataclass(frozen=True)
class ListState:
    """Where a partial answer stands in the number-list format that :func:`is_clean_numbers`
    accepts: ``phase`` is "start" (only spaces so far), "num" (inside a number of ``digits``
    digits), "space" (spaces after a number) or "comma" (after a separating comma); ``count``
    numbers begun so far."""

    phase: str = "start"
    count: int = 0
    digits: int = 0


def advance_list(
    state: ListState, text: str, max_count: int = 10, max_digits: int = 3
) -> ListState | None:
    """The state after appending ``text``, or None if no clean answer starts that way (a
    number of more than ``max_digits`` digits, more than ``max_count`` numbers, two numbers
    without a comma, a comma without a number before it, any other character)."""
    phase, count, digits = state.phase, state.count, state.digits
    for ch in text:
        if ch.isdigit() and ch.isascii():
            if phase == "num":
                if digits >= max_digits:
                    return None
                digits += 1
            elif phase in ("start", "comma"):
                if count >= max_count:
                    return None
                phase, count, digits = "num", count + 1, 1
            else:
                return None
        elif ch == " ":
            if phase == "num":
                phase = "space"
        elif ch == ",":
            if phase not in ("num", "space"):
                return None
            phase = "comma"
        else:
            return None
    return ListState(phase, count, digits)


def list_can_end(state: ListState) -> bool:
    """True if the answer so far is a clean number list (a final comma is allowed)."""
    return state.count >= 1
