"""``steerlens lineage show|verify|sign|keygen``: the lineage records of a run folder."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from steerlens.cli.settings import Invocation
from steerlens.pipeline.context import option, required

__all__ = [
    "LineageKeygenOptions",
    "LineageShowOptions",
    "LineageSignOptions",
    "LineageVerifyOptions",
    "cmd_lineage_keygen",
    "cmd_lineage_show",
    "cmd_lineage_sign",
    "cmd_lineage_verify",
]


def _dir(help: str) -> Any:
    return required(help, positional=True)


@dataclass(kw_only=True)
class LineageShowOptions:
    dir: str = _dir("run folder (or one record file)")


@dataclass(kw_only=True)
class LineageVerifyOptions:
    dir: str = _dir("run folder (or one record file)")
    key: str | None = option(
        None,
        "PEM public key every record must be signed by (none: all records signed by one key, "
        "or all unsigned)",
        exists="file",
    )
    out: str | None = option(None, "results JSON of the check")


@dataclass(kw_only=True)
class LineageSignOptions:
    dir: str = _dir("run folder whose records are signed (or one record file)")
    key: str = required("ed25519 PEM private key (steerlens lineage keygen)", exists="file")


@dataclass(kw_only=True)
class LineageKeygenOptions:
    path: str = _dir("private key file to create (public key: PATH.pub)")


def cmd_lineage_show(inv: Invocation) -> int:
    from steerlens.lineage import lineage_graph

    print(lineage_graph(inv.get(LineageShowOptions).dir))
    return 0


def cmd_lineage_verify(inv: Invocation) -> int:
    """Exit 0 when every hash and signature checks out, 1 (naming each file) when not."""
    import sys

    from steerlens.lineage import verify_lineage

    o = inv.get(LineageVerifyOptions)
    check = verify_lineage(o.dir, key=o.key)
    if o.out:
        check.save(o.out)
    print(check.summary(), file=sys.stdout if check.ok else sys.stderr)
    return 0 if check.ok else 1


def cmd_lineage_sign(inv: Invocation) -> int:
    from steerlens.lineage import sign_lineage

    o = inv.get(LineageSignOptions)
    done = sign_lineage(o.dir, o.key)
    print(f"signed {len(done)} record{'s' if len(done) != 1 else ''} in {o.dir}")
    return 0


def cmd_lineage_keygen(inv: Invocation) -> int:
    from steerlens.lineage import generate_key

    priv, pub = generate_key(inv.get(LineageKeygenOptions).path)
    print(f"wrote {priv} (private, keep it) and {pub} (public: verify --key {pub})")
    return 0
