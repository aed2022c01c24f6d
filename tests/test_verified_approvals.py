"""Verified approvals on the real servers (contract v1.1, "Verified approvals").

- Bus: with `approvals.require_signature`, a reply without a valid `approvalsig` (unsigned,
  expired, signed with a key config does not hold, for another approval or another event)
  changes nothing and is dead-lettered `invalid-signature`; a valid one from a signer whom
  config does not allow for the tool is dead-lettered `approver-not-allowed`; valid ones
  (EdDSA from a person, HS256 from a bot signing for a member of the allowed group) decide,
  and the approver recorded is the one the signature proves.
- The workflow's update validator has the last word: a task service whose config allows
  anyone is still refused by the task's plan.
- HTTP and A2A: the approver is the authenticated caller (a bearer token naming its sender,
  or a JWT verified against a public key or a JWKS file), never a field of the body.
"""

import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from a2a.types.a2a_pb2 import SendMessageRequest
from temporalio.client import Client

from temporal_executor import commands
from temporal_executor.bus.transport import InboundMessage
from temporal_executor.dev.embedded_stack import EmbeddedStack
from temporal_executor.gateway import GatewayServer
from temporal_executor.schemas.cloudevent import APPROVALSIG_EXTENSION, CloudEvent
from temporal_executor.schemas.config import (
    ApprovalSettings,
    JwtAuthSettings,
    KeySource,
    Settings,
    SigningKeys,
    TokenIdentity,
)
from temporal_executor.schemas.event_types import EventType, workflow_id_for
from temporal_executor.schemas.requests import ApprovalReplied
from temporal_executor.schemas.task import ApprovalDecision, BusName
from temporal_executor.signing import ReplySigner
from temporal_executor.tasks.approval_signatures import sign_approval
from temporal_executor.tasks.errors import ApproverNotAllowed
from temporal_executor.tasks.service import TaskService
from tests.approval_keys import KeyPair, hmac_file, key_pair, public_signer
from tests.harness import BUSES, ServiceHarness, new_task_id, service_settings
from tests.test_a2a import a2a_client, collect, user_message

TIMEOUT = 30.0


class Signers:
    """The people and the bot of these tests, their keys, and the settings naming them."""

    def __init__(self, directory: Path) -> None:
        self.alice = key_pair(directory, "alice")
        self.carol = key_pair(directory, "carol", jwk=True)
        self.stranger = key_pair(directory, "stranger")  # a key config does not hold
        self.bot_secret = hmac_file(directory, "bot")
        self.approvals = ApprovalSettings(
            require_signature=True,
            keys={
                "alice": public_signer(self.alice),
                "carol": public_signer(self.carol),
                "slackbot": SigningKeys(
                    hmac_secrets=[KeySource(file=str(self.bot_secret))], signs_for=["ops"]
                ),
            },
            groups={"ops": ["alice", "bob"]},
            tools={"save_note": ["ops"]},
        )

    def eddsa(self, pair: KeyPair, **options: Any) -> ReplySigner:
        return ReplySigner(pair.private, "EdDSA", **options)

    def bot(self) -> ReplySigner:
        return ReplySigner.from_file(self.bot_secret, signer="slackbot")


@pytest.fixture(scope="module")
def signers(tmp_path_factory: pytest.TempPathFactory) -> Signers:
    return Signers(tmp_path_factory.mktemp("keys"))


@pytest.fixture(scope="module")
async def signed_service(
    embedded_stack: EmbeddedStack,
    temporal_client: Client,
    tmp_path_factory: pytest.TempPathFactory,
    signers: Signers,
) -> AsyncIterator[ServiceHarness]:
    settings = service_settings(
        embedded_stack, tmp_path_factory.mktemp("signed"), approval_timeout_seconds=600
    )
    settings.approvals = signers.approvals
    harness = ServiceHarness(settings, temporal_client)
    await harness.start()
    try:
        yield harness
    finally:
        await harness.stop()


async def waiting_task(harness: ServiceHarness, bus: BusName, prefix: str) -> tuple[str, str]:
    """A task that waits for the approval of a save_note call: its id and the approval's."""
    task_id = new_task_id(prefix)
    await harness.producers[bus].request(task_id, "note")
    requested = await harness.watchers[bus].wait_for(task_id, EventType.APPROVAL_REQUESTED)
    assert isinstance(requested.data, dict)
    return task_id, requested.data["approval_id"]


