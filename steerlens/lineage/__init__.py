"""Lineage as a record that can be checked: every artifact steerlens writes (teacher, teacher
data, students, vectors, results, reports) gets an in-toto attestation beside it.

- :mod:`~.record`: :func:`write_record` / :func:`read_record`: an in-toto Statement v1 whose
  subjects are the artifact's files (sha256) and whose SLSA-provenance-v1-shaped predicate names
  the parent records (by statement sha256), the models (by fingerprint), the config and the
  library versions; wrapped in a DSSE envelope, signed with an ed25519 key when one is given
  (or ``$STEERLENS_SIGNING_KEY`` names one).
- :mod:`~.verify`: :func:`verify_lineage` recomputes every hash and signature.
- :mod:`~.graph`: :func:`lineage_graph`, the who-taught-whom tree as text.
- :mod:`~.dsse`: the envelope and the keys (``cryptography``, the ``sign`` extra).
"""

from __future__ import annotations

from steerlens.lineage.dsse import SignatureError, generate_key, key_id, load_public_key
from steerlens.lineage.graph import lineage_graph
from steerlens.lineage.record import (
    KEY_ENV,
    Record,
    artifact_files,
    ensure_record,
    find_records,
    has_record,
    read_record,
    record_path,
    versions,
    write_record,
)
from steerlens.lineage.verify import LineageCheck, Problem, sign_lineage, verify_lineage

__all__ = [
    "KEY_ENV",
    "LineageCheck",
    "Problem",
    "Record",
    "SignatureError",
    "artifact_files",
    "ensure_record",
    "find_records",
    "generate_key",
    "has_record",
    "key_id",
    "lineage_graph",
    "load_public_key",
    "read_record",
    "record_path",
    "sign_lineage",
    "verify_lineage",
    "versions",
    "write_record",
]
