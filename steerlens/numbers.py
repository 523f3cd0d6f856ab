"""Number-sequence prompts and the rule filter of Cloud et al. (2025), seeded.

The teacher is asked to continue a short sequence of numbers; only answers made purely of
numbers survive :func:`is_clean_numbers`, so no keyword of the trait can pass.
"""

from __future__ import annotations

import random
import re

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


def number_prompts(n: int, seed: int = 0, *, k: int = 10, start_len: tuple[int, int] = (3, 6)) -> list[str]:
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
