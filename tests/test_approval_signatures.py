"""What an `approvalsig` proves, and what config makes of keys and approver lists.

The bus tests (tests/test_verified_approvals.py) run these cases through a real bridge; here
the verifier and the approver policy are checked alone, including what only they can see
(rotation, key files that config names but cannot be read, the policy's precedence).
"""

import time
from pathlib import Path

import jwt
import pytest
from jwt.algorithms import OKPAlgorithm
from pydantic import ValidationError

from temporal_executor.schemas.config import (
    ApprovalSettings,
    KeySource,
    McpServerSettings,
    Settings,
    SigningKeys,
)
from temporal_executor.schemas.requests import ApprovalReplied
from temporal_executor.signing import ReplySigner
from temporal_executor.tasks.approval_signatures import ApprovalVerifier, sign_approval
from temporal_executor.tasks.errors import InvalidSignature
from temporal_executor.tasks.keys import KeyConfigError
from tests.approval_keys import hmac_file, key_pair, public_signer

REPLY = ApprovalReplied(task_id="t-1", approval_id="approval-1-1", approved=True, approver="alice")
EVENT_ID = "reply-event-1"


def test_a_rotated_key_still_verifies_and_a_bot_signs_only_for_whom_config_says(
    tmp_path: Path,
) -> None:
    old, new = key_pair(tmp_path, "old"), key_pair(tmp_path, "new", jwk=True)
    bot = key_pair(tmp_path, "bot")
    settings = ApprovalSettings(
        keys={
            "alice": SigningKeys(
                public_keys=[
                    KeySource(file=str(old.public_file)),
                    KeySource(file=str(new.public_file)),
                ]
            ),
            "slackbot": public_signer(bot, signs_for=["ops"]),
        },
        groups={"ops": ["alice", "bob"]},
    )
    verifier = ApprovalVerifier(settings)
    for pair in (old, new):
        signature = ReplySigner(pair.private, "EdDSA").sign(REPLY, EVENT_ID)
        assert verifier.verified_approver(REPLY, event_id=EVENT_ID, signature=signature) == "alice"
    as_bob = REPLY.model_copy(update={"approver": "bob"})
    by_bot = ReplySigner(bot.private, "EdDSA", signer="slackbot").sign(as_bob, EVENT_ID)
    assert verifier.verified_approver(as_bob, event_id=EVENT_ID, signature=by_bot) == "bob"
    as_carol = REPLY.model_copy(update={"approver": "carol"})
    by_bot = ReplySigner(bot.private, "EdDSA", signer="slackbot").sign(as_carol, EVENT_ID)
    with pytest.raises(InvalidSignature, match="may not sign as approver 'carol'"):
        verifier.verified_approver(as_carol, event_id=EVENT_ID, signature=by_bot)


def test_an_unsigned_reply_counts_as_its_claim_only_where_config_allows(tmp_path: Path) -> None:
    assert ApprovalVerifier(ApprovalSettings()).verified_approver(
        REPLY, event_id=EVENT_ID, signature=None
    ) == ("alice")
    strict = ApprovalVerifier(ApprovalSettings(require_signature=True))
    with pytest.raises(InvalidSignature, match="unsigned"):
        strict.verified_approver(REPLY, event_id=EVENT_ID, signature=None)


