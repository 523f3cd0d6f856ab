"""A simulated, in-memory file tree for agent tasks (DESIGN.md "envs"): nothing here touches
the host file system. Paths are POSIX strings relative to the workspace root (``docs/a.txt``);
every file has a content string, a mode (``0o644``), an owner and group, and ACL entries.

The interpreters (:mod:`steerlens.agents.api_tools`, :mod:`steerlens.agents.bash`) read and
edit a :class:`Workspace` only through its methods; every method raises
:class:`WorkspaceError` with a message an agent can read as an observation.
"""

from __future__ import annotations

import copy
import posixpath
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["FileNode", "Workspace", "WorkspaceError", "norm_path"]


class WorkspaceError(ValueError):
    """An action that the workspace refuses (no such file, not a directory, ...)."""


@dataclass
class FileNode:
    """One simulated file."""

    content: str = ""
    mode: int = 0o644
    owner: str = "agent"
    group: str = "staff"
    acl: dict[str, str] = field(default_factory=dict)


def norm_path(path: str) -> str:
    """A workspace path without leading ``./`` or ``/``, trailing slash or ``..`` escapes;
    ``""`` is the root."""
    if not isinstance(path, str):
        raise WorkspaceError(f"a path must be a string, got {type(path).__name__}")
    p = posixpath.normpath("/" + path.strip()).lstrip("/")
    if p in (".", ""):
        return ""
    return p


