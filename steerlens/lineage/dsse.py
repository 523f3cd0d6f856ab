"""DSSE envelopes (the in-toto signature wrapper) and ed25519 keys through ``cryptography``.

An envelope is ``{"payloadType", "payload" (base64), "signatures": [{"keyid", "sig"}]}``; each
signature is over PAE(payloadType, payload) = ``"DSSEv1" SP len(type) SP type SP len(body) SP
body`` (https://github.com/secure-systems-lab/dsse). A key's id is ``"ed25519:"`` + the hex of its
32 raw public-key bytes, so a verifier can check a signature from the envelope alone; *trusting*
that key is a separate step (``lineage verify --key PUB.pem`` pins it).

``cryptography`` is the ``sign`` extra (``pip install steerlens[sign]``); unsigned records need
nothing beyond the standard library.
"""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path
from typing import Any

__all__ = [
    "PAYLOAD_TYPE",
    "SignatureError",
    "envelope",
    "generate_key",
    "key_id",
    "load_private_key",
    "load_public_key",
    "pae",
    "payload_of",
    "sign_envelope",
    "signature_ok",
]

PAYLOAD_TYPE = "application/vnd.in-toto+json"
KEYID_PREFIX = "ed25519:"


class SignatureError(ValueError):
    """A key that cannot be read, or signing without ``cryptography``."""


def pae(payload_type: str, body: bytes) -> bytes:
    """DSSE pre-authentication encoding of ``body``."""
    t = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(body), body)


def envelope(body: bytes, payload_type: str = PAYLOAD_TYPE) -> dict[str, Any]:
    """An unsigned envelope around ``body``."""
    return {
        "payloadType": payload_type,
        "payload": base64.b64encode(body).decode("ascii"),
        "signatures": [],
    }


def payload_of(env: dict[str, Any]) -> bytes:
    """The envelope's payload bytes (ValueError naming the problem when it is malformed)."""
    if not isinstance(env, dict) or not isinstance(env.get("payload"), str):
        raise ValueError("not a DSSE envelope (no base64 'payload')")
    try:
        return base64.b64decode(env["payload"], validate=True)
    except ValueError as exc:
        raise ValueError(f"the envelope's payload is not base64 ({exc})") from None


def _crypto() -> Any:
    try:
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:  # pragma: no cover - CI installs the extra
        raise SignatureError(
            "signing and signature checks need the 'cryptography' package: pip install "
            "'steerlens[sign]'"
        ) from None
    return ed25519


def _raw_public(pub: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    raw: bytes = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return raw


def key_id(key: Any) -> str:
    """``ed25519:<hex of the raw public key>`` of a private or public ed25519 key."""
    pub = key.public_key() if hasattr(key, "public_key") else key
    return KEYID_PREFIX + _raw_public(pub).hex()


def _read_pem(path: str | os.PathLike[str]) -> bytes:
    p = Path(path).expanduser()
    if not p.is_file():
        raise SignatureError(f"key file {p} does not exist: check the path")
    return p.read_bytes()


def load_private_key(path: str | os.PathLike[str]) -> Any:
    """An ed25519 private key from a PEM file (``openssl genpkey -algorithm ed25519`` or
    :func:`generate_key`); unencrypted."""
    ed25519 = _crypto()
    from cryptography.hazmat.primitives import serialization

    try:
        key = serialization.load_pem_private_key(_read_pem(path), password=None)
    except (ValueError, TypeError) as exc:
        raise SignatureError(f"{path} is not an unencrypted PEM private key ({exc})") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise SignatureError(f"{path} holds a {type(key).__name__}; lineage signing uses ed25519")
    return key


def load_public_key(path: str | os.PathLike[str]) -> Any:
    """An ed25519 public key from a PEM file (a private key's file gives its public key)."""
    ed25519 = _crypto()
    from cryptography.hazmat.primitives import serialization

    data = _read_pem(path)
    if b"PRIVATE KEY" in data:
        return load_private_key(path).public_key()
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise SignatureError(f"{path} is not a PEM public key ({exc})") from None
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise SignatureError(f"{path} holds a {type(key).__name__}; lineage signing uses ed25519")
    return key


def generate_key(path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write a new ed25519 private key to ``path`` (mode 600) and its public key beside it
    (``<path>.pub``); return both paths. Refuses to overwrite an existing key."""
    ed25519 = _crypto()
    from cryptography.hazmat.primitives import serialization

    p = Path(path).expanduser()
    if p.exists():
        raise SignatureError(f"{p} already exists: choose another path (keys are not replaced)")
    key = ed25519.Ed25519PrivateKey.generate()
    priv = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    pub = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    p.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(priv)
    pub_path = p.with_name(p.name + ".pub")
    pub_path.write_bytes(pub)
    return p, pub_path


def sign_envelope(env: dict[str, Any], key: Any) -> dict[str, Any]:
    """``env`` with a signature by ``key`` (any earlier signature by the same key replaced)."""
    kid = key_id(key)
    sig = key.sign(pae(env["payloadType"], payload_of(env)))
    others = [s for s in env.get("signatures", []) if s.get("keyid") != kid]
    entry = {"keyid": kid, "sig": base64.b64encode(sig).decode("ascii")}
    return {**env, "signatures": [*others, entry]}


def signature_ok(env: dict[str, Any], sig: dict[str, Any]) -> bool:
    """Whether ``sig`` is a valid signature of ``env`` by the key its ``keyid`` names."""
    ed25519 = _crypto()
    from cryptography.exceptions import InvalidSignature

    kid = str(sig.get("keyid", ""))
    if not kid.startswith(KEYID_PREFIX):
        return False
    try:
        pub = ed25519.Ed25519PublicKey.from_public_bytes(bytes.fromhex(kid[len(KEYID_PREFIX) :]))
        pub.verify(
            base64.b64decode(str(sig.get("sig", "")), validate=True),
            pae(str(env.get("payloadType")), payload_of(env)),
        )
    except (InvalidSignature, ValueError):
        return False
    return True


def dumps(env: dict[str, Any]) -> str:
    """The envelope as the text written to a record file."""
    return json.dumps(env, indent=2) + "\n"