@pytest.mark.parametrize(
    ("problem", "claims", "match"),
    [
        ("too long", {"exp": 3600}, "max_validity_seconds allows"),
        ("not yet", {"iat": 600, "exp": 700}, "not yet valid"),
        ("no event id", {"event_id": None}, "event_id"),
        ("approved a number", {"approved": 1}, "true or false"),
    ],
)
def test_claims_that_do_not_make_a_valid_signature(
    tmp_path: Path, problem: str, claims: dict[str, object], match: str
) -> None:
    secret = hmac_file(tmp_path, "alice").read_bytes().strip()
    settings = ApprovalSettings(
        keys={"alice": SigningKeys(hmac_secrets=[KeySource(file=str(tmp_path / "alice.secret"))])}
    )
    now = int(time.time())
    payload: dict[str, object] = {
        "task_id": REPLY.task_id,
        "approval_id": REPLY.approval_id,
        "approved": True,
        "approver": "alice",
        "event_id": EVENT_ID,
        "iat": now,
        "exp": now + 60,
    }
    for name, value in claims.items():
        if name in ("iat", "exp") and isinstance(value, int):
            payload[name] = now + value
        elif value is None:
            payload.pop(name)
        else:
            payload[name] = value
    signature = jwt.encode(payload, secret, algorithm="HS256")
    with pytest.raises(InvalidSignature, match=match):
        ApprovalVerifier(settings).verified_approver(REPLY, event_id=EVENT_ID, signature=signature)


def test_an_algorithm_other_than_eddsa_or_hs256_is_refused(tmp_path: Path) -> None:
    pair = key_pair(tmp_path, "alice")
    verifier = ApprovalVerifier(ApprovalSettings(keys={"alice": public_signer(pair)}))
    unsigned = jwt.encode({"approver": "alice"}, "", algorithm="none")
    with pytest.raises(InvalidSignature, match="algorithm 'none'"):
        verifier.verified_approver(REPLY, event_id=EVENT_ID, signature=unsigned)
    with pytest.raises(InvalidSignature, match="not a compact JWS"):
        verifier.verified_approver(REPLY, event_id=EVENT_ID, signature="not-a-jws")
    # An HS256 signature for a signer who has only a public key (the classic confusion).
    forged = jwt.encode({"approver": "alice"}, b"guessed" * 8, algorithm="HS256")
    with pytest.raises(InvalidSignature, match="no HMAC secret"):
        verifier.verified_approver(REPLY, event_id=EVENT_ID, signature=forged)


def test_keys_config_names_but_cannot_use_fail_at_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def verifier(keys: SigningKeys) -> ApprovalVerifier:
        return ApprovalVerifier(ApprovalSettings(keys={"alice": keys}))

    with pytest.raises(KeyConfigError, match="cannot read key file"):
        verifier(SigningKeys(public_keys=[KeySource(file=str(tmp_path / "missing.pem"))]))
    with pytest.raises(KeyConfigError, match="ALICE_SECRET"):
        verifier(SigningKeys(hmac_secrets=[KeySource(env="ALICE_SECRET")]))
    monkeypatch.setenv("ALICE_SECRET", "short")
    with pytest.raises(KeyConfigError, match="at least 32"):
        verifier(SigningKeys(hmac_secrets=[KeySource(env="ALICE_SECRET")]))
    private = key_pair(tmp_path, "alice").private_file
    with pytest.raises(KeyConfigError, match="not a public key"):
        verifier(SigningKeys(public_keys=[KeySource(file=str(private))]))
    with pytest.raises(ValidationError, match="exactly one"):
        KeySource(file="a", env="B")


def test_signing_keys_from_files(tmp_path: Path) -> None:
    assert ReplySigner.from_file(key_pair(tmp_path, "a").private_file).algorithm == "EdDSA"
    assert ReplySigner.from_file(hmac_file(tmp_path, "b")).algorithm == "HS256"
    (tmp_path / "short").write_text("tiny")
    with pytest.raises(KeyConfigError, match="at least 32"):
        ReplySigner.from_file(tmp_path / "short")
    with pytest.raises(KeyConfigError, match="cannot read"):
        ReplySigner.from_file(tmp_path / "absent")
    token = sign_approval(
        b"x" * 32,
        "HS256",
        task_id="t",
        approval_id="a",
        approved=False,
        approver="alice",
        event_id="e",
        arguments={"n": 1},
        signer="bot",
    )
    assert jwt.get_unverified_header(token)["kid"] == "bot"
    assert jwt.decode(token, options={"verify_signature": False})["arguments"] == {"n": 1}


