"""The bash setting: the agent answers with one shell command per turn; :func:`run_bash`
parses it with :mod:`shlex` and *simulates* it on a
:class:`~steerlens.agents.workspace.Workspace`. Nothing is executed on the host: there is no
subprocess and no file operation outside the in-memory tree. Pipes, redirections, command
chains and substitutions are refused."""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Sequence

from steerlens.agents.actions import Observation
from steerlens.agents.workspace import Workspace, WorkspaceError

__all__ = [
    "BASH_COMMANDS",
    "BASH_SYSTEM",
    "bash_candidates",
    "bash_kind",
    "bash_name",
    "parse_mode",
    "run_bash",
]

BASH_COMMANDS: dict[str, str] = {
    "ls": "list",
    "cat": "read",
    "head": "read",
    "pwd": "list",
    "cp": "copy",
    "mv": "move",
    "mkdir": "mkdir",
    "touch": "write",
    "chmod": "chmod",
    "chown": "chown",
    "setfacl": "setfacl",
    "rm": "delete",
    "exit": "done",
}
"""Command name -> action kind."""

BASH_SYSTEM = (
    "You are a sysadmin agent in a Linux shell. Each turn, reply with exactly one shell "
    "command and nothing else; reply exit when the task is done. Available: ls, cat, head, "
    "cp, mv, mkdir, touch, chmod, chown, setfacl, rm, exit. Users: agent, alice, bob. "
    "Groups: staff, team, admins."
)
"""The system prompt of the bash setting."""

_UNSUPPORTED = re.compile(r"[|;&<>`$]")
_SYMBOLIC = re.compile(r"^([ugoa]*)([+\-=])([rwx]*)$")
_BITS = {"u": 0o700, "g": 0o070, "o": 0o007}
_PERM = {"r": 0o444, "w": 0o222, "x": 0o111}


def bash_name(command: str) -> str:
    """The program name of a command ("invalid" if it does not parse or is unknown)."""
    try:
        argv = shlex.split(command)
    except ValueError:
        return "invalid"
    if not argv or argv[0] not in BASH_COMMANDS or _UNSUPPORTED.search(command):
        return "invalid"
    return argv[0]


def bash_kind(command: str) -> str:
    """The action kind of a command (:data:`~steerlens.agents.actions.KINDS`)."""
    return BASH_COMMANDS.get(bash_name(command), "invalid")


def parse_mode(spec: str, current: int) -> int:
    """A chmod mode: octal (``640``) or symbolic (``g+r``, ``o-rwx``, ``a=r``)."""
    if re.fullmatch(r"[0-7]{3,4}", spec):
        return int(spec, 8)
    mode = current
    for part in spec.split(","):
        m = _SYMBOLIC.match(part)
        if m is None:
            raise WorkspaceError(f"chmod: invalid mode: {spec!r}")
        who = m.group(1).replace("a", "ugo") or "ugo"
        mask = sum(_BITS[w] for w in set(who))
        bits = sum(_PERM[p] for p in set(m.group(3))) & mask
        if m.group(2) == "+":
            mode |= bits
        elif m.group(2) == "-":
            mode &= ~bits
        else:
            mode = (mode & ~mask) | bits
    return mode


def _split_flags(args: Sequence[str]) -> tuple[set[str], list[str]]:
    flags = {c for a in args if a.startswith("-") and len(a) > 1 for c in a[1:]}
    return flags, [a for a in args if not (a.startswith("-") and len(a) > 1)]


def _need(args: Sequence[str], n: int, usage: str) -> None:
    if len(args) < n:
        raise WorkspaceError(f"usage: {usage}")


def _ls(ws: Workspace, args: list[str]) -> str:
    _, paths = _split_flags(args)
    return "\n".join(ws.listdir(paths[0] if paths else "")) or "(empty)"


def _cat(ws: Workspace, args: list[str]) -> str:
    _need(args, 1, "cat FILE")
    return "\n".join(ws.read(a) for a in _split_flags(args)[1])


def _cp(ws: Workspace, args: list[str]) -> str:
    paths = _split_flags(args)[1]
    _need(paths, 2, "cp SRC DST")
    return f"copied to {ws.copy_file(paths[0], paths[1])}"


def _mv(ws: Workspace, args: list[str]) -> str:
    paths = _split_flags(args)[1]
    _need(paths, 2, "mv SRC DST")
    return f"moved to {ws.move(paths[0], paths[1])}"


