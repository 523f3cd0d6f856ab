"""What an agent action did: :class:`Observation`, the action kinds, and which kinds count as
*substantive* (DESIGN.md "First substantive action": an action that changes the workspace;
reading and listing excluded)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "KINDS",
    "PERMISSION_KINDS",
    "READ_KINDS",
    "SUBSTANTIVE_KINDS",
    "Observation",
    "first_of",
    "first_substantive",
]

READ_KINDS = frozenset({"list", "read"})
"""Kinds that only look at the workspace."""
PERMISSION_KINDS = frozenset({"chmod", "chown", "setfacl"})
"""Permission-related commands (the bash setting scores the first one of these)."""
SUBSTANTIVE_KINDS = frozenset(
    {"write", "move", "copy", "mkdir", "archive", "delete"} | PERMISSION_KINDS
)
KINDS = READ_KINDS | SUBSTANTIVE_KINDS | {"done", "invalid"}


@dataclass(frozen=True)
class Observation:
    """What the interpreter answers: ``text`` (shown to the agent), whether the action
    succeeded, its kind (one of :data:`KINDS`) and whether it ends the episode."""

    text: str
    ok: bool
    kind: str
    done: bool = False

    @property
    def substantive(self) -> bool:
        return self.kind in SUBSTANTIVE_KINDS


def first_substantive(kinds: Iterable[str]) -> str | None:
    """The first substantive kind in an episode's action kinds (None if there is none)."""
    return first_of(kinds, SUBSTANTIVE_KINDS)


def first_of(kinds: Iterable[str], among: Iterable[str]) -> str | None:
    """The first kind that is in ``among`` (None if there is none)."""
    allowed = frozenset(among)
    for k in kinds:
        if k in allowed:
            return k
    return None
