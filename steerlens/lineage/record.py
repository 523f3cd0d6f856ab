"""Content-addressed lineage records: one in-toto Statement (in a DSSE envelope) per artifact.

A record lists the artifact's files with their sha256 (the Statement's subjects), the records
of its parents by the sha256 of their statements (teacher → data → student → results), the
models it was computed from (by fingerprint), its config and the versions of steerlens, torch
and transformers. The predicate has the SLSA provenance v1 shape (buildDefinition +
runDetails), so supply-chain tools can read it. Records hold no timestamps: the same inputs give
byte-identical records, so a resumed run does not change its parents' digests.

Where a record lives: a file artifact ``X`` → ``X.lineage.json`` beside it; a folder ``D`` →
``D/lineage.json``. Subject names are paths relative to the record's folder, so a run folder
can be moved as a whole.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from steerlens.core.common import atomic_write_text, jsonable, read_json, sha256_file
from steerlens.lineage.dsse import (
    PAYLOAD_TYPE,
    dumps,
    envelope,
    load_private_key,
    payload_of,
    sign_envelope,
)
from steerlens.version import __version__

__all__ = [
    "DIR_RECORD",
    "KEY_ENV",
    "PREDICATE_TYPE",
    "RECORD_SUFFIX",
    "STATEMENT_TYPE",
    "Record",
    "artifact_files",
    "ensure_record",
    "find_records",
    "has_record",
    "read_record",
    "record_path",
    "versions",
    "write_record",
]

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://slsa.dev/provenance/v1"
BUILD_TYPE = "urn:steerlens:lineage:v1"
RECORD_SUFFIX = ".lineage.json"
DIR_RECORD = "lineage.json"
KEY_ENV = "STEERLENS_SIGNING_KEY"
"""Environment variable: path of an ed25519 PEM private key; when set, every record steerlens
writes is signed with it."""
_SKIP_SUFFIXES = (RECORD_SUFFIX, ".tmp", ".key", ".steerlens.lock", ".steerlens.run.json")
"""Files no record lists: records, partial writes, cache stamps, and a run's lock and started
settings (:mod:`steerlens.core.runfolder`)."""


def versions() -> dict[str, str | None]:
    """Versions of steerlens and the libraries that fix the numbers (None: not installed)."""
    out: dict[str, str | None] = {"steerlens": __version__}
    for name in ("torch", "transformers", "peft", "safetensors"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def record_path(artifact: str | os.PathLike[str]) -> Path:
    """Where the record of ``artifact`` lives (a record file path is returned as it is)."""
    p = Path(artifact)
    if p.name.endswith(RECORD_SUFFIX) or p.name == DIR_RECORD:
        return p
    return p / DIR_RECORD if p.is_dir() else p.with_name(p.name + RECORD_SUFFIX)


def has_record(artifact: str | os.PathLike[str]) -> bool:
    return record_path(artifact).is_file()


def artifact_files(path: Path) -> list[Path]:
    """A file artifact's one file, or every file under a folder (records, ``.tmp`` and cache
    ``.key`` stamps left out), sorted."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"{path} does not exist: nothing to record")
    return sorted(
        f
        for f in path.rglob("*")
        if f.is_file() and f.name != DIR_RECORD and not f.name.endswith(_SKIP_SUFFIXES)
    )


def _rel(p: Path, base: Path) -> str:
    return Path(os.path.relpath(p.resolve(), base.resolve())).as_posix()


def canonical(obj: Any) -> bytes:
    """The bytes a statement is hashed and signed as (sorted keys, no spaces)."""
    return json.dumps(jsonable(obj), sort_keys=True, separators=(",", ":")).encode()


@dataclass(frozen=True)
class Record:
    """One record file: its path, the envelope, and the statement inside."""

    path: Path
    envelope: dict[str, Any]
    statement: dict[str, Any]
    digest: str  # sha256 of the statement bytes (what children refer to)

    @property
    def kind(self) -> str:
        return str(self.external.get("kind", "?"))

    @property
    def external(self) -> dict[str, Any]:
        bd = self.statement.get("predicate", {}).get("buildDefinition", {})
        return dict(bd.get("externalParameters", {}))

    @property
    def dependencies(self) -> list[dict[str, Any]]:
        bd = self.statement.get("predicate", {}).get("buildDefinition", {})
        return list(bd.get("resolvedDependencies", []))

    @property
    def parents(self) -> list[dict[str, Any]]:
        """Dependencies that are other lineage records."""
        return [d for d in self.dependencies if d.get("annotations", {}).get("record")]

    @property
    def models(self) -> list[dict[str, Any]]:
        """Dependencies that are models (by fingerprint)."""
        return [d for d in self.dependencies if not d.get("annotations", {}).get("record")]

    @property
    def subjects(self) -> list[dict[str, Any]]:
        return list(self.statement.get("subject", []))

    @property
    def artifact(self) -> Path:
        return self.path.parent / str(self.external.get("artifact", "."))


