"""AES-256-GCM encryption of every payload the service hands Temporal.

Temporal stores payloads as the client gives them; it never encrypts. With
`temporal.encryption` on, each payload (already serialised by the pydantic converter) is
wrapped into a new one whose data is `nonce || AES-256-GCM(serialised payload)` and whose
metadata says `encoding: binary/encrypted` and which key did it (`encryption-key-id`), so
the server, its database and anyone reading the history see ciphertext only. Keys rotate:
the first configured key encrypts, any configured key decrypts. Payloads that are not
encrypted (histories from before encryption was turned on) pass through unchanged.
"""

import base64
import binascii
import os
import re
from collections.abc import Sequence
from pathlib import Path

from temporalio.api.common.v1 import Payload
from temporalio.converter import PayloadCodec

from temporal_executor.schemas.config import EncryptionKeySettings, PayloadEncryptionSettings

ENCODING = b"binary/encrypted"
KEY_ID_METADATA = "encryption-key-id"
KEY_BYTES = 32
NONCE_BYTES = 12
_HEX_KEY = re.compile(r"^[0-9a-fA-F]{64}$")


class EncryptionError(Exception):
    """Root of this module's errors: a key that cannot be loaded, a payload that cannot be
    decrypted (unknown key id, or tampered with)."""


class EncryptionCodec(PayloadCodec):
    def __init__(self, keys: Sequence[tuple[str, bytes]]) -> None:
        """`keys`: (id, 32-byte key), newest first; the first encrypts."""
        if not keys:
            msg = "payload encryption needs at least one key"
            raise EncryptionError(msg)
        # Imported here: a process with encryption off does not load `cryptography` (~7 MB).
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self._ciphers = {key_id: AESGCM(key) for key_id, key in keys}
        self._key_id = keys[0][0]
        self._encrypting = self._ciphers[self._key_id]

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.encrypt(p) for p in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.decrypt(p) for p in payloads]

    def encrypt(self, payload: Payload) -> Payload:
        nonce = os.urandom(NONCE_BYTES)
        key_id = self._key_id.encode()
        # The key id is authenticated too: a payload relabelled with another id fails.
        sealed = self._encrypting.encrypt(nonce, payload.SerializeToString(), key_id)
        return Payload(
            metadata={"encoding": ENCODING, KEY_ID_METADATA: key_id}, data=nonce + sealed
        )

    def decrypt(self, payload: Payload) -> Payload:
        if payload.metadata.get("encoding") != ENCODING:
            return payload
        key_id = payload.metadata.get(KEY_ID_METADATA, b"").decode()
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            msg = f"payload encrypted with key {key_id!r}, which is not in temporal.encryption.keys"
            raise EncryptionError(msg)
        nonce, sealed = payload.data[:NONCE_BYTES], payload.data[NONCE_BYTES:]
        from cryptography.exceptions import InvalidTag

        try:
            plain = cipher.decrypt(nonce, sealed, key_id.encode())
        except InvalidTag as exc:
            msg = f"payload encrypted with key {key_id!r} does not decrypt: wrong key or altered"
            raise EncryptionError(msg) from exc
        return Payload.FromString(plain)


def encryption_codec(settings: PayloadEncryptionSettings) -> EncryptionCodec | None:
    """The codec config asks for, keys loaded now (so a missing key stops the process at
    start); None when encryption is off."""
    if not settings.enabled:
        return None
    return EncryptionCodec([(key.id, load_key(key)) for key in settings.keys])


def load_key(key: EncryptionKeySettings) -> bytes:
    if key.env is not None:
        text = os.environ.get(key.env)
        if text is None:
            msg = f"encryption key {key.id!r}: variable {key.env} is not set"
            raise EncryptionError(msg)
        where = f"variable {key.env}"
    else:
        assert key.file is not None  # the settings hold exactly one of env and file
        try:
            text = Path(key.file).read_text(encoding="ascii")
        except (OSError, UnicodeDecodeError) as exc:
            msg = f"encryption key {key.id!r}: cannot read {key.file}: {exc}"
            raise EncryptionError(msg) from exc
        where = f"file {key.file}"
    return parse_key(text, f"encryption key {key.id!r} ({where})")


def parse_key(text: str, what: str) -> bytes:
    """32 bytes from 64 hex digits or from base64 (standard or URL-safe alphabet)."""
    text = text.strip()
    try:
        if _HEX_KEY.match(text):
            key = bytes.fromhex(text)
        else:
            key = base64.b64decode(text.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError) as exc:
        msg = f"{what} is neither hex nor base64"
        raise EncryptionError(msg) from exc
    if len(key) != KEY_BYTES:
        msg = f"{what} is {len(key)} bytes; AES-256 needs {KEY_BYTES} (`openssl rand -base64 32`)"
        raise EncryptionError(msg)
    return key
