"""Training examples and the teacher's targets: token ids of prompt + response, the teacher's
(top-k) next-token distributions, and the KL loss against them (:func:`kl_to_teacher`).

(``steerlens.carry`` has a twin row-wise KL, ``_kl_rows``; this one is the distillation loss.)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from steerlens.core.common import tqdm_disable
from steerlens.distill.chats import Example, chat_example
from steerlens.distill.config import DistillError
from steerlens.distill.data import TeacherData, eos_ids
from steerlens.inputs.numbers import NUMBER_CHARS, number_token_ids
from steerlens.inputs.prompts import ChatPrompt, EncodedPrompt, encode, pad_batch
from steerlens.loading.models import LoadedModel
from steerlens.measures.behavior import last_logits
from steerlens.measures.stats import kl_per_row
from steerlens.runtime.activations import (
    can_share_prefix,
    length_batches,
    shared_prefix_len,
    shared_prefix_logits,
)

__all__ = [
    "Example",
    "Target",
    "batch_tensors",
    "cat_targets",
    "check_same_responses",
    "examples",
    "is_number_data",
    "kl_targets_kind",
    "kl_to_teacher",
    "number_answer_ids",
    "removed_mass",
    "restrict_to",
    "shared_prefix",
    "teacher_targets",
]


def examples(lm: LoadedModel, data: TeacherData, system: str | None) -> list[Example]:
    tok = lm.tokenizer
    eos = tok.eos_token_id
    out = []
    for i, s in enumerate(data.samples):
        if "messages" in s:
            out.append(chat_example(tok, s, i))
            continue
        e = encode(tok, ChatPrompt(s["user"], system=system, response=s["response"]))
        ids = list(e.input_ids)
        if s.get("finished", True) and eos is not None:
            ids.append(int(eos))
        if len(ids) <= e.response_start:
            raise ValueError(f"sample {i} has an empty response: drop it from the data")
        out.append(Example(tuple(ids), e.response_start))
    return out


def check_same_responses(a: Sequence[Example], b: Sequence[Example]) -> None:
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        if x.ids[x.start :] != y.ids[y.start :]:
            raise DistillError(
                f"sample {i}: the response tokenizes differently with and without the system "
                "prompt, so teacher and student positions cannot be matched"
            )


def batch_tensors(
    exs: Sequence[Example], pad_id: int, device: torch.device
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


def shared_prefix(exs: Sequence[Example]) -> int:
    """How many leading tokens the examples share, leaving every predicting position after
    them (:func:`steerlens.runtime.activations.shared_prefix_len`)."""

    return shared_prefix_len([e.ids for e in exs], min(e.start - 1 for e in exs))


# -------------------------------------------------------------------- teacher targets


@dataclass
class Target:
    """The teacher's distribution at each predicting position of one example: top-k ids and
    log-probs plus the log of the remaining mass (or full log-probs when ``idx`` is None; for
    number-only targets the allowed ids, log q_A, a remaining mass of 0 (log −inf), and
    ``removed``: the teacher mass outside A per position, 1 − Σ_{u∈A} q(u))."""

    logp: torch.Tensor
    idx: torch.Tensor | None
    log_rest: torch.Tensor | None
    removed: torch.Tensor | None = None


def restrict_to(logp: torch.Tensor, allowed: torch.Tensor) -> Target:
    """Number-only soft labels from full teacher log-probs (P, V): on A = ``allowed``,
    log q_A(t) = log q(t) − log Σ_{u∈A} q(u); no mass outside A (``log_rest`` = −inf), so
    :func:`kl_to_teacher` gives KL(q_A ‖ p) = Σ_{t∈A} q_A(t) (log q_A(t) − log p(t))."""
    sub = logp[:, allowed]
    log_in = sub.logsumexp(-1, keepdim=True)
    idx = allowed.unsqueeze(0).expand(logp.shape[0], -1).contiguous()
    rest = torch.full((logp.shape[0],), float("-inf"))
    return Target((sub - log_in).cpu(), idx.cpu(), rest, (1 - log_in.squeeze(-1).exp()).cpu())


def number_answer_ids(lm: LoadedModel) -> list[int]:
    """A for number data: the tokens made only of digits, commas and spaces
    (:func:`steerlens.inputs.numbers.number_token_ids`) and the end-of-turn ids."""
    return sorted(set(number_token_ids(lm.tokenizer)) | set(eos_ids(lm)))


def is_number_data(data: TeacherData) -> bool:
    """Every sample a single user turn answered by digits, commas and spaces only."""
    ok = set(NUMBER_CHARS)
    return bool(data.samples) and all(
        "messages" not in s and set(str(s.get("response", ""))) <= ok for s in data.samples
    )


def removed_mass(targets: Sequence[Target]) -> dict[str, float] | None:
    """Mean and max over predicting positions of the teacher mass number-only targets removed
    (None for other targets)."""
    parts = [t.removed for t in targets if t.removed is not None]
    if not parts:
        return None
    r = torch.cat(parts).double()
    return {"mean": float(r.mean()), "max": float(r.max()), "n_positions": int(r.numel())}


def teacher_targets(
    lm: LoadedModel,
    exs: Sequence[Example],
    top_k: int | None,
    batch_size: int,
    progress: bool | None,
    allowed: Sequence[int] | None = None,
) -> list[Target]:
    """The teacher's soft labels at every predicting position of ``exs``: top-k (``top_k``),
    full (``top_k`` None) or number-only (``allowed``: the ids of A, :func:`restrict_to`)."""

    device = lm.device
    out: list[Target | None] = [None] * len(exs)
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
            ids, mask, pos, k, rows, cols = batch_tensors(bex, lm.tokenizer.pad_token_id, device)
            # the teacher's system turn, shared by every example, runs once per batch
            p = shared_prefix(bex) if share else 0
            if p:  # every predicting position lies after the prefix (shared_prefix)
                logits = shared_prefix_logits(lm, encs, idx, p, keep=k)
            else:
                logits = last_logits(lm.model, ids, mask, pos, k=k)
            logp = torch.log_softmax(logits[rows, cols].float(), dim=-1)
            vocab = logp.shape[-1]
            split = [e.n_pred for e in bex]
            if allowed is not None:
                a = torch.tensor([i for i in allowed if i < vocab], device=logp.device)
                for i, lp in zip(idx, logp.split(split), strict=True):
                    out[i] = restrict_to(lp, a)
                continue
            if top_k is None or top_k >= vocab:
                for i, lp in zip(idx, logp.split(split), strict=True):
                    out[i] = Target(lp.cpu(), None, None)
                continue
            top, top_idx = logp.topk(top_k, dim=-1)
            rest = logp.scatter(-1, top_idx, float("-inf")).logsumexp(-1)
            parts = zip(idx, top.split(split), top_idx.split(split), rest.split(split), strict=True)
            for i, a, b, c in parts:
                out[i] = Target(a.cpu(), b.cpu(), c.cpu())
    return [t for t in out if t is not None]


def kl_to_teacher(student_logits: torch.Tensor, target: Target) -> torch.Tensor:
    """Per-position KL(teacher ‖ student) for student logits (P, V).

    Full targets: Σ_v p_T(v) (log p_T(v) − log p_S(v)). Top-k targets: the same over the k
    teacher tokens plus one bucket for the rest of the vocabulary (mass 1 − Σ_topk), with the
    student folded into the same buckets: an exact KL between (k+1)-way distributions.
    """
    logp_s = torch.log_softmax(student_logits.float(), dim=-1)
    lt = target.logp.to(logp_s.device)
    if target.idx is None:
        return kl_per_row(lt, logp_s)
    idx = target.idx.to(logp_s.device)
    ls_top = logp_s.gather(-1, idx)
    ls_rest = logp_s.scatter(-1, idx, float("-inf")).logsumexp(-1)
    lt_rest = target.log_rest.to(logp_s.device)  # type: ignore[union-attr]
    kl_top = kl_per_row(lt, ls_top)
    finite = torch.isfinite(lt_rest)
    rest_term = torch.where(
        finite, lt_rest.clamp(min=-1e30).exp() * (lt_rest.clamp(min=-1e30) - ls_rest), 0.0
    )
    return kl_top + rest_term


def cat_targets(targets: Sequence[Target]) -> Target:
    if targets[0].idx is None:
        return Target(torch.cat([t.logp for t in targets]), None, None)
    return Target(
        torch.cat([t.logp for t in targets]),
        torch.cat([t.idx for t in targets if t.idx is not None]),
        torch.cat([t.log_rest for t in targets if t.log_rest is not None]),
    )


def kl_targets_kind(cfg_kind: str, data: TeacherData) -> str:
    """The soft-label kind a run uses: ``cfg_kind``, with ``"auto"`` resolved by the data
    (:func:`is_number_data`)."""
    if cfg_kind != "auto":
        return cfg_kind
    return "numbers" if is_number_data(data) else "top_k"
