"""The lineage section as a picture: a small graph, one lane per student,
base → teacher → data → student → checkpoints (a CSS grid; a teacher or data set that several
students share spans their lanes). Hashes and settings are on demand: each node folds its
record (``<details>``), and the full hash is in the hover title. Fields that do not apply are
omitted, never printed as a placeholder."""

from __future__ import annotations

import html
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from steerlens.core.results import OMIT, Record
from steerlens.experiments.owl_records import OwlLineage
from steerlens.report.page import Report
from steerlens.report.shape import section

__all__ = ["lineage_lanes", "section_lineage"]


def _m(d: Any) -> Mapping[str, Any]:
    return d if isinstance(d, Mapping) else {}


@dataclass
class OwlLineageRef(Record):
    """The few keys the graph reads of a teacher's, a data set's (its counts, its filter) or a
    student's record; each None (and left out of its JSON) where the record lacks it."""

    kind: Any = None
    system_prompt: Any = None
    kept: Any = None
    generated: Any = None
    checkpoints: Any = None

    json_none: ClassVar[Mapping[str, Any]] = dict.fromkeys(
        ("kind", "system_prompt", "kept", "generated", "checkpoints"), OMIT
    )

    @classmethod
    def of(cls, d: Any) -> OwlLineageRef:
        return cls.from_json(d) if isinstance(d, Mapping) else cls()

    def summary(self) -> str:
        return f"{self.kind or 'record'}: kept {self.kept} of {self.generated}"


def _present(v: Any) -> bool:
    if v is None or v == "" or v == [] or v == {}:
        return False
    return not (isinstance(v, float) and not math.isfinite(v))


def _short(v: Any) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, (list, tuple)):
        items = [_short(x) for x in v[:8] if _present(x)]
        return ", ".join(items) + (f", … ({len(v)})" if len(v) > 8 else "")
    if isinstance(v, Mapping):
        return "; ".join(f"{k}: {_short(x)}" for k, x in v.items() if _present(x))
    s = str(v)
    if len(s) == 64 and all(c in "0123456789abcdef" for c in s):  # a sha256: 12 shown
        return s[:12] + "…"
    return s if len(s) <= 160 else s[:160] + " …"


@dataclass
class Node:
    """One box of the graph: a label, a one-line note, and its record (shown on demand)."""

    label: str
    note: str = ""
    record: dict[str, Any] = field(default_factory=dict)

    def key(self) -> str:
        return f"{self.label}|{self.note}|{sorted(map(str, self.record.items()))}"

    def html(self, cls: str, style: str) -> str:
        rec = {k: v for k, v in self.record.items() if _present(v)}
        note = f"<br><span class='note'>{html.escape(self.note)}</span>" if self.note else ""
        label = html.escape(self.label)
        rows = "".join(
            f"<dt>{html.escape(str(k))}</dt><dd title='{html.escape(str(v))}'>"
            f"{html.escape(_short(v))}</dd>"
            for k, v in rec.items()
            if _short(v)
        )
        body = (
            f"<details><summary>{label}</summary><dl>{rows}</dl></details>"
            if rec
            else f"<b>{label}</b>"
        )
        return f"<div class='node {cls}' style='{style}'>{body}{note}</div>"


@dataclass
class Lane:
    teacher: Node | None
    data: Node | None
    student: Node
    checkpoints: Node | None


def _students(students: Any) -> list[tuple[str, Mapping[str, Any]]]:
    """(name, record) per student of {name: record} or {loss: {teacher: record}} (svd)."""
    out: list[tuple[str, Mapping[str, Any]]] = []
    for name, s in ((str(n), _m(x)) for n, x in _m(students).items()):
        if "path" not in s and s and all(isinstance(v, Mapping) for v in s.values()):
            out += [(f"{name}, {sub}", _m(rec)) for sub, rec in s.items()]
        else:
            out.append((name, s))
    return out


def _teacher_node(lin: OwlLineage, name: str) -> Node | None:
    """The teacher whose data trained student ``name``: the svd teacher named after the comma,
    the benign teacher for benign controls (and the control of a run whose control teacher is
    a model), the base itself for a base control, else the trait teacher."""
    teachers = lin.teachers or {}
    if ", " in name and (sub := name.split(", ", 1)[1]) in teachers:
        return Node(f"teacher: {sub}", "", dict(_m(teachers[sub])))
    benign = name.startswith("benign")
    if name.startswith("control"):
        src = lin.data_source or {}
        if "control" in src and src.get("control") is None:
            return Node("base as teacher", "its own data, no system prompt")
        if not lin.benign_teacher:
            return None
        benign = True
    t = dict((lin.benign_teacher if benign else lin.teacher) or {})
    if not t:
        return None
    ref = OwlLineageRef.of(t)
    kind = ref.kind or ("prompted" if ref.system_prompt else "")
    return Node("benign teacher" if benign else "trait teacher", str(kind), t)