async def send_reply(
    harness: ServiceHarness,
    bus: BusName,
    reply: ApprovalReplied,
    signer: ReplySigner | None = None,
    *,
    signed: ApprovalReplied | None = None,
    signed_event_id: str | None = None,
    issued: float | None = None,
) -> CloudEvent:
    """Send `reply`, signed by `signer` over `signed` (default: the reply itself) and
    `signed_event_id` (default: the reply event's own id), `issued` then (default: now)."""
    event_id = new_task_id("reply")
    extensions = {}
    if signer is not None:
        claims = signed or reply
        assert claims.approver is not None
        extensions[APPROVALSIG_EXTENSION] = sign_approval(
            signer.key,
            signer.algorithm,
            task_id=claims.task_id,
            approval_id=claims.approval_id,
            approved=claims.approved,
            approver=claims.approver,
            arguments=claims.arguments,
            event_id=signed_event_id or event_id,
            signer=signer.signer,
            now=issued,
        )
    return await harness.producers[bus].send(
        EventType.APPROVAL_REPLIED,
        reply.task_id,
        reply.model_dump(mode="json", exclude_none=True),
        extensions=extensions,
        event_id=event_id,
    )


async def dead_letter(harness: ServiceHarness, bus: BusName, event: CloudEvent) -> InboundMessage:
    return await harness.watchers[bus].wait_for_dead_letter(event.id.encode(), field="id")


@pytest.mark.parametrize("bus", BUSES)
async def test_only_a_valid_signature_from_an_allowed_approver_decides(
    signed_service: ServiceHarness, signers: Signers, bus: BusName
) -> None:
    harness = signed_service
    task_id, approval_id = await waiting_task(harness, bus, "signed")
    reply = ApprovalReplied(task_id=task_id, approval_id=approval_id, approved=True)
    as_alice = reply.model_copy(update={"approver": "alice"})
    alice = signers.eddsa(signers.alice)
    refused = {
        "unsigned": await send_reply(harness, bus, as_alice),
        "expired": await send_reply(harness, bus, as_alice, alice, issued=time.time() - 3600),
        "wrong key": await send_reply(harness, bus, as_alice, signers.eddsa(signers.stranger)),
        "other approval": await send_reply(
            harness,
            bus,
            as_alice,
            alice,
            signed=as_alice.model_copy(update={"approval_id": "approval-9-9"}),
        ),
        "other event": await send_reply(
            harness, bus, as_alice, alice, signed_event_id="earlier-reply"
        ),
        "other decision": await send_reply(
            harness, bus, as_alice.model_copy(update={"approved": False}), alice, signed=as_alice
        ),
    }
    for why, event in refused.items():
        dead = await dead_letter(harness, bus, event)
        assert dead.header("dlq_reason") == b"invalid-signature", why
    expired = await dead_letter(harness, bus, refused["expired"])
    assert b"expired" in (expired.header("dlq_error") or b"")
    # Carol's signature is valid, but save_note is for the ops group.
    as_carol = reply.model_copy(update={"approver": "carol"})
    carol = await send_reply(harness, bus, as_carol, signers.eddsa(signers.carol))
    dead = await dead_letter(harness, bus, carol)
    assert dead.header("dlq_reason") == b"approver-not-allowed"
    # Nothing changed; then alice's valid signature decides.
    events = harness.watchers[bus].events(task_id)
    assert EventType.APPROVAL_RESOLVED not in [e.type for e in events]
    await send_reply(harness, bus, as_alice, signers.eddsa(signers.alice))
    end = await harness.watchers[bus].wait_for_end(task_id)
    resolved = [e.data for e in end if e.type == EventType.APPROVAL_RESOLVED]
    assert [(r["approved"], r["approver"]) for r in resolved] == [(True, "alice")]
    assert end[-1].type == EventType.EXECUTION_COMPLETED


@pytest.mark.parametrize("bus", BUSES)
async def test_a_bot_signs_with_a_shared_secret_for_a_member_of_the_group(
    signed_service: ServiceHarness, signers: Signers, bus: BusName
) -> None:
    harness = signed_service
    task_id, approval_id = await waiting_task(harness, bus, "bot")
    # The body names no approver: the signature's approver is the one recorded.
    reply = ApprovalReplied(
        task_id=task_id,
        approval_id=approval_id,
        approved=True,
        arguments={"title": "t", "text": "edited by bob"},
    )
    as_bob = reply.model_copy(update={"approver": "bob"})
    await send_reply(harness, bus, reply, signers.bot(), signed=as_bob)
    end = await harness.watchers[bus].wait_for_end(task_id)
    resolved = [e.data for e in end if e.type == EventType.APPROVAL_RESOLVED]
    assert [(r["approved"], r["approver"]) for r in resolved] == [(True, "bob")]
    completed = [e.data for e in end if e.type == EventType.TOOL_COMPLETED]
    assert "13 characters" in str(completed[0]["result"])  # "edited by bob" was saved


