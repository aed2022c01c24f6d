"""Keys for the approval and identity tests: Ed25519 pairs and HMAC secrets written to files."""

import json
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)
from jwt.algorithms import OKPAlgorithm

from temporal_executor.schemas.config import KeySource, SigningKeys


@dataclass(frozen=True)
class KeyPair:
    private: Ed25519PrivateKey
    private_file: Path
    public_file: Path

    def public_jwk(self, kid: str | None = None) -> dict[str, str]:
        jwk: dict[str, str] = json.loads(OKPAlgorithm.to_jwk(self.private.public_key()))
        return {**jwk, "kid": kid} if kid else jwk


def key_pair(directory: Path, name: str, *, jwk: bool = False) -> KeyPair:
    """An Ed25519 pair: the private key as PEM, the public one as PEM or JWK."""
    private = Ed25519PrivateKey.generate()
    private_file = directory / f"{name}.pem"
    private_file.write_bytes(
        private.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
    )
    public_file = directory / (f"{name}.pub.jwk" if jwk else f"{name}.pub.pem")
    if jwk:
        public_file.write_text(OKPAlgorithm.to_jwk(private.public_key()))
    else:
        public_file.write_bytes(
            private.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
        )
    return KeyPair(private, private_file, public_file)


def hmac_file(directory: Path, name: str) -> Path:
    path = directory / f"{name}.secret"
    path.write_text(secrets.token_urlsafe(48) + "\n")
    return path


def public_signer(pair: KeyPair, *, signs_for: list[str] | None = None) -> SigningKeys:
    return SigningKeys(
        public_keys=[KeySource(file=str(pair.public_file))], signs_for=signs_for or []
    )