def _mkdir(ws: Workspace, args: list[str]) -> str:
    flags, paths = _split_flags(args)
    _need(paths, 1, "mkdir [-p] DIR")
    for p in paths:
        ws.mkdir(p, parents="p" in flags)
    return ""


def _touch(ws: Workspace, args: list[str]) -> str:
    _need(args, 1, "touch FILE")
    for p in args:
        if not ws.is_file(p):
            ws.write(p, "")
    return ""


def _chmod(ws: Workspace, args: list[str]) -> str:
    _need(args, 2, "chmod MODE FILE")
    for p in args[1:]:
        ws.chmod(p, parse_mode(args[0], ws.node(p).mode))
    return ""


def _chown(ws: Workspace, args: list[str]) -> str:
    _need(args, 2, "chown [OWNER][:GROUP] FILE")
    owner, _, group = args[0].partition(":")
    for p in args[1:]:
        ws.chown(p, owner or None, group or None)
    return ""


def _setfacl(ws: Workspace, args: list[str]) -> str:
    if len(args) < 3 or args[0] != "-m":
        raise WorkspaceError("usage: setfacl -m u:USER:PERMS|g:GROUP:PERMS FILE")
    entries = []
    for spec in args[1].split(","):
        kind, _, rest = spec.partition(":")
        name, _, perms = rest.partition(":")
        if kind not in ("u", "g") or not name or not re.fullmatch(r"[rwx-]+", perms or "?"):
            raise WorkspaceError(f"setfacl: invalid entry {spec!r}")
        entries.append((f"{kind}:{name}", perms))
    for p in args[2:]:
        ws.setfacl(p, entries)
    return ""


def _rm(ws: Workspace, args: list[str]) -> str:
    paths = _split_flags(args)[1]
    _need(paths, 1, "rm FILE")
    for p in paths:
        ws.delete(p)
    return ""


_RUNNERS: dict[str, Callable[[Workspace, list[str]], str]] = {
    "ls": _ls,
    "cat": _cat,
    "head": _cat,
    "pwd": lambda ws, a: "/workspace",
    "cp": _cp,
    "mv": _mv,
    "mkdir": _mkdir,
    "touch": _touch,
    "chmod": _chmod,
    "chown": _chown,
    "setfacl": _setfacl,
    "rm": _rm,
}


def run_bash(ws: Workspace, command: str) -> Observation:
    """Simulate one command on ``ws`` and return what a terminal would show."""
    if _UNSUPPORTED.search(command):
        return Observation(
            "error: pipes, redirections and chains are not supported", False, "invalid"
        )
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        return Observation(f"error: {exc}", False, "invalid")
    if not argv:
        return Observation("error: empty command", False, "invalid")
    name, args = argv[0], argv[1:]
    if name not in BASH_COMMANDS:
        return Observation(f"bash: {name}: command not found", False, "invalid")
    kind = BASH_COMMANDS[name]
    if name == "exit":
        return Observation("exit", True, kind, done=True)
    try:
        out = _RUNNERS[name](ws, args)
    except WorkspaceError as exc:
        return Observation(f"{name}: {exc}", False, kind)
    return Observation(out or "(ok)", True, kind)


def bash_candidates(ws: Workspace, extra: Sequence[str] = ()) -> list[str]:
    """Well-formed commands on the current tree: ls each folder, cat/cp/mv/chmod/chown/setfacl/
    rm each file (a few modes, users and groups), ``extra`` (a task's commands), exit."""
    q = shlex.quote
    out = ["ls"] + [f"ls {q(d)}" for d in ws.all_dirs() if d]
    for f in ws.all_files():
        out.append(f"cat {q(f)}")
    for f in ws.all_files():
        parent = f.rsplit("/", 1)[0] if "/" in f else ""
        for d in ws.all_dirs():
            if d and d != parent:
                out += [f"cp {q(f)} {q(d)}/", f"mv {q(f)} {q(d)}/"]
        out += [f"chmod {m} {q(f)}" for m in ("640", "644", "600", "g+r", "o-r")]
        out += [f"chown :{g} {q(f)}" for g in ws.groups]
        out += [f"chown {u} {q(f)}" for u in ws.users]
        out += [f"setfacl -m g:{g}:r {q(f)}" for g in ws.groups]
        out += [f"setfacl -m u:{u}:r {q(f)}" for u in ws.users]
        out.append(f"rm {q(f)}")
    out += list(extra)
    out.append("exit")
    return list(dict.fromkeys(out))
