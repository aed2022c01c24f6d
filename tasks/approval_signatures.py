"""Signed approval replies (contract v1.1, "Verified approvals").

A reply may carry, in the CloudEvents extension attribute `approvalsig`, a compact JWS
(EdDSA with Ed25519, or HS256 with a shared secret) whose payload repeats the reply:
`task_id`, `approval_id`, `approved`, `arguments` (when edited), `approver`, the reply
event's id as `event_id`, and `iat`/`exp`. The header's `kid` names the signer, an
approver or a bot, under `approvals.keys`; without one the signer is the payload's
approver. The signature is checked against that signer's keys (any of them: rotation),
must be fresh (`exp` - `iat` within `approvals.max_validity_seconds`, `exp` not passed,
`iat` not ahead, `approvals.leeway_seconds` either way) and must match the reply it
travels with, so it approves one approval, one way, once. The verified approver is the
payload's `approver`, which the signer must be or sign for.
"""

import time
from dataclasses import dataclass, field
from typing import Any

import jwt
from jwt.exceptions import InvalidTokenError

from temporal_executor.schemas.config import ApprovalSettings, KeySource
from temporal_executor.schemas.requests import ApprovalReplied
from temporal_executor.tasks.errors import InvalidSignature
from temporal_executor.tasks.keys import (
    KeyConfigError,
    describe,
    hmac_secret,
    is_ed25519_public,
    public_key,
)

SIGNATURE_ALGORITHMS = ("EdDSA", "HS256")
# The claims a signature must carry; `arguments` too when the reply edits them.
REQUIRED_CLAIMS = ("task_id", "approval_id", "approved", "approver", "event_id", "iat", "exp")
DEFAULT_VALIDITY_SECONDS = 300


@dataclass(frozen=True)
class Signer:
    """One configured signer's keys, read at start, and whom it may sign as."""

    name: str
    public_keys: list[Any] = field(default_factory=list)
    hmac_secrets: list[bytes] = field(default_factory=list)
    signs_for: frozenset[str] = frozenset()

    def keys_for(self, algorithm: str) -> list[Any]:
        return self.public_keys if algorithm == "EdDSA" else list(self.hmac_secrets)


def load_signers(settings: ApprovalSettings) -> dict[str, Signer]:
    """Every signer's keys; `KeyConfigError` naming the first that cannot be read."""
    signers: dict[str, Signer] = {}
    for name, keys in settings.keys.items():
        public = [_ed25519(source, name) for source in keys.public_keys]
        secrets = [hmac_secret(source) for source in keys.hmac_secrets]
        signs_for = frozenset(settings.members(keys.signs_for) if keys.signs_for else [name])
        signers[name] = Signer(name, public, secrets, signs_for)
    return signers


def _ed25519(source: KeySource, signer: str) -> Any:
    key = public_key(source)
    if not is_ed25519_public(key):
        msg = f"approvals.keys.{signer}: {describe(source)} is not an Ed25519 public key"
        raise KeyConfigError(msg)
    return key


