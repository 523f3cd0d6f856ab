"""``lineage verify``: recompute every hash and signature of the records under a folder."""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from steerlens.core.common import atomic_write_text, sha256_file
from steerlens.core.results import Record as ResultRecord
from steerlens.lineage.dsse import (
    dumps,
    key_id,
    load_private_key,
    load_public_key,
    sign_envelope,
    signature_ok,
)
from steerlens.lineage.record import (
    DIR_RECORD,
    RECORD_SUFFIX,
    Record,
    artifact_files,
    find_records,
    read_record,
    record_path,
)

__all__ = ["LineageCheck", "Problem", "sign_lineage", "verify_lineage"]


@dataclass(frozen=True)
class Problem:
    """One failed check: the file it concerns and what is wrong."""

    file: str
    what: str

    def __str__(self) -> str:
        return f"{self.file}: {self.what}"


@dataclass
class LineageCheck(ResultRecord):
    """What :func:`verify_lineage` found: the records checked, their signers, the problems."""

    root: str
    records: list[str]
    problems: list[Problem] = field(default_factory=list)
    signers: dict[str, str] = field(default_factory=dict)  # record → keyid(s)
    n_files: int = 0

    legacy_kinds = ("steerlens.lineage_check",)
    derived_json = ("ok",)

    @property
    def ok(self) -> bool:
        return bool(self.records) and not self.problems

    def summary(self) -> str:
        head = (
            f"lineage OK: {len(self.records)} records, {self.n_files} files hashed"
            if self.ok
            else f"lineage FAILED: {len(self.problems)} problem(s) in {len(self.records)} records"
        )
        keys = sorted(set(self.signers.values()))
        sig = f"; signed by {', '.join(k[:24] + '…' for k in keys)}" if keys else "; unsigned"
        return "\n".join([head + sig, *(f"  {p}" for p in self.problems)])


def _show(p: Path, root: Path) -> str:
    try:
        return Path(os.path.relpath(p.resolve(), root.resolve())).as_posix()
    except ValueError:  # pragma: no cover - another drive
        return str(p)


def _check_subjects(rec: Record, root: Path, out: LineageCheck) -> None:
    base = rec.path.parent
    named = set()
    for s in rec.subjects:
        f = base / s["name"]
        named.add(f.resolve())
        out.n_files += 1
        if not f.is_file():
            out.problems.append(Problem(_show(f, root), f"removed (recorded in {rec.path.name})"))
        elif sha256_file(f) != s.get("digest", {}).get("sha256"):
            out.problems.append(
                Problem(_show(f, root), f"changed: its sha256 differs from {_show(rec.path, root)}")
            )
    art = rec.artifact
    if rec.external.get("isDir") and art.is_dir() and rec.external.get("allFiles", True):
        for f in artifact_files(art):
            if f.resolve() not in named:
                out.problems.append(
                    Problem(_show(f, root), f"added: not among the files {rec.path.name} records")
                )


def _check_parents(rec: Record, root: Path, out: LineageCheck) -> None:
    for dep in rec.parents:
        pp = rec.path.parent / str(dep.get("uri"))
        if not pp.is_file():
            out.problems.append(
                Problem(_show(pp, root), f"removed: parent record of {_show(rec.path, root)}")
            )
            continue
        try:
            parent = read_record(pp)
        except ValueError as exc:
            out.problems.append(Problem(_show(pp, root), str(exc)))
            continue
        if parent.digest != dep.get("digest", {}).get("sha256"):
            out.problems.append(
                Problem(
                    _show(pp, root),
                    f"changed: it is not the parent record {_show(rec.path, root)} was made from",
                )
            )


def _check_signatures(rec: Record, root: Path, trusted: str | None, out: LineageCheck) -> list[str]:
    good = []
    for sig in rec.envelope.get("signatures", []):
        if signature_ok(rec.envelope, sig):
            good.append(str(sig.get("keyid")))
        else:
            out.problems.append(
                Problem(
                    _show(rec.path, root), "bad signature: the record was changed after signing"
                )
            )
    if good:
        out.signers[_show(rec.path, root)] = ",".join(sorted(good))
    if trusted is not None and trusted not in good:
        what = (
            f"signed by another key ({', '.join(k[:24] + '…' for k in good)})"
            if good
            else "not signed"
        )
        out.problems.append(Problem(_show(rec.path, root), f"{what}; expected {trusted[:24]}…"))
    return good