async def test_the_workflow_refuses_an_approver_its_plan_does_not_allow(
    signed_service: ServiceHarness, signers: Signers, temporal_client: Client
) -> None:
    task_id, approval_id = await waiting_task(signed_service, "kafka", "validator")
    lenient = signed_service.settings.model_copy(update={"approvals": ApprovalSettings()})
    decision = ApprovalDecision(approval_id=approval_id, approved=True, approver="mallory")
    with pytest.raises(ApproverNotAllowed, match="mallory"):
        await TaskService(lenient, temporal_client).approve(task_id, decision)
    events = signed_service.watchers["kafka"].events(task_id)
    assert EventType.APPROVAL_RESOLVED not in [e.type for e in events]
    await send_reply(
        signed_service,
        "kafka",
        ApprovalReplied(task_id=task_id, approval_id=approval_id, approved=False, approver="alice"),
        signers.eddsa(signers.alice),
    )
    end = await signed_service.watchers["kafka"].wait_for_end(task_id)
    assert end[-1].type == EventType.EXECUTION_COMPLETED


# -- HTTP and A2A: the approver is the authenticated caller ----------------------------------

ISSUER = "https://idp.example"
AUDIENCE = "temporal-executor"


class IdentityProvider:
    """Signs JWTs as an identity provider would: one key by file, one published in a JWKS."""

    def __init__(self, directory: Path) -> None:
        self.pem_key = key_pair(directory, "idp")
        self.jwks_key = key_pair(directory, "idp-rotated")
        self.jwks_file = directory / "jwks.json"
        self.jwks_file.write_text(json.dumps({"keys": [self.jwks_key.public_jwk(kid="k2")]}))

    def settings(self) -> JwtAuthSettings:
        return JwtAuthSettings(
            issuer=ISSUER,
            audience=AUDIENCE,
            public_keys=[KeySource(file=str(self.pem_key.public_file))],
            jwks_file=str(self.jwks_file),
        )

    def token(self, subject: str, *, via_jwks: bool = False, **claims: Any) -> str:
        now = int(time.time())
        payload = {"iss": ISSUER, "aud": AUDIENCE, "sub": subject, "iat": now, "exp": now + 60}
        pair = self.jwks_key if via_jwks else self.pem_key
        headers = {"kid": "k2"} if via_jwks else None
        return jwt.encode({**payload, **claims}, pair.private, algorithm="EdDSA", headers=headers)


@pytest.fixture(scope="module")
async def identified_gateway(
    signed_service: ServiceHarness, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[tuple[GatewayServer, IdentityProvider]]:
    directory = tmp_path_factory.mktemp("idp")
    idp = IdentityProvider(directory)
    (directory / "bob.token").write_text("bob-s-token\n")
    settings: Settings = signed_service.settings.model_copy(deep=True)
    settings.gateway = settings.gateway.model_copy(
        update={
            "port": 0,
            "jwt": idp.settings(),
            "tokens": [
                TokenIdentity(identity="bob", token=KeySource(file=str(directory / "bob.token")))
            ],
        }
    )
    server = GatewayServer(settings, signed_service.client)
    await server.start()
    try:
        yield server, idp
    finally:
        await server.stop()


async def test_over_http_the_approver_is_whom_the_jwt_names(
    signed_service: ServiceHarness, identified_gateway: tuple[GatewayServer, IdentityProvider]
) -> None:
    server, idp = identified_gateway
    task_id, _ = await waiting_task(signed_service, "kafka", "http-jwt")
    path = f"/api/v1/approve/{workflow_id_for(task_id)}"
    now = int(time.time())
    stranger = key_pair(Path(idp.jwks_file.parent), "not-the-idp")
    refused = {
        "no credential": None,
        "expired": idp.token("alice", iat=now - 600, exp=now - 300),
        "other audience": idp.token("alice", aud="someone-else"),
        "other issuer": idp.token("alice", iss="https://evil.example"),
        "unknown key": jwt.encode(
            {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "exp": now + 60},
            stranger.private,
            algorithm="EdDSA",
        ),
        "no subject": jwt.encode(
            {"iss": ISSUER, "aud": AUDIENCE, "exp": now + 60}, idp.pem_key.private, "EdDSA"
        ),
    }
    async with httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT) as http:
        for why, token in refused.items():
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            response = await http.post(path, json={"approved": True}, headers=headers)
            assert response.status_code == 401, why
        carol = {"Authorization": f"Bearer {idp.token('carol')}"}
        response = await http.post(path, json={"approved": True}, headers=carol)
        assert (response.status_code, response.json()["error"]) == (403, "forbidden")
        # The body's approver is not who approves: the JWT's subject is.
        alice = {"Authorization": f"Bearer {idp.token('alice', via_jwks=True)}"}
        body = {"approved": True, "approver": "mallory"}
        response = await http.post(path, json=body, headers=alice)
        assert response.status_code == 200, response.text
    end = await signed_service.watchers["kafka"].wait_for_end(task_id)
    resolved = [e.data for e in end if e.type == EventType.APPROVAL_RESOLVED]
    assert [(r["approved"], r["approver"]) for r in resolved] == [(True, "alice")]