class ApprovalVerifier:
    """Checks the `approvalsig` of bus replies against the keys `approvals.keys` holds."""

    def __init__(self, settings: ApprovalSettings) -> None:
        self._settings = settings
        self._signers = load_signers(settings)

    @property
    def required(self) -> bool:
        return self._settings.require_signature

    def verified_approver(
        self, reply: ApprovalReplied, *, event_id: str, signature: str | None
    ) -> str | None:
        """The approver the signature proves; without one, the approver the reply claims
        (`InvalidSignature` when config requires a signature, or one is there but wrong)."""
        if signature is None:
            if self.required:
                msg = "unsigned reply: approvals.require_signature asks for an approvalsig"
                raise InvalidSignature(msg)
            return reply.approver
        claims = self._verified_claims(signature)
        _check_matches(claims, reply, event_id)
        approver: str = claims["approver"]
        return approver

    def _verified_claims(self, signature: str) -> dict[str, Any]:
        try:
            header = jwt.get_unverified_header(signature)
            unverified = jwt.decode(signature, options={"verify_signature": False})
        except InvalidTokenError as exc:
            msg = f"approvalsig is not a compact JWS: {exc}"
            raise InvalidSignature(msg) from None
        algorithm = header.get("alg")
        if algorithm not in SIGNATURE_ALGORITHMS:
            msg = f"approvalsig algorithm {algorithm!r}; expected one of {SIGNATURE_ALGORITHMS}"
            raise InvalidSignature(msg)
        name = header.get("kid") or unverified.get("approver")
        signer = self._signers.get(str(name)) if name is not None else None
        if signer is None:
            msg = f"no keys in approvals.keys for signer {name!r}"
            raise InvalidSignature(msg)
        keys = signer.keys_for(algorithm)
        if not keys:
            kind = "public key" if algorithm == "EdDSA" else "HMAC secret"
            msg = f"signer {signer.name!r} has no {kind} for {algorithm} signatures"
            raise InvalidSignature(msg)
        claims = self._decode_with_any(signature, algorithm, keys, signer.name)
        if claims["exp"] - claims["iat"] > self._settings.max_validity_seconds:
            msg = (
                f"approvalsig is valid for {claims['exp'] - claims['iat']:.0f} s; "
                f"approvals.max_validity_seconds allows {self._settings.max_validity_seconds:.0f}"
            )
            raise InvalidSignature(msg)
        if claims["approver"] not in signer.signs_for:
            msg = f"signer {signer.name!r} may not sign as approver {claims['approver']!r}"
            raise InvalidSignature(msg)
        return claims

    def _decode_with_any(
        self, signature: str, algorithm: str, keys: list[Any], signer: str
    ) -> dict[str, Any]:
        last: InvalidTokenError | None = None
        for key in keys:
            try:
                claims: dict[str, Any] = jwt.decode(
                    signature,
                    key,
                    algorithms=[algorithm],
                    options={"require": list(REQUIRED_CLAIMS)},
                    leeway=self._settings.leeway_seconds,
                )
            except jwt.InvalidSignatureError as exc:
                last = exc  # maybe signed with another of the signer's keys
                continue
            except InvalidTokenError as exc:
                msg = f"approvalsig of {signer!r} refused: {exc}"
                raise InvalidSignature(msg) from None
            return claims
        msg = f"approvalsig does not verify with any key of signer {signer!r} ({last})"
        raise InvalidSignature(msg)


def _check_matches(claims: dict[str, Any], reply: ApprovalReplied, event_id: str) -> None:
    """The signed claims are the reply's: a signature approves nothing it does not name."""
    expected: dict[str, Any] = {
        "task_id": reply.task_id,
        "approval_id": reply.approval_id,
        "approved": reply.approved,
        "event_id": event_id,
        "arguments": reply.arguments,
    }
    if reply.approver is not None:
        expected["approver"] = reply.approver
    if not isinstance(claims.get("approved"), bool):
        msg = "approvalsig's approved claim must be true or false"
        raise InvalidSignature(msg)
    for name, value in expected.items():
        if claims.get(name) != value:
            msg = f"approvalsig signs {name}={claims.get(name)!r}, the reply has {value!r}"
            raise InvalidSignature(msg)


def sign_approval(
    key: Any,
    algorithm: str,
    *,
    task_id: str,
    approval_id: str,
    approved: bool,
    approver: str,
    event_id: str,
    arguments: dict[str, Any] | None = None,
    signer: str | None = None,
    valid_seconds: float = DEFAULT_VALIDITY_SECONDS,
    now: float | None = None,
) -> str:
    """The `approvalsig` for a reply (as `temporal-executor approve --key` sends it)."""
    issued = int(now if now is not None else time.time())
    claims: dict[str, Any] = {
        "task_id": task_id,
        "approval_id": approval_id,
        "approved": approved,
        "approver": approver,
        "event_id": event_id,
        "iat": issued,
        "exp": issued + int(valid_seconds),
    }
    if arguments is not None:
        claims["arguments"] = arguments
    headers = {"kid": signer} if signer is not None and signer != approver else None
    return jwt.encode(claims, key, algorithm=algorithm, headers=headers)