def read_record(path: str | os.PathLike[str]) -> Record:
    """Read a record file (ValueError naming the file when it is not a lineage record)."""
    p = record_path(path)
    env = read_json(p)
    try:
        body = payload_of(env)
        st = json.loads(body)
    except ValueError as exc:
        raise ValueError(f"{p} is not a lineage record: {exc}") from None
    if env.get("payloadType") != PAYLOAD_TYPE or st.get("_type") != STATEMENT_TYPE:
        raise ValueError(f"{p} is not an in-toto Statement v1 envelope")
    return Record(p, env, st, hashlib.sha256(body).hexdigest())


def _parent_dep(parent: str | os.PathLike[str], base: Path, role: str | None) -> dict[str, Any]:
    rp = record_path(parent)
    if not rp.is_file():
        raise FileNotFoundError(
            f"parent {parent} has no lineage record ({rp}): write its record first"
        )
    rec = read_record(rp)
    return {
        "name": role or rec.kind,
        "uri": _rel(rp, base),
        "digest": {"sha256": rec.digest},
        "annotations": {"record": True, "kind": rec.kind, "artifact": _rel(rec.artifact, base)},
    }


def _model_dep(role: str, desc: Mapping[str, Any]) -> dict[str, Any]:
    uri = str(desc.get("source") or desc.get("name") or role)
    return {
        "name": role,
        "uri": uri,
        "digest": {"steerlensFingerprint": str(desc.get("fingerprint", ""))},
        "annotations": dict(jsonable(desc)),
    }


def _signing_key(key: Any) -> Any:
    if key is None:
        env = os.environ.get(KEY_ENV)
        return load_private_key(env) if env else None
    if isinstance(key, (str, os.PathLike)):
        return load_private_key(key)
    return key


def write_record(
    artifact: str | os.PathLike[str],
    kind: str,
    *,
    files: Iterable[str | os.PathLike[str]] | None = None,
    parents: Sequence[str | os.PathLike[str]] | Mapping[str, str | os.PathLike[str]] = (),
    models: Mapping[str, Mapping[str, Any]] | None = None,
    config: Any = None,
    at: str | os.PathLike[str] | None = None,
    key: Any = None,
) -> Path:
    """Write the record of ``artifact`` (a file or folder); return the record's path.

    ``files``: the files it consists of (default: :func:`artifact_files`); ``parents``: the
    artifacts (or record files) it was made from, each of which must have a record (a mapping
    names their roles); ``models``: role → :func:`steerlens.loading.models.describe` of the models it
    was computed with; ``config``: the settings (JSON-able); ``at``: the record's path (default
    :func:`record_path`); ``key``: an ed25519 private key or PEM path to sign with (default:
    the key named by ``$STEERLENS_SIGNING_KEY``, else unsigned).
    """
    art = Path(artifact)
    rp = Path(at) if at is not None else record_path(art)
    base = rp.parent
    paths = [Path(f) for f in files] if files is not None else artifact_files(art)
    if not paths:
        raise ValueError(f"{art} has no files to record: a record needs at least one subject")
    roles = parents.items() if isinstance(parents, Mapping) else [(None, p) for p in parents]
    deps = [_parent_dep(p, base, r) for r, p in roles]
    deps += [_model_dep(r, d) for r, d in (models or {}).items()]
    statement = {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": _rel(f, base), "digest": {"sha256": sha256_file(f)}} for f in paths],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": {
                    "kind": kind,
                    "artifact": _rel(art, base),
                    "isDir": art.is_dir(),
                    "allFiles": files is None,
                    "config": jsonable(config),
                },
                "resolvedDependencies": deps,
            },
            "runDetails": {"builder": {"id": "urn:steerlens", "version": versions()}},
        },
    }
    env = envelope(canonical(statement))
    k = _signing_key(key)
    if k is not None:
        env = sign_envelope(env, k)
    base.mkdir(parents=True, exist_ok=True)
    atomic_write_text(rp, dumps(env))
    return rp


def subjects_match(rec: Record) -> bool:
    """Whether every subject file of ``rec`` exists with its recorded sha256."""
    for s in rec.subjects:
        f = rec.path.parent / s["name"]
        if not f.is_file() or sha256_file(f) != s["digest"].get("sha256"):
            return False
    return True


def ensure_record(artifact: str | os.PathLike[str], write: Callable[[], object]) -> None:
    """For an artifact reused from a cache: write its record when it has none, refresh it (new
    parent digests) when its files still match the record, and leave it alone when they do not
    (``lineage verify`` then names the changed file; a refresh would hide the change)."""
    rp = record_path(artifact)
    if rp.is_file():
        try:
            if not subjects_match(read_record(rp)):
                return
        except ValueError:
            return
    write()


def find_records(root: str | os.PathLike[str]) -> list[Path]:
    """Every record file under ``root``, sorted."""
    r = Path(root)
    return sorted(
        p
        for p in r.rglob("*")
        if p.is_file() and (p.name == DIR_RECORD or p.name.endswith(RECORD_SUFFIX))
    )