async def test_over_a2a_the_approver_is_whom_the_bearer_token_names(
    signed_service: ServiceHarness, identified_gateway: tuple[GatewayServer, IdentityProvider]
) -> None:
    server, _ = identified_gateway
    task_id, _ = await waiting_task(signed_service, "kafka", "a2a-token")
    headers = {"Authorization": "Bearer bob-s-token"}
    async with httpx.AsyncClient(timeout=TIMEOUT, headers=headers) as http:
        client = await a2a_client(server, http, streaming=False)
        message = user_message("approve", task_id=task_id, approver="mallory")
        await collect(client.send_message(SendMessageRequest(message=message)))
        await client.close()
    end = await signed_service.watchers["kafka"].wait_for_end(task_id)
    resolved = [e.data for e in end if e.type == EventType.APPROVAL_RESOLVED]
    assert [(r["approved"], r["approver"]) for r in resolved] == [(True, "bob")]


# -- The CLI: `approve --key` and `sign-approval` for kcat / nats by hand ---------------------


async def test_the_cli_signs_what_it_sends(
    signed_service: ServiceHarness, signers: Signers, capsys: pytest.CaptureFixture[str]
) -> None:
    harness = signed_service
    task_id, approval_id = await waiting_task(harness, "kafka", "cli")
    signer = ReplySigner.from_file(signers.alice.private_file)
    code = await commands.approve(
        harness.settings,
        task_id,
        approval_id,
        approved=True,
        reason=None,
        approver="alice",
        signer=signer,
    )
    assert code == 0
    assert "signed EdDSA as alice" in capsys.readouterr().out
    end = await harness.watchers["kafka"].wait_for_end(task_id)
    resolved = [e.data for e in end if e.type == EventType.APPROVAL_RESOLVED]
    assert [(r["approved"], r["approver"]) for r in resolved] == [(True, "alice")]


async def sign_approval_command(*args: str) -> str:
    """`temporal-executor sign-approval ARGS` as a person runs it; its stdout."""
    code, out, err = await cli_run("sign-approval", *args)
    assert code == 0, err
    return out


async def cli_run(*args: str) -> tuple[int | None, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "temporal_executor",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    return process.returncode, out.decode().strip(), err.decode()


async def test_sign_approval_prints_a_reply_nats_can_publish_as_it_is(
    signed_service: ServiceHarness, signers: Signers
) -> None:
    harness = signed_service
    task_id, approval_id = await waiting_task(harness, "nats", "by-hand")
    args = [task_id, approval_id, "--deny", "--reason", "not now"]
    args += ["--key", str(signers.bot_secret), "--signer", "slackbot", "--approver", "bob"]
    line = await sign_approval_command(*args, "--event")
    # What `nats pub <subject> "$line" -H Content-Type:application/cloudevents+json` sends.
    transport = harness.producers["nats"].transport
    event = transport.decode(
        InboundMessage(
            transport.approval_replies_destination(task_id),
            None,
            line.encode(),
            (("Content-Type", b"application/cloudevents+json"),),
        )
    )
    await transport.publish(transport.approval_replies_destination(task_id), event)
    end = await harness.watchers["nats"].wait_for_end(task_id)
    resolved = [e.data for e in end if e.type == EventType.APPROVAL_RESOLVED]
    assert [(r["approved"], r["approver"], r["reason"]) for r in resolved] == [
        (False, "bob", "not now")
    ]
    # Without --event: the signature alone, for a given event id.
    signature = await sign_approval_command(*args, "--event-id", "my-reply-1")
    claims = jwt.decode(signature, signers.bot_secret.read_bytes().strip(), algorithms=["HS256"])
    assert (claims["event_id"], claims["approver"], claims["approved"]) == (
        "my-reply-1",
        "bob",
        False,
    )


async def test_sign_approval_names_the_event_id_it_chose_and_refuses_a_bad_key(
    signers: Signers, tmp_path: Path
) -> None:
    args = ["t-1", "approval-1-1", "--approver", "alice"]
    code, signature, err = await cli_run(
        "sign-approval", *args, "--key", str(signers.alice.private_file)
    )
    assert code == 0, err
    event_id = err.strip().rsplit(" ", 1)[-1]
    claims = jwt.decode(signature, options={"verify_signature": False})
    assert claims["event_id"] == event_id
    code, _, err = await cli_run("sign-approval", *args, "--key", str(tmp_path / "absent.pem"))
    assert code == 2
    assert "cannot read key file" in err
    assert "Traceback" not in err