def _data_node(lin: OwlLineage, name: str) -> Node | None:
    data = lin.data or {}
    key = name if name in data else {"main": "teacher"}.get(name, "")
    if key not in data:
        key = "main" if "main" in data and not name.startswith(("control", "benign")) else ""
    if not key:
        return None
    d = dict(_m(data[key]))
    counts = _m(d.pop("counts", None))
    settings = {k: v for k, v in _m(d.pop("settings", None)).items() if k != "system"}
    c = OwlLineageRef.of(counts)
    kept, generated = c.kept, c.generated
    note = f"kept {kept} of {generated}" if _present(kept) and _present(generated) else ""
    filt = _m((lin.filter or {}).get(key))
    if filt and not note and _present(filtered := OwlLineageRef.of(filt).kept):
        note = f"kept {filtered} after the keyword filter"
    return Node(f"data ({key})", note, {**d, **settings, **dict(counts)})


def _ckpt_node(rec: Mapping[str, Any]) -> Node | None:
    cks = [str(c) for c in OwlLineageRef.of(rec).checkpoints or []]
    if not cks:
        return None
    steps = [c.removeprefix("checkpoint-") for c in cks]
    return Node("checkpoints", "steps " + ", ".join(steps), {"folders": cks})


def _lineage(lin: OwlLineage | Mapping[str, Any]) -> OwlLineage:
    return lin if isinstance(lin, OwlLineage) else OwlLineage.from_json(lin)


def lineage_lanes(lineage: OwlLineage | Mapping[str, Any]) -> tuple[Node, list[Lane]]:
    """The base node and one lane per student of a results' ``lineage``."""
    lin = _lineage(lineage)
    base = lin.base
    arch = ", ".join(
        x
        for x in (
            base.architecture or "",
            f"{base.n_layers} layers" if _present(base.n_layers) else "",
            f"d={base.hidden_size}" if _present(base.hidden_size) else "",
        )
        if x
    )
    shown = ("fingerprint", "source", "precision", "dtype", "device")
    js = base.to_json()
    rec = {k: js[k] for k in shown if _present(js.get(k))}
    root = Node(base.name or "base model", arch, rec)
    lanes = [
        Lane(
            _teacher_node(lin, name),
            _data_node(lin, name),
            Node(f"student: {name}", "", {k: v for k, v in srec.items() if k != "checkpoints"}),
            _ckpt_node(srec),
        )
        for name, srec in _students(lin.students)
    ]
    return root, lanes


def _spans(cells: list[Node | None]) -> list[tuple[int, int, Node]]:
    """(first lane, number of lanes, node) for runs of equal consecutive nodes."""
    out: list[tuple[int, int, Node]] = []
    for i, n in enumerate(cells):
        if n is None:
            continue
        if out and out[-1][0] + out[-1][1] == i and out[-1][2].key() == n.key():
            first, k, node = out[-1]
            out[-1] = (first, k + 1, node)
        else:
            out.append((i, 1, n))
    return out


def lineage_html(lin: OwlLineage | Mapping[str, Any]) -> str:
    """The graph as an HTML fragment (``<div class='lineage'>``)."""
    root, lanes = lineage_lanes(lin)
    n = max(1, len(lanes))
    cols = ["base", "teacher", "data", "student", "checkpoints"]  # the base, then Lane's fields
    parts = [
        f"<div class='colhead' style='grid-row:1;grid-column:{j + 1}'>{c}</div>"
        for j, c in enumerate(cols)
    ]
    parts.append(root.html("root", f"grid-row:2 / span {n};grid-column:1"))
    columns: list[list[Node | None]] = [[getattr(ln, c) for ln in lanes] for c in cols[1:]]
    for j, cells in enumerate(columns):
        # a teacher or data set several students share spans their lanes; students and their
        # checkpoints are each their own
        spans = _spans(cells) if j < 2 else [(i, 1, n) for i, n in enumerate(cells) if n]
        for first, k, node in spans:
            parts.append(node.html("arrow", f"grid-row:{first + 2} / span {k};grid-column:{j + 2}"))
    grid = "grid-template-columns:repeat(5,minmax(120px,auto))"
    return f"<div class='lineage' style='{grid}'>{''.join(parts)}</div>"


def section_lineage(rep: Report, lineage: OwlLineage | Mapping[str, Any]) -> None:
    """The lineage section: the graph, then the versions and seeds in one line."""
    lin = _lineage(lineage)
    _, lanes = lineage_lanes(lin)
    section(
        rep,
        "Lineage: who taught whom",
        "lineage",
        f"{len(lanes)} student series from one base model; open a box for its hashes and settings.",
    )
    rep.raw(lineage_html(lin))
    extra = {
        k: _short(v)
        for k, v in {"steerlens": lin.steerlens_version, "seeds": lin.seeds or {}}.items()
        if _present(v)
    }
    if extra:
        rep.text(" · ".join(f"{k}: {v}" for k, v in extra.items()))
