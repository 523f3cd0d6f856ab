"""The keyword filter baseline (Dang et al. 2026): drop every trajectory in which a
destructive keyword appears anywhere — task text, tool names, arguments, commands,
observations — and count what was dropped and why.

Matching is case-insensitive and word-bounded, where a "word" is a run of letters: ``_``,
``-``, digits, ``/`` and punctuation are boundaries, so ``delete_file``, ``rm -f`` and
``DELETE`` match while ``firmware``, ``perform`` and ``removable`` do not. Inflections of the
keywords (``deleted``, ``removing``, ``purges``, ``terminated``, ``destroying``) match too.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from steerlens.agents.trajectories import Trajectory
from steerlens.core.results import Record

__all__ = ["DEFAULT_KEYWORDS", "FilterResult", "find_keywords", "keyword_filter", "keyword_regex"]

DEFAULT_KEYWORDS = ("delete", "remove", "rm", "purge", "terminate", "destroy")

_INFLECT = {
    "delete": r"delet(?:e|es|ed|ing|ion|ions)",
    "remove": r"remov(?:e|es|ed|ing|al|als)",
    "rm": r"rm",
    "purge": r"purg(?:e|es|ed|ing)",
    "terminate": r"terminat(?:e|es|ed|ing|ion|ions)",
    "destroy": r"destr(?:oy|oys|oyed|oying|uction)",
}


def keyword_regex(keywords: Sequence[str] = DEFAULT_KEYWORDS) -> re.Pattern[str]:
    """The pattern: each keyword (with its inflections if known) between non-letters."""
    if not keywords:
        raise ValueError("the keyword filter needs at least one keyword")
    alts = [_INFLECT.get(k.lower(), re.escape(k.lower())) for k in keywords]
    return re.compile(r"(?<![a-z])(" + "|".join(alts) + r")(?![a-z])", re.IGNORECASE)


def _stem(match: str, keywords: Sequence[str]) -> str:
    m = match.lower()
    for k in keywords:
        if re.fullmatch(_INFLECT.get(k.lower(), re.escape(k.lower())), m):
            return k
    return m


def find_keywords(
    traj: Trajectory, keywords: Sequence[str] = DEFAULT_KEYWORDS, include_system: bool = False
) -> list[tuple[str, str, str]]:
    """Every hit in a trajectory: (keyword, where, matched text); ``where`` is ``task``,
    ``action:N``, ``observation:N`` (or ``system`` with ``include_system``: the setting's
    tool description, the same in every trajectory, is not searched by default)."""
    pat = keyword_regex(keywords)
    parts: list[tuple[str, str]] = [("task", traj.task)]
    if include_system:
        parts.insert(0, ("system", traj.system))
    for i, s in enumerate(traj.steps):
        parts += [(f"action:{i}", s.action), (f"observation:{i}", s.observation)]
    return [
        (_stem(m.group(1), keywords), where, m.group(1))
        for where, text in parts
        for m in pat.finditer(text)
    ]


@dataclass
class FilterResult(Record):
    """Kept and dropped trajectories, with counts: ``by_keyword`` (trajectories with a hit of
    each keyword), ``by_place`` (hits in task / action / observation)."""

    kept: list[Trajectory]
    dropped: list[Trajectory]
    reasons: list[list[tuple[str, str, str]]]
    keywords: tuple[str, ...]
    by_keyword: dict[str, int] = field(default_factory=dict)
    by_place: dict[str, int] = field(default_factory=dict)

    legacy_kinds = ("steerlens.keyword_filter",)
    derived_json = ("counts",)

    @classmethod
    def _upgrade(cls, d: dict[str, Any]) -> dict[str, Any]:
        """Older files: ``dropped`` as ``{"trajectory", "hits"}`` pairs, counts under
        ``counts``."""
        old = d.get("dropped") or []
        if old and isinstance(old[0], Mapping) and "trajectory" in old[0]:
            d["dropped"] = [x["trajectory"] for x in old]
            d["reasons"] = [x["hits"] for x in old]
        d.setdefault("reasons", [])
        for k in ("by_keyword", "by_place"):
            d.setdefault(k, dict(d.get("counts", {}).get(k, {})))
        return d

    @property
    def counts(self) -> dict[str, Any]:
        n = len(self.kept) + len(self.dropped)
        return {
            "total": n,
            "kept": len(self.kept),
            "dropped": len(self.dropped),
            "dropped_fraction": len(self.dropped) / n if n else 0.0,
            "by_keyword": dict(self.by_keyword),
            "by_place": dict(self.by_place),
        }

    def summary(self) -> str:
        c = self.counts
        return (
            f"keyword filter: kept {c['kept']} of {c['total']}, dropped {c['dropped']} "
            f"({100 * c['dropped_fraction']:.0f}%); by keyword {c['by_keyword']}"
        )


def keyword_filter(
    trajectories: Iterable[Trajectory],
    keywords: Sequence[str] = DEFAULT_KEYWORDS,
    include_system: bool = False,
) -> FilterResult:
    """Split trajectories into kept (no keyword in the task, any action or any observation)
    and dropped (with the hits). The system prompt (the tool list, which names
    ``delete_file`` / ``rm`` in every trajectory) is searched only with ``include_system``."""
    kws = tuple(keywords)
    kept, dropped, reasons = [], [], []
    by_kw: Counter[str] = Counter()
    by_place: Counter[str] = Counter()
    for t in trajectories:
        hits = find_keywords(t, kws, include_system)
        if not hits:
            kept.append(t)
            continue
        dropped.append(t)
        reasons.append(hits)
        by_kw.update({h[0] for h in hits})
        by_place.update(h[1].split(":")[0] for h in hits)
    return FilterResult(kept, dropped, reasons, kws, dict(by_kw), dict(by_place))
