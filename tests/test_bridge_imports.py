"""What a bridge process loads: its memory is mostly its imports (docs/performance.md).

Each probe runs in a fresh interpreter: the imports `temporal-executor bridge` does, then
the task service built from settings, as `run_bridge` builds it.
"""

import json
import subprocess
import sys

import pytest

from temporal_executor.bus.errors import TransportConfigError
from temporal_executor.bus.nats.transport import connect_options
from temporal_executor.schemas.config import Settings
from temporal_executor.schemas.requests import ApprovalReplied
from temporal_executor.tasks.approval_signatures import sign_approval
from temporal_executor.tasks.errors import InvalidSignature
from temporal_executor.tasks.service import TaskService

# Never needed by a bridge (aiohttp: nats-py's WebSocket transport, not used); the last two
# only with approval keys or payload encryption.
NOT_LOADED = (
    "aiohttp",
    "temporal_executor.worker",
    "temporal_executor.gateway",
    "openai",
    "anthropic",
    "mcp",
    "opentelemetry.sdk",
    "jwt",
    "cryptography",
)

PROBE = """
import json, sys
import temporal_executor.cli
from temporal_executor import commands
from temporal_executor.bridge.service import run_bridge
from temporal_executor.bus.kafka.transport import KafkaTransport
from temporal_executor.bus.nats.transport import NatsTransport
from temporal_executor.schemas.config import Settings
from temporal_executor.tasks.service import TaskService
settings = Settings.model_validate(json.loads(sys.argv[1]))
TaskService(settings)
print(json.dumps(sorted(sys.modules)))
"""


def loaded_by_a_bridge(config: dict[str, object]) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(config)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return set(json.loads(out))


def offending(loaded: set[str], modules: tuple[str, ...]) -> list[str]:
    return sorted(
        name for name in loaded if any(name == m or name.startswith(f"{m}.") for m in modules)
    )


def test_a_bridge_loads_no_worker_gateway_sdk_or_crypto_module() -> None:
    loaded = loaded_by_a_bridge({})
    assert "temporal_executor.bridge.dispatcher" in loaded
    assert offending(loaded, NOT_LOADED) == []


@pytest.mark.parametrize(
    "approvals",
    [{"require_signature": True}, {"keys": {"bot": {"hmac_secrets": [{"env": "TE_NO_SUCH"}]}}}],
)
def test_approval_keys_are_read_at_start(approvals: dict[str, object]) -> None:
    """With keys or required signatures the verifier is built (and keys read) at once: a
    key that cannot be read stops the bridge at start, not at the first reply."""
    if "keys" in approvals:
        with pytest.raises(subprocess.CalledProcessError) as failed:
            loaded_by_a_bridge({"approvals": approvals})
        assert "TE_NO_SUCH" in failed.value.stderr
    else:
        assert "jwt" in loaded_by_a_bridge({"approvals": approvals})


async def test_a_signed_reply_is_still_checked_when_no_keys_are_configured() -> None:
    """Without keys the verifier is built on the first signed reply, which it refuses
    (no signer can be verified), before anything reaches Temporal."""
    tasks = TaskService(Settings())
    reply = ApprovalReplied(task_id="t-1", approval_id="a-1", approved=True, approver="eve")
    with pytest.raises(InvalidSignature, match="compact JWS"):
        await tasks.approve_reply(reply, event_id="e-1", signature="not-a-jws")
    token = sign_approval(
        b"x" * 32,
        "HS256",
        task_id="t-1",
        approval_id="a-1",
        approved=True,
        approver="eve",
        event_id="e-1",
    )
    with pytest.raises(InvalidSignature, match=r"no keys in approvals\.keys for signer 'eve'"):
        await tasks.approve_reply(reply, event_id="e-1", signature=token)


@pytest.mark.parametrize("url", ["ws://127.0.0.1:8080", "nats://a:4222, wss://b:443"])
def test_a_websocket_nats_url_is_refused_with_a_clear_error(url: str) -> None:
    settings = Settings.model_validate({"bus": {"nats": {"url": url}}})
    with pytest.raises(TransportConfigError, match="WebSocket URLs are not supported"):
        connect_options(settings.bus.nats)
