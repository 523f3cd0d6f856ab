"""The API tool setting: the agent answers with one JSON tool call per turn, e.g.
``{"tool": "move_file", "path": "reports/a.txt", "to": "archive/"}``; :func:`run_api` applies
it to a simulated :class:`~steerlens.agents.workspace.Workspace` and returns an observation.
Nothing is executed on the host: every tool edits the in-memory tree only."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from steerlens.agents.actions import Observation
from steerlens.agents.workspace import Workspace, WorkspaceError

__all__ = [
    "API_SYSTEM",
    "API_TOOLS",
    "api_action",
    "api_candidates",
    "api_kind",
    "api_name",
    "parse_api",
    "run_api",
]

API_TOOLS: dict[str, str] = {
    "list_dir": "list",
    "read_file": "read",
    "write_file": "write",
    "move_file": "move",
    "archive_file": "archive",
    "delete_file": "delete",
    "done": "done",
}
"""Tool name -> action kind."""

API_SYSTEM = (
    "You are a file-management agent. Each turn, reply with exactly one JSON tool call and "
    "nothing else. Tools: list_dir(path), read_file(path), write_file(path, content), "
    "move_file(path, to), archive_file(path), delete_file(path), done(). "
    'Example: {"tool": "list_dir", "path": "."}'
)
"""The system prompt of the API setting (tool descriptions)."""


def api_action(tool: str, **args: str) -> str:
    """The canonical text of a tool call: ``{"tool": ..., <args in the given order>}``."""
    if tool not in API_TOOLS:
        raise ValueError(f"unknown tool {tool!r}: use one of {sorted(API_TOOLS)}")
    return json.dumps({"tool": tool, **args}, ensure_ascii=False)


def parse_api(text: str) -> dict[str, Any]:
    """The JSON object of one tool call (raises ``ValueError`` naming what is wrong)."""
    try:
        obj = json.loads(text.strip())
    except json.JSONDecodeError as exc:
        raise ValueError(f"not a JSON tool call ({exc.msg})") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("tool"), str):
        raise ValueError('a tool call is a JSON object with a "tool" name')
    if obj["tool"] not in API_TOOLS:
        raise ValueError(f"unknown tool {obj['tool']!r}: use one of {sorted(API_TOOLS)}")
    return obj


def api_name(text: str) -> str:
    """The tool name of a call ("invalid" if it does not parse)."""
    try:
        return str(parse_api(text)["tool"])
    except ValueError:
        return "invalid"


def api_kind(text: str) -> str:
    """The action kind of a call (:data:`~steerlens.agents.actions.KINDS`)."""
    return API_TOOLS.get(api_name(text), "invalid")


def _arg(obj: dict[str, Any], key: str) -> str:
    v = obj.get(key)
    if not isinstance(v, str):
        raise WorkspaceError(f'{obj["tool"]} needs a string "{key}" argument')
    return v


def run_api(ws: Workspace, text: str) -> Observation:
    """Apply one tool call to ``ws`` (in memory) and describe the result."""
    try:
        obj = parse_api(text)
    except ValueError as exc:
        return Observation(f"error: {exc}", False, "invalid")
    tool = obj["tool"]
    kind = API_TOOLS[tool]
    try:
        if tool == "done":
            return Observation("episode finished", True, kind, done=True)
        path = _arg(obj, "path")
        if tool == "list_dir":
            msg = "\n".join(ws.listdir(path)) or "(empty)"
        elif tool == "read_file":
            msg = ws.read(path)
        elif tool == "write_file":
            ws.write(path, _arg(obj, "content"))
            msg = f"wrote {path}"
        elif tool == "move_file":
            msg = f"moved {path} to {ws.move(path, _arg(obj, 'to'))}"
        elif tool == "archive_file":
            msg = f"archived {path} as {ws.archive(path)}"
        else:
            ws.delete(path)
            msg = f"deleted {path}"
    except WorkspaceError as exc:
        return Observation(f"error: {exc}", False, kind)
    return Observation(msg, True, kind)


def api_candidates(ws: Workspace, extra: Sequence[str] = ()) -> list[str]:
    """Every well-formed call on the current tree: list each folder; read, archive, delete
    each file; move each file to each other folder; ``extra`` calls (a task's writes); done."""
    out = [api_action("list_dir", path=d or ".") for d in ws.all_dirs()]
    for f in ws.all_files():
        out.append(api_action("read_file", path=f))
    for f in ws.all_files():
        parent = f.rsplit("/", 1)[0] if "/" in f else ""
        out += [api_action("move_file", path=f, to=d + "/") for d in ws.all_dirs() if d != parent]
        if not f.startswith("archive/"):
            out.append(api_action("archive_file", path=f))
        out.append(api_action("delete_file", path=f))
    out += list(extra)
    out.append(api_action("done"))
    return list(dict.fromkeys(out))
