"""Grammar-constrained actions: at each step the model may only emit one of the well-formed
candidate actions of the current workspace (token by token, a trie over their token ids),
then end its turn. Sampling with :class:`ActionGrammar` draws from the model's next-token
distribution renormalised over the allowed tokens, as
:class:`steerlens.distill.NumberListGrammar` does for number lists."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

__all__ = ["ActionGrammar", "ActionTrie", "end_ids"]


class ActionTrie:
    """The token sequences of a set of actions; :meth:`allowed` lists the tokens that keep a
    prefix on some action, plus the end-of-turn ids once the prefix is a whole action."""

    def __init__(self, seqs: Sequence[Sequence[int]], end: Sequence[int]):
        if not seqs:
            raise ValueError("ActionTrie needs at least one action")
        self.end = sorted({int(e) for e in end})
        if not self.end:
            raise ValueError("ActionTrie needs at least one end-of-turn id")
        self.root: dict[int, Any] = {}
        self.actions: dict[tuple[int, ...], int] = {}
        for k, seq in enumerate(seqs):
            if not seq:
                raise ValueError(f"action {k} has no tokens")
            node = self.root
            for t in seq:
                node = node.setdefault(int(t), {})
            node[-1] = k  # terminal marker: which action ends here
            self.actions.setdefault(tuple(int(t) for t in seq), k)

    def allowed(self, prefix: Sequence[int]) -> list[int]:
        node = self.root
        for t in prefix:
            nxt = node.get(int(t))
            if nxt is None:
                return list(self.end)  # finished (or off the trie): only end of turn
            node = nxt
        out = [t for t in node if t >= 0]
        if -1 in node:
            out += self.end
        return out

    def action_of(self, ids: Sequence[int]) -> int | None:
        """Index of the action whose tokens are ``ids`` (end-of-turn ids stripped)."""
        body = [int(t) for t in ids]
        while body and body[-1] in self.end:
            body.pop()
        return self.actions.get(tuple(body))


class ActionGrammar:
    """A ``LogitsProcessor``: row r of the batch may only continue along ``tries[r]``.
    ``start`` is the number of prompt columns of ``input_ids``."""

    def __init__(self, tries: Sequence[ActionTrie], start: int):
        self.tries, self.start = list(tries), start

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if input_ids.shape[0] != len(self.tries):
            raise ValueError(f"{input_ids.shape[0]} rows but {len(self.tries)} action tries")
        mask = torch.ones_like(scores, dtype=torch.bool)
        for r, row in enumerate(input_ids[:, self.start :].tolist()):
            ids = [i for i in self.tries[r].allowed(row) if i < scores.shape[-1]]
            mask[r, ids] = False
        return scores.masked_fill(mask, float("-inf"))


def end_ids(model: Any, tokenizer: Any) -> list[int]:
    """End-of-turn ids: the tokenizer's eos and the generation config's eos ids."""
    out: set[int] = set()
    if tokenizer.eos_token_id is not None:
        out.add(int(tokenizer.eos_token_id))
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if isinstance(eos, int):
        out.add(eos)
    elif isinstance(eos, (list, tuple)):
        out.update(int(e) for e in eos)
    if not out:
        raise ValueError("no eos token: set tokenizer.eos_token so a turn can end")
    return sorted(out)
