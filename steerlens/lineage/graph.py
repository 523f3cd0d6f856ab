"""``lineage show``: the who-taught-whom graph of the records under a folder, as text."""

from __future__ import annotations

import os
from pathlib import Path

from steerlens.lineage.record import Record, find_records, read_record, rel_path

__all__ = ["lineage_graph"]


def _label(rec: Record, root: Path) -> str:
    ext = rec.external
    cfg = ext.get("config") if isinstance(ext.get("config"), dict) else {}
    bits = []
    for k in ("system", "teacher_kind", "n_samples", "steps", "trait", "verdict"):
        v = cfg.get(k) if cfg else None
        if v is not None:
            text = str(v)
            bits.append(f"{k}={text[:48] + '…' if len(text) > 48 else text}")
    for m in rec.models:
        fp = m.get("digest", {}).get("steerlensFingerprint", "")
        bits.append(
            f"{m.get('name')}={m.get('annotations', {}).get('name', m.get('uri'))}@{fp[:8]}"
        )
    where = rel_path(rec.artifact, root)
    n = len(rec.subjects)
    sig = " signed" if rec.envelope.get("signatures") else ""
    extra = f"  ({'; '.join(bits)})" if bits else ""
    return f"{rec.kind}: {where} [{n} file{'s' if n != 1 else ''}, {rec.digest[:12]}{sig}]{extra}"


def _tree(rec: Record, root: Path, prefix: str, seen: set[Path], lines: list[str]) -> None:
    for i, dep in enumerate(rec.parents):
        last = i == len(rec.parents) - 1
        branch, cont = ("└─ ", "   ") if last else ("├─ ", "│  ")
        pp = (rec.path.parent / str(dep.get("uri"))).resolve()
        name = (
            f"{dep.get('name')} ← "
            if dep.get("name") != dep.get("annotations", {}).get("kind")
            else ""
        )
        if not pp.is_file():
            lines.append(f"{prefix}{branch}{name}MISSING record {dep.get('uri')}")
            continue
        parent = read_record(pp)
        if pp in seen:
            lines.append(
                f"{prefix}{branch}{name}{parent.kind}: {rel_path(parent.artifact, root)} (above)"
            )
            continue
        lines.append(f"{prefix}{branch}{name}{_label(parent, root)}")
        seen.add(pp)
        _tree(parent, root, prefix + cont, seen, lines)


def lineage_graph(root: str | os.PathLike[str]) -> str:
    """The records under ``root`` as trees: each artifact that no other record names as a
    parent (the results), then what it was made from (students, their data, its teachers and
    their base model), indented."""
    r = Path(root).expanduser()
    if not r.exists():
        raise FileNotFoundError(f"{r} does not exist: check the path")
    recs = [read_record(p) for p in ([r] if r.is_file() else find_records(r))]
    if not recs:
        return f"no lineage records under {r}"
    named: set[Path] = set()
    for rec in recs:
        named.update((rec.path.parent / str(d.get("uri"))).resolve() for d in rec.parents)
    tops = [rec for rec in recs if rec.path.resolve() not in named] or recs[:1]
    lines: list[str] = []
    seen: set[Path] = set()
    for rec in tops:
        lines.append(_label(rec, r))
        seen.add(rec.path.resolve())
        _tree(rec, r, "", seen, lines)
    return "\n".join(lines)