@dataclass
class Workspace:
    """Files (path -> :class:`FileNode`) and directories (a set of paths; the root ``""`` is
    always there). Mutating methods append to ``log`` (kind, path) so a caller can see what
    changed."""

    files: dict[str, FileNode] = field(default_factory=dict)
    dirs: set[str] = field(default_factory=set)
    users: tuple[str, ...] = ("agent", "alice", "bob")
    groups: tuple[str, ...] = ("staff", "team", "admins")
    log: list[tuple[str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.dirs.add("")
        for p in list(self.files):
            self._add_parents(p)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_files(cls, files: Mapping[str, str], **kwargs: Any) -> Workspace:
        """A workspace holding ``files`` (path -> content); their folders are created."""
        return cls({norm_path(p): FileNode(str(c)) for p, c in files.items()}, **kwargs)

    @classmethod
    def seeded(cls, seed: int, n_extra: int = 3) -> Workspace:
        """A small deterministic tree: a few folders with text files, plus ``n_extra`` files
        whose names depend on ``seed``."""
        rng = random.Random(seed)
        base = {
            "docs/readme.txt": "Project notes. See reports/ for the quarterly reports.",
            "reports/q3_final.txt": "Q3 report (final).",
            "logs/app.log": "INFO start\nINFO ok\n",
            "data/results.csv": "id,value\n1,0.5\n",
        }
        topics = ["budget", "draft", "notes", "summary", "plan", "survey", "metrics"]
        for i in range(n_extra):
            folder = rng.choice(["docs", "reports", "data"])
            base[f"{folder}/{rng.choice(topics)}_{i}.txt"] = f"{rng.choice(topics)} text {i}"
        return cls.from_files(base)

    def copy(self) -> Workspace:
        return copy.deepcopy(self)

    def snapshot(self) -> dict[str, Any]:
        """A JSON-able picture of the whole tree (for equality checks and records)."""
        return {
            "dirs": sorted(self.dirs),
            "files": {
                p: [n.content, oct(n.mode), n.owner, n.group, dict(sorted(n.acl.items()))]
                for p, n in sorted(self.files.items())
            },
        }

    # ------------------------------------------------------------------ queries
    def is_dir(self, path: str) -> bool:
        return norm_path(path) in self.dirs

    def is_file(self, path: str) -> bool:
        return norm_path(path) in self.files

    def node(self, path: str) -> FileNode:
        p = norm_path(path)
        if p not in self.files:
            what = "a directory" if p in self.dirs else "no such file"
            raise WorkspaceError(f"{path}: {what}")
        return self.files[p]

    def listdir(self, path: str = "") -> list[str]:
        """Entries of a folder, folders with a trailing ``/``, sorted."""
        p = norm_path(path)
        if p not in self.dirs:
            raise WorkspaceError(f"{path}: no such directory")
        out = set()
        for d in self.dirs:
            if d and posixpath.dirname(d) == p:
                out.add(posixpath.basename(d) + "/")
        for f in self.files:
            if posixpath.dirname(f) == p:
                out.add(posixpath.basename(f))
        return sorted(out)

    def all_files(self) -> list[str]:
        return sorted(self.files)

    def all_dirs(self) -> list[str]:
        return sorted(self.dirs)

    # ------------------------------------------------------------------ edits
    def _add_parents(self, path: str) -> None:
        d = posixpath.dirname(path)
        while d:
            self.dirs.add(d)
            d = posixpath.dirname(d)

    def _target(self, src: str, dst: str) -> str:
        d = norm_path(dst)
        if d in self.dirs:
            d = posixpath.join(d, posixpath.basename(src)) if d else posixpath.basename(src)
        parent = posixpath.dirname(d)
        if parent not in self.dirs:
            raise WorkspaceError(f"{dst}: no such directory {parent or '/'}")
        return d

    def read(self, path: str) -> str:
        return self.node(path).content

    def write(self, path: str, content: str) -> None:
        p = norm_path(path)
        if not p or p in self.dirs:
            raise WorkspaceError(f"{path}: is a directory")
        if posixpath.dirname(p) not in self.dirs:
            raise WorkspaceError(f"{path}: no such directory {posixpath.dirname(p)}")
        if p in self.files:
            self.files[p].content = content
        else:
            self.files[p] = FileNode(content)
        self.log.append(("write", p))

    def mkdir(self, path: str, parents: bool = False) -> None:
        p = norm_path(path)
        if p in self.dirs or p in self.files:
            raise WorkspaceError(f"{path}: already exists")
        if not parents and posixpath.dirname(p) not in self.dirs:
            raise WorkspaceError(f"{path}: no such directory {posixpath.dirname(p)}")
        self.dirs.add(p)
        self._add_parents(p)
        self.log.append(("mkdir", p))

    def move(self, src: str, dst: str) -> str:
        return self._put(src, dst, "move")

    def copy_file(self, src: str, dst: str) -> str:
        return self._put(src, dst, "copy")

    def _put(self, src: str, dst: str, kind: str) -> str:
        """``src`` moved (``kind="move"``) or copied to ``dst``; the new path."""
        s = norm_path(src)
        node = self.node(s)
        d = self._target(s, dst)
        if d == s:
            raise WorkspaceError(f"{src} and {dst} are the same file")
        self.files[d] = self.files.pop(s) if kind == "move" else copy.deepcopy(node)
        self.log.append((kind, s))
        return d

    def delete(self, path: str) -> None:
        p = norm_path(path)
        self.node(p)
        del self.files[p]
        self.log.append(("delete", p))

    def archive(self, path: str) -> str:
        """Move a file under ``archive/`` (kept, out of the way)."""
        p = norm_path(path)
        self.node(p)
        if p.startswith("archive/"):
            raise WorkspaceError(f"{path}: already archived")
        d = posixpath.join("archive", p)
        node = self.files.pop(p)
        self._add_parents(d)
        self.files[d] = node
        self.log.append(("archive", p))
        return d

    def chmod(self, path: str, mode: int) -> None:
        if not 0 <= mode <= 0o7777:
            raise WorkspaceError(f"invalid mode {oct(mode)}")
        self.node(path).mode = mode
        self.log.append(("chmod", norm_path(path)))

    def chown(self, path: str, owner: str | None, group: str | None) -> None:
        if owner is not None and owner not in self.users:
            raise WorkspaceError(f"invalid user: {owner}")
        if group is not None and group not in self.groups:
            raise WorkspaceError(f"invalid group: {group}")
        n = self.node(path)
        n.owner = owner or n.owner
        n.group = group or n.group
        self.log.append(("chown", norm_path(path)))

    def setfacl(self, path: str, entries: Iterable[tuple[str, str]]) -> None:
        n = self.node(path)
        for who, perms in entries:
            kind, _, name = who.partition(":")
            known = self.users if kind == "u" else self.groups if kind == "g" else ()
            if name not in known:
                raise WorkspaceError(f"setfacl: invalid entry {who}:{perms}")
            n.acl[who] = perms
        self.log.append(("setfacl", norm_path(path)))

    def can_read(self, path: str, *, group: str | None = None, user: str | None = None) -> bool:
        """Whether ``group`` (or ``user``) may read the file by its mode, group or ACL."""
        n = self.node(path)
        if user is not None and (n.owner == user or "r" in n.acl.get(f"u:{user}", "")):
            return True
        if group is not None:
            if n.group == group and n.mode & 0o040:
                return True
            if "r" in n.acl.get(f"g:{group}", ""):
                return True
        return bool(n.mode & 0o004)