def test_who_may_approve_a_tool_most_specific_entry_first() -> None:
    settings = Settings(
        mcp_servers=[McpServerSettings(name="github", transport="http", url="http://x")],
        approvals=ApprovalSettings(
            groups={"ops": ["bob", "alice"]},
            tools={"save_note": ["carol"], "delete_*": ["ops"], "github__merge": ["dave"]},
            mcp_servers={"github": ["ops", "erin"]},
        ),
    )
    settings.bridge.allowed_approvers = ["frank"]
    assert settings.approvers_for("save_note") == ["carol"]
    assert settings.approvers_for("delete_file") == ["alice", "bob"]
    assert settings.approvers_for("github__merge") == ["dave"]
    assert settings.approvers_for("github__create_issue") == ["alice", "bob", "erin"]
    assert settings.approvers_for("calculator") == ["frank"]
    settings.bridge.allowed_approvers = []
    assert settings.approvers_for("calculator") is None


def test_approver_lists_that_name_no_server_fail_at_start() -> None:
    with pytest.raises(ValidationError, match="which mcp_servers lacks"):
        Settings(approvals=ApprovalSettings(mcp_servers={"gitlab": ["ops"]}))
    with pytest.raises(ValidationError, match="empty tool_prefix"):
        Settings(
            mcp_servers=[
                McpServerSettings(name="fs", transport="http", url="http://x", tool_prefix="")
            ],
            approvals=ApprovalSettings(mcp_servers={"fs": ["ops"]}),
        )
    with pytest.raises(ValidationError, match="at least 1"):
        ApprovalSettings(tools={"save_note": []})


def test_keys_of_the_wrong_kind_fail_at_start(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import (
        Encoding,
        NoEncryption,
        PrivateFormat,
        PublicFormat,
    )

    ec_key = ec.generate_private_key(ec.SECP256R1())
    ec_public = tmp_path / "ec.pub.pem"
    ec_public.write_bytes(
        ec_key.public_key().public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(KeyConfigError, match="not an Ed25519 public key"):
        ApprovalVerifier(
            ApprovalSettings(
                keys={"alice": SigningKeys(public_keys=[KeySource(file=str(ec_public))])}
            )
        )
    ec_private = tmp_path / "ec.pem"
    ec_private.write_bytes(ec_key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    with pytest.raises(KeyConfigError, match="approvals are signed with Ed25519"):
        ReplySigner.from_file(ec_private)
    (tmp_path / "bad.jwk").write_text('{"kty": "nope"}')
    with pytest.raises(KeyConfigError, match="not a signing key"):
        ReplySigner.from_file(tmp_path / "bad.jwk")
    jwk_private = tmp_path / "alice.jwk"
    jwk_private.write_text(OKPAlgorithm.to_jwk(key_pair(tmp_path, "a").private))
    assert ReplySigner.from_file(jwk_private).algorithm == "EdDSA"


def test_jwks_files_that_cannot_serve(tmp_path: Path) -> None:
    from temporal_executor.tasks.keys import jwks_keys

    with pytest.raises(KeyConfigError, match="cannot read JWKS file"):
        jwks_keys(str(tmp_path / "absent.json"))
    (tmp_path / "empty.json").write_text('{"keys": []}')
    with pytest.raises(KeyConfigError, match="holds no usable key"):
        jwks_keys(str(tmp_path / "empty.json"))


def test_a_signature_naming_no_configured_signer(tmp_path: Path) -> None:
    verifier = ApprovalVerifier(
        ApprovalSettings(keys={"alice": public_signer(key_pair(tmp_path, "alice"))})
    )
    bob = REPLY.model_copy(update={"approver": "bob"})
    signature = ReplySigner(key_pair(tmp_path, "bob").private, "EdDSA").sign(bob, EVENT_ID)
    with pytest.raises(InvalidSignature, match=r"no keys in approvals\.keys for signer 'bob'"):
        verifier.verified_approver(bob, event_id=EVENT_ID, signature=signature)