def verify_lineage(
    root: str | os.PathLike[str], *, key: str | os.PathLike[str] | None = None
) -> LineageCheck:
    """Check every record under ``root`` (and the parent records they name): each subject file
    exists with its sha256, a recorded folder holds no unrecorded file, each parent record is
    the one the child was made from, and each signature is valid. ``key`` (a PEM public or
    private key) pins the signer: every record must carry a valid signature by it. Without
    ``key``, records must all be signed by one key or all unsigned. Parent records outside
    ``root`` (the inputs of an audit) are checked too."""
    r = Path(root).expanduser()
    if not r.exists():
        raise FileNotFoundError(f"{r} does not exist: check the path")
    paths = [r] if r.is_file() else find_records(r)
    out = LineageCheck(str(r), [_show(p, r) for p in paths])
    if not paths:
        out.problems.append(Problem(str(r), "no lineage records found (nothing to verify)"))
        return out
    trusted = key_id(load_public_key(key)) if key is not None else None
    signed: dict[str, list[str]] = {}
    queue, seen = list(paths), {p.resolve() for p in paths}
    while queue:
        p = queue.pop(0)
        try:
            rec = read_record(p)
        except ValueError as exc:
            out.problems.append(Problem(_show(p, r), str(exc)))
            continue
        _check_subjects(rec, r, out)
        _check_parents(rec, r, out)
        signed[_show(p, r)] = _check_signatures(rec, r, trusted, out)
        for dep in rec.parents:  # records outside ``root`` that these were made from
            pp = (rec.path.parent / str(dep.get("uri"))).resolve()
            if pp.is_file() and pp not in seen:
                seen.add(pp)
                queue.append(pp)
                out.records.append(_show(pp, r))
    if trusted is None and any(signed.values()):
        _check_one_signer(signed, out)
    return out


def _check_one_signer(signed: dict[str, list[str]], out: LineageCheck) -> None:
    counts = Counter(k for keys in signed.values() for k in keys)
    main = counts.most_common(1)[0][0]
    for name, keys in signed.items():
        if main not in keys:
            what = f"signed by another key ({keys[0][:24]}…)" if keys else "not signed"
            out.problems.append(
                Problem(name, f"{what}; the other records are signed by {main[:24]}…")
            )


def sign_lineage(root: str | os.PathLike[str], key: str | os.PathLike[str]) -> list[Path]:
    """Sign every record under ``root`` (a run folder, one record file, or an artifact with a
    record beside it) with the ed25519 private key in ``key`` (a PEM file);
    the statements are unchanged, so children's parent digests stay valid. Returns the
    records signed. Refuses a record whose files no longer match it (it would vouch for a
    change)."""
    r = Path(root).expanduser()
    if not r.exists():
        raise FileNotFoundError(f"{r} does not exist: give a run folder or one record file")
    if r.is_file() and not (r.name.endswith(RECORD_SUFFIX) or r.name == DIR_RECORD):
        if not record_path(r).is_file():
            raise ValueError(
                f"{r} is not a lineage record and has none beside it: give a run folder or a "
                f"*{RECORD_SUFFIX} file"
            )
        r = record_path(r)  # an artifact with a record: sign its record
    paths = [r] if r.is_file() else find_records(r)
    if not paths:
        raise ValueError(
            f"no lineage records under {r} (nothing to sign): give the folder of a run that "
            f"steerlens wrote, or one *{RECORD_SUFFIX} file"
        )
    k = load_private_key(key)
    check = verify_lineage(r)
    changed = [p for p in check.problems if not p.what.startswith(("not signed", "signed by"))]
    if changed:
        raise ValueError(
            f"refusing to sign {r}: {changed[0]} (and {len(changed) - 1} more); re-run the "
            "step that wrote it, then sign"
            if len(changed) > 1
            else f"refusing to sign {r}: {changed[0]}; re-run the step that wrote it, then sign"
        )
    out = []
    for p in paths:
        rec = read_record(p)
        atomic_write_text(p, dumps(sign_envelope(rec.envelope, k)))
        out.append(p)
    return out
