"""Keys and secrets read from where config says (a file or an environment variable).

Public keys are accepted as PEM or as a JWK (JSON); secrets are the file's bytes (without
a trailing newline) or the variable's value. A key config names but cannot be read fails
the process at start, naming the key, rather than every approval later.
"""

import json
import os
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key, load_pem_public_key
from jwt import PyJWK, PyJWKSet
from jwt.exceptions import PyJWTError

from temporal_executor.schemas.config import KeySource
from temporal_executor.tasks.errors import KeyConfigError

__all__ = ["KeyConfigError", "hmac_secret", "jwks_keys", "public_key", "read_source"]

# HS256 wants a key at least as long as its hash (RFC 7518, 3.2).
MIN_HMAC_SECRET_BYTES = 32


def read_source(source: KeySource) -> bytes:
    """The raw bytes of a key source."""
    if source.env is not None:
        value = os.environ.get(source.env)
        if not value:
            msg = f"environment variable {source.env} (a key config names) is not set"
            raise KeyConfigError(msg)
        return value.encode()
    assert source.file is not None  # KeySource holds exactly one
    try:
        return Path(source.file).expanduser().read_bytes().rstrip(b"\r\n")
    except OSError as exc:
        msg = f"cannot read key file {source.file}: {exc.strerror}"
        raise KeyConfigError(msg) from None


def describe(source: KeySource) -> str:
    return f"file {source.file}" if source.file is not None else f"${source.env}"


def hmac_secret(source: KeySource) -> bytes:
    secret = read_source(source)
    if len(secret) < MIN_HMAC_SECRET_BYTES:
        msg = (
            f"HMAC secret from {describe(source)} has {len(secret)} bytes; "
            f"HS256 needs at least {MIN_HMAC_SECRET_BYTES}"
        )
        raise KeyConfigError(msg)
    return secret


def public_key(source: KeySource) -> Any:
    """A public key (a `cryptography` key object) from PEM or JWK."""
    return public_key_from_bytes(read_source(source), describe(source))


def public_key_from_bytes(raw: bytes, where: str) -> Any:
    text = raw.strip()
    try:
        if text.startswith(b"{"):
            return PyJWK(json.loads(text)).key
        return load_pem_public_key(text)
    except (ValueError, TypeError, PyJWTError) as exc:
        msg = f"{where} is not a public key (PEM or JWK): {exc}"
        raise KeyConfigError(msg) from None


def jwks_keys(path: str) -> dict[str | None, Any]:
    """The keys of a JWKS file by `kid` (keys without one under None)."""
    try:
        found = PyJWKSet.from_json(Path(path).expanduser().read_text())
    except OSError as exc:
        msg = f"cannot read JWKS file {path}: {exc.strerror}"
        raise KeyConfigError(msg) from None
    except (ValueError, PyJWTError) as exc:
        msg = f"JWKS file {path} holds no usable key: {exc}"
        raise KeyConfigError(msg) from None
    return {key.key_id: key.key for key in found.keys}


def signing_key(raw: bytes, where: str) -> tuple[str, Any]:
    """A key to sign approvals with, and its JWS algorithm: an Ed25519 private key (PEM or
    JWK with `d`) signs EdDSA; anything else is an HS256 secret."""
    text = raw.strip()
    try:
        if text.startswith(b"-----BEGIN"):
            key: Any = load_pem_private_key(text, password=None)
        elif text.startswith(b"{"):
            key = PyJWK(json.loads(text)).key
        else:
            key = None
    except (ValueError, TypeError, PyJWTError) as exc:
        msg = f"{where} is not a signing key (Ed25519 PEM or JWK): {exc}"
        raise KeyConfigError(msg) from None
    if key is None:
        if len(text) < MIN_HMAC_SECRET_BYTES:
            msg = f"{where}: an HS256 secret needs at least {MIN_HMAC_SECRET_BYTES} bytes"
            raise KeyConfigError(msg)
        return "HS256", text
    if not isinstance(key, Ed25519PrivateKey):
        msg = f"{where} holds a {type(key).__name__}; approvals are signed with Ed25519"
        raise KeyConfigError(msg)
    return "EdDSA", key


def is_ed25519_public(key: Any) -> bool:
    return isinstance(key, Ed25519PublicKey)
