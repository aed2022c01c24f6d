"""Signing approval replies from the command line (`approve --key`, `sign-approval`)."""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from temporal_executor.schemas.cloudevent import APPROVALSIG_EXTENSION, CloudEvent
from temporal_executor.schemas.requests import ApprovalReplied
from temporal_executor.tasks.approval_signatures import DEFAULT_VALIDITY_SECONDS, sign_approval
from temporal_executor.tasks.keys import KeyConfigError, signing_key


@dataclass(frozen=True)
class ReplySigner:
    """A signing key (Ed25519 private key, PEM or JWK, or an HS256 secret) from a file."""

    key: Any
    algorithm: str
    # The `kid` to send: the signer's name in `approvals.keys` when it is not the approver.
    signer: str | None = None
    valid_seconds: float = DEFAULT_VALIDITY_SECONDS

    @classmethod
    def from_file(
        cls, path: Path, *, signer: str | None = None, valid_seconds: float | None = None
    ) -> "ReplySigner":
        try:
            raw = path.expanduser().read_bytes()
        except OSError as exc:
            msg = f"cannot read key file {path}: {exc.strerror}"
            raise KeyConfigError(msg) from None
        algorithm, key = signing_key(raw.rstrip(b"\r\n"), str(path))
        return cls(key, algorithm, signer, valid_seconds or DEFAULT_VALIDITY_SECONDS)

    def sign(self, reply: ApprovalReplied, event_id: str) -> str:
        if reply.approver is None:
            msg = "a signed reply names its approver"
            raise ValueError(msg)
        return sign_approval(
            self.key,
            self.algorithm,
            task_id=reply.task_id,
            approval_id=reply.approval_id,
            approved=reply.approved,
            approver=reply.approver,
            event_id=event_id,
            arguments=reply.arguments,
            signer=self.signer,
            valid_seconds=self.valid_seconds,
        )

    def signed(self, event: CloudEvent, reply: ApprovalReplied) -> CloudEvent:
        """`event` (the reply's CloudEvent) with its `approvalsig`."""
        extensions = {**event.extensions, APPROVALSIG_EXTENSION: self.sign(reply, event.id)}
        return event.model_copy(update={"extensions": extensions})
