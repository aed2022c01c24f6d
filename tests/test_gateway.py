"""The HTTP gateway over real HTTP: a uvicorn server on 127.0.0.1 in this process, in front of
the session's service (same task queue, same topics and subjects), driven with httpx the way
the seed's curl examples drive it."""

import asyncio
import contextlib
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from temporal_executor.dev.embedded_stack import ENV_OVERRIDES
from temporal_executor.gateway import GatewayServer
from temporal_executor.schemas.config import KeySource, TokenIdentity
from temporal_executor.schemas.event_types import EventType, workflow_id_for
from temporal_executor.schemas.task import BusName
from tests.harness import (
    BUSES,
    ONE_APPROVED_TOOL_CALL,
    ServiceHarness,
    ServiceProcess,
    new_task_id,
    types,
)

TIMEOUT = 30.0


@pytest.fixture(scope="module")
async def gateway(service: ServiceHarness) -> AsyncIterator[GatewayServer]:
    server = GatewayServer(gateway_settings(service), service.client)
    await server.start()
    yield server
    await server.stop()


@pytest.fixture(scope="module")
async def http(gateway: GatewayServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gateway.url, timeout=TIMEOUT) as client:
        yield client


def gateway_settings(service: ServiceHarness, bus: BusName = "kafka", **gateway: Any) -> Any:
    settings = service.settings.model_copy(deep=True)
    settings.bus.default = bus
    settings.gateway = settings.gateway.model_copy(update={"port": 0, **gateway})
    return settings


def execute_body(task_id: str, model: str = "one-turn", **fields: Any) -> dict[str, Any]:
    return {
        "task_id": task_id,
        "user_message": f"hello from {task_id}",
        "model_config": {"provider": "scripted", "model": model},
        **fields,
    }


async def wait_for_state(http: httpx.AsyncClient, task_id: str, state: str) -> dict[str, Any]:
    async with asyncio.timeout(TIMEOUT):
        while True:
            response = await http.get(f"/api/v1/status/{workflow_id_for(task_id)}")
            assert response.status_code == 200, response.text
            body: dict[str, Any] = response.json()
            if body["state"] == state:
                return body
            await asyncio.sleep(0.1)


async def sse(
    http: httpx.AsyncClient, path: str, headers: dict[str, str] | None = None
) -> list[dict[str, Any]]:
    """Every Server-Sent Event of a stream, until the server ends it."""
    found: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    async with http.stream("GET", path, headers=headers) as response:
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        async for line in response.aiter_lines():
            if not line.strip():
                if "data" in current:
                    found.append(current)
                current = {}
            elif not line.startswith(":"):
                name, _, value = line.partition(":")
                current[name] = value.removeprefix(" ")
    for event in found:
        event["data"] = json.loads(event["data"])
    return found


async def test_the_seeds_three_calls_then_the_events_as_sse(
    service: ServiceHarness, http: httpx.AsyncClient
) -> None:
    task_id = new_task_id("http")
    # curl -X POST .../api/v1/execute -H "Content-Type: application/json" -d '{...}'
    response = await http.post("/api/v1/execute", json=execute_body(task_id, "note"))
    assert response.status_code == 202, response.text
    accepted = response.json()
    assert accepted["task_id"] == task_id
    assert accepted["workflow_id"] == f"agent-execution-{task_id}"
    assert accepted["started"] is True

    # curl .../api/v1/status/agent-execution-<task_id>
    status = await wait_for_state(http, task_id, "awaiting_approval")
    assert status["workflow_id"] == workflow_id_for(task_id)
    [pending] = status["pending_approvals"]
    assert pending["tool_call"]["name"] == "save_note"

    # curl -X POST .../api/v1/approve/agent-execution-<task_id> -d '{"approved": true}'
    # (curl -d sends Content-Type: application/x-www-form-urlencoded)
    response = await http.post(
        f"/api/v1/approve/{workflow_id_for(task_id)}",
        content=b'{"approved": true}',
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 200, response.text
    assert response.json() == {
        "task_id": task_id,
        "approval_id": pending["approval_id"],
        "approved": True,
    }

    events = await asyncio.wait_for(sse(http, f"/api/v1/events/{task_id}"), TIMEOUT)
    assert [e["event"] for e in events] == ONE_APPROVED_TOOL_CALL
    # The very events the bus carries: same ids, attributes and data.
    on_bus = await service.watchers["kafka"].wait_for_end(task_id)
    assert [e["id"] for e in events] == [e.id for e in on_bus]
    for streamed, carried in zip(events, on_bus, strict=True):
        assert streamed["data"]["data"] == carried.data
        assert streamed["data"]["type"] == carried.type
        assert streamed["data"]["taskid"] == task_id
        assert streamed["data"]["sequence"] == carried.extension("sequence")
    final = await wait_for_state(http, task_id, "completed")
    assert final["final_message"].startswith("note result: saved")
    assert final["pending_approvals"] == []


@pytest.mark.parametrize("bus", BUSES)
async def test_a_task_started_over_http_publishes_on_the_default_bus(
    service: ServiceHarness, bus: BusName
) -> None:
    server = GatewayServer(gateway_settings(service, bus), service.client)
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT) as http:
            task_id = new_task_id("bus")
            headers = {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}
            # Without Content-Type at all, and following the stream from before the start.
            response = await http.post(
                "/api/v1/execute", content=json.dumps(execute_body(task_id)), headers=headers
            )
            assert response.status_code == 202, response.text
            streamed = await asyncio.wait_for(sse(http, f"/api/v1/events/{task_id}"), TIMEOUT)
    finally:
        await server.stop()
    on_bus = await service.watchers[bus].wait_for_end(task_id)
    assert types(on_bus) == [e["event"] for e in streamed]
    assert on_bus[-1].type == EventType.EXECUTION_COMPLETED
    assert {e.extension("traceparent") for e in on_bus} == {headers["traceparent"]}
    # The gateway announced the start too; SSE, like any consumer, showed it once.
    watcher = service.watchers[bus]
    raw = map(watcher.transport.decode, watcher.raw_events(task_id))
    assert [e.id for e in raw if e.type == EventType.EXECUTION_STARTED] == [on_bus[0].id] * 2


async def test_sse_resumes_after_last_event_id(http: httpx.AsyncClient) -> None:
    task_id = new_task_id("resume")
    assert (await http.post("/api/v1/execute", json=execute_body(task_id))).status_code == 202
    everything = await asyncio.wait_for(sse(http, f"/api/v1/events/{task_id}"), TIMEOUT)
    assert len(everything) == 3
    rest = await sse(
        http, f"/api/v1/events/{task_id}", headers={"Last-Event-ID": everything[0]["id"]}
    )
    assert [e["id"] for e in rest] == [e["id"] for e in everything[1:]]


async def test_a_duplicate_execute_returns_the_same_task(
    service: ServiceHarness, http: httpx.AsyncClient
) -> None:
    task_id = new_task_id("dup")
    first = await http.post("/api/v1/execute", json=execute_body(task_id))
    again = await http.post("/api/v1/execute", json=execute_body(task_id, user_message="other"))
    assert (first.status_code, again.status_code) == (202, 200)
    assert first.json()["task_id"] == again.json()["task_id"] == task_id
    assert (first.json()["started"], again.json()["started"]) == (True, False)
    await wait_for_state(http, task_id, "completed")
    runs = [
        w async for w in service.client.list_workflows(f'WorkflowId = "{workflow_id_for(task_id)}"')
    ]
    assert len(runs) == 1


async def test_execute_without_task_id_picks_one(http: httpx.AsyncClient) -> None:
    body = execute_body("unused")
    del body["task_id"]
    response = await http.post("/api/v1/execute", json=body)
    assert response.status_code == 202, response.text
    task_id = response.json()["task_id"]
    assert task_id.startswith("task-")
    assert response.json()["status_url"] == f"/api/v1/status/agent-execution-{task_id}"
    await wait_for_state(http, task_id, "completed")


@pytest.mark.parametrize(
    ("content", "status", "code", "says"),
    [
        (b"not json", 400, "invalid_request", "not JSON"),
        (b"[1, 2]", 400, "invalid_request", "JSON object"),
        (b'{"task_id": "t"}', 400, "invalid_request", "user_message: Field required"),
        (b'{"task_id": "bad id!", "user_message": "m"}', 400, "invalid_request", "task_id"),
        (b'{"user_message": "m", "max_iterations": 0}', 400, "invalid_request", "max_iterations"),
        (b'{"user_message": "' + b"x" * 70_000 + b'"}', 413, "payload_too_large", "limit"),
    ],
)
async def test_invalid_execute_bodies(
    http: httpx.AsyncClient, content: bytes, status: int, code: str, says: str
) -> None:
    response = await http.post("/api/v1/execute", content=content)
    assert response.status_code == status
    body = response.json()
    assert (body["status"], body["error"]) == (status, code)
    assert says in body["message"]


async def test_unknown_tasks_are_404(http: httpx.AsyncClient) -> None:
    missing = workflow_id_for(new_task_id("missing"))
    for response in [
        await http.get(f"/api/v1/status/{missing}"),
        await http.post(f"/api/v1/approve/{missing}", json={"approved": True}),
        await http.post(f"/api/v1/cancel/{missing}"),
        await http.get(f"/api/v1/events/{missing}"),
    ]:
        assert response.status_code == 404, response.text
        assert response.json()["error"] == "task_not_found"
    assert (await http.get("/api/v1/nothing-here")).json()["error"] == "not_found"


async def test_approvals_a_task_is_not_waiting_for_are_409(http: httpx.AsyncClient) -> None:
    done = new_task_id("done")
    assert (await http.post("/api/v1/execute", json=execute_body(done))).status_code == 202
    await wait_for_state(http, done, "completed")
    response = await http.post(f"/api/v1/approve/{workflow_id_for(done)}", json={"approved": True})
    assert (response.status_code, response.json()["error"]) == (409, "task_not_running")

    waiting = new_task_id("waiting")
    assert (await http.post("/api/v1/execute", json=execute_body(waiting, "note"))).is_success
    [pending] = (await wait_for_state(http, waiting, "awaiting_approval"))["pending_approvals"]
    path = f"/api/v1/approve/{workflow_id_for(waiting)}"
    response = await http.post(path, json={"approved": True, "approval_id": "approval-9-9"})
    assert (response.status_code, response.json()["error"]) == (409, "not_awaiting_approval")
    assert "approval-9-9" in response.json()["message"]
    response = await http.post(path, json={"approved": "maybe"})
    assert response.status_code == 400
    first = await http.post(path, json={"approved": False, "reason": "no"})
    assert first.status_code == 200, first.text
    again = await http.post(path, json={"approved": True, "approval_id": pending["approval_id"]})
    assert again.status_code == 409, again.text


async def test_cancel_while_waiting_for_approval(http: httpx.AsyncClient) -> None:
    task_id = new_task_id("cancel")
    assert (await http.post("/api/v1/execute", json=execute_body(task_id, "note"))).is_success
    await wait_for_state(http, task_id, "awaiting_approval")
    path = f"/api/v1/cancel/{workflow_id_for(task_id)}"
    response = await http.post(path, json={"reason": "changed my mind"})
    assert response.status_code == 202, response.text
    events = await asyncio.wait_for(sse(http, f"/api/v1/events/{task_id}"), TIMEOUT)
    assert events[-1]["event"] == EventType.EXECUTION_CANCELLED
    assert events[-1]["data"]["data"]["reason"] == "changed my mind"
    await wait_for_state(http, task_id, "cancelled")
    assert (await http.post(path)).status_code == 409


async def test_openapi_docs_and_health(http: httpx.AsyncClient) -> None:
    document = (await http.get("/openapi.json")).json()
    paths = document["paths"]
    for path in [
        "/api/v1/execute",
        "/api/v1/status/{workflow_id}",
        "/api/v1/approve/{workflow_id}",
        "/api/v1/cancel/{workflow_id}",
        "/api/v1/events/{task_id}",
        "/a2a",
        "/.well-known/agent-card.json",
        "/healthz",
        "/readyz",
    ]:
        assert path in paths, path
    schemas = document["components"]["schemas"]
    execute = schemas["ExecutionRequested"]
    assert "model_config" in execute["properties"]
    assert execute["required"] == ["user_message"]
    assert "ModelSelection" in schemas
    assert (await http.get("/docs")).status_code == 200
    assert (await http.get("/healthz")).json() == {"status": "ok", "detail": None}
    assert (await http.get("/readyz")).json()["status"] == "ready"


async def test_bearer_token(service: ServiceHarness, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_GATEWAY_TOKEN", "s3cret")
    settings = gateway_settings(service, auth_token_env="TEST_GATEWAY_TOKEN")
    server = GatewayServer(settings, service.client)
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT) as http:
            status = f"/api/v1/status/{workflow_id_for(new_task_id('auth'))}"
            for headers in [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}]:
                response = await http.get(status, headers=headers)
                assert response.status_code == 401
                assert response.headers["www-authenticate"].startswith("Bearer")
                assert response.json()["error"] == "unauthorized"
            assert (await http.post("/a2a", json={})).status_code == 401
            authorised = await http.get(status, headers={"Authorization": "Bearer s3cret"})
            assert authorised.status_code == 404  # past auth: the task does not exist
            for open_path in ["/healthz", "/readyz", "/openapi.json"]:
                assert (await http.get(open_path)).status_code == 200
            card = (await http.get("/.well-known/agent-card.json")).json()
            assert card["securitySchemes"]["bearer"]["httpAuthSecurityScheme"]["scheme"] == "bearer"
    finally:
        await server.stop()


async def test_approvers_and_buses_config_limits(
    service: ServiceHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_ALICE_TOKEN", "alice-token")
    monkeypatch.setenv("TEST_BOB_TOKEN", "bob-token")
    settings = gateway_settings(
        service,
        tokens=[
            TokenIdentity(identity=who, token=KeySource(env=f"TEST_{who.upper()}_TOKEN"))
            for who in ("alice", "bob")
        ],
    )
    settings.bridge.allowed_approvers = ["alice"]
    settings.bus.nats.enabled = False  # this gateway cannot read tasks that publish on NATS
    server = GatewayServer(settings, service.client)
    await server.start()
    try:
        as_alice = {"Authorization": "Bearer alice-token"}
        async with httpx.AsyncClient(
            base_url=server.url, timeout=TIMEOUT, headers=as_alice
        ) as http:
            waiting = new_task_id("approver")
            assert (
                await http.post("/api/v1/execute", json=execute_body(waiting, "note"))
            ).is_success
            await wait_for_state(http, waiting, "awaiting_approval")
            path = f"/api/v1/approve/{workflow_id_for(waiting)}"
            # The approver is the caller: bob naming alice in the body is still bob.
            as_bob = {"Authorization": "Bearer bob-token"}
            body = {"approved": True, "approver": "alice"}
            refused = await http.post(path, json=body, headers=as_bob)
            assert (refused.status_code, refused.json()["error"]) == (403, "forbidden")
            allowed = await http.post(path, json={"approved": True, "approver": "bob"})
            assert allowed.status_code == 200, allowed.text
            resolved = await service.watchers["kafka"].wait_for(
                waiting, EventType.APPROVAL_RESOLVED
            )
            assert resolved.data["approver"] == "alice"

            on_nats = new_task_id("nats")
            await service.producers["nats"].request(on_nats)
            await service.watchers["nats"].wait_for_end(on_nats)
            response = await http.get(f"/api/v1/events/{on_nats}")
            assert (response.status_code, response.json()["error"]) == (503, "bus_unavailable")
            assert (await http.get(f"/api/v1/status/{on_nats}")).json()["state"] == "completed"
    finally:
        await server.stop()


async def test_503_while_temporal_is_unreachable(service: ServiceHarness) -> None:
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        closed_port = unused.getsockname()[1]
    settings = gateway_settings(service)
    settings.temporal.host_port = f"127.0.0.1:{closed_port}"
    server = GatewayServer(settings)  # no client: it keeps trying to connect
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=TIMEOUT) as http:
            task_id = new_task_id("down")
            for response in [
                await http.post("/api/v1/execute", json=execute_body(task_id)),
                await http.get(f"/api/v1/status/{workflow_id_for(task_id)}"),
                await http.post(f"/api/v1/approve/{task_id}", json={"approved": True}),
                await http.get("/readyz"),
            ]:
                assert response.status_code == 503, response.text
            assert "not reachable" in response.json()["detail"]
            assert (await http.get("/healthz")).status_code == 200
    finally:
        await server.stop()


async def test_a_taken_port_or_a_missing_token_stops_the_start(service: ServiceHarness) -> None:
    from temporal_executor.gateway import CannotStart

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(CannotStart, match=rf"cannot listen on 127\.0\.0\.1:{port}"):
            await GatewayServer(gateway_settings(service, port=port), service.client).start()
    settings = gateway_settings(service, auth_token_env="TEST_GATEWAY_TOKEN_UNSET")
    with pytest.raises(CannotStart, match="TEST_GATEWAY_TOKEN_UNSET"):
        await GatewayServer(settings, service.client).start()


async def test_the_gateway_command_serves_until_sigterm(
    service: ServiceHarness, tmp_path: Path
) -> None:
    settings = gateway_settings(service, port=free_port())
    config = ServiceProcess.write_config(settings, tmp_path / "config.yaml")
    command = (sys.executable, "-m", "temporal_executor", "--config", str(config), "gateway")
    log = tmp_path / "gateway.log"
    with log.open("wb") as out:
        process = await asyncio.create_subprocess_exec(*command, stdout=out, stderr=out)
    url = f"http://127.0.0.1:{settings.gateway.port}"
    try:
        async with httpx.AsyncClient(base_url=url, timeout=TIMEOUT) as http:
            async with asyncio.timeout(TIMEOUT):
                while True:
                    with contextlib.suppress(httpx.TransportError):
                        if (await http.get("/readyz")).status_code == 200:
                            break
                    await asyncio.sleep(0.1)
            task_id = new_task_id("process")
            assert (await http.post("/api/v1/execute", json=execute_body(task_id))).is_success
            await wait_for_state(http, task_id, "completed")
    finally:
        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), TIMEOUT) == 0, log.read_text()
    assert '"message": "gateway stopped"' in log.read_text()

    settings.gateway.auth_token_env = "TEST_GATEWAY_TOKEN_UNSET"
    ServiceProcess.write_config(settings, config)
    failing = await asyncio.create_subprocess_exec(*command, stderr=asyncio.subprocess.PIPE)
    _, err = await asyncio.wait_for(failing.communicate(), TIMEOUT)
    assert failing.returncode == 2
    assert "TEST_GATEWAY_TOKEN_UNSET" in err.decode()


# -- The README, literally, against `temporal-executor dev` ------------------------------

README = Path(__file__).resolve().parent.parent / "README.md"
README_URL = "http://localhost:8080"


def readme_blocks(language: str) -> list[str]:
    """The code blocks of the README's "HTTP and A2A" section in `language`, in order."""
    section = README.read_text(encoding="utf-8").split("## HTTP and A2A\n", 1)[1]
    section = section.split("\n## ", 1)[0]
    return re.findall(rf"```{language}\n(.*?)```", section, flags=re.DOTALL)


def curl_calls(block: str) -> list[list[str]]:
    """Each `curl` command of a shell block as its words (comments and line breaks gone)."""
    lines = [line for line in block.splitlines() if not line.lstrip().startswith("#")]
    text = "\n".join(lines).replace("\\\n", " ")
    return [shlex.split(command) for command in re.split(r"\n\s*\n", text) if command.strip()]


async def run_curl(http: httpx.AsyncClient, words: list[str], base_url: str) -> httpx.Response:
    """What `curl` does with these words (the options the README uses)."""
    assert words[0] == "curl"
    method, url, body, headers = "GET", "", None, {}
    options = iter(words[1:])
    for word in options:
        if word == "-X":
            method = next(options)
        elif word == "-H":
            name, _, value = next(options).partition(":")
            headers[name.strip()] = value.strip()
        elif word == "-d":
            body = next(options).encode()
            method = "POST" if method == "GET" else method
            headers.setdefault("Content-Type", "application/x-www-form-urlencoded")
        else:
            url = word.replace(README_URL, base_url)
    return await http.request(method, url, content=body, headers=headers)


async def test_the_readme_calls_work_against_dev(tmp_path: Path) -> None:
    ports = {name: free_port() for name in ("temporal", "ui", "kafka", "nats", "gateway")}
    flags = [arg for name, port in ports.items() for arg in (f"--{name}-port", str(port))]
    env = {k: v for k, v in os.environ.items() if k not in ENV_OVERRIDES.values()}
    config = README.parent / "config" / "temporal-executor.yaml"
    stderr = (tmp_path / "dev.stderr").open("wb")
    dev = await asyncio.create_subprocess_exec(
        *(sys.executable, "-m", "temporal_executor", "--config", str(config), "dev"),
        *("--data-dir", str(tmp_path / "data"), *flags),
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=stderr,
    )
    stderr.close()
    base_url = f"http://127.0.0.1:{ports['gateway']}"
    try:
        assert dev.stdout is not None
        async with asyncio.timeout(90):
            banner = ""
            while "Press Ctrl-C" not in banner:
                line = (await dev.stdout.readline()).decode()
                assert line, (tmp_path / "dev.stderr").read_text()
                banner += line
        assert f"  Gateway     {base_url}   (HTTP API, A2A; docs at /docs)" in banner

        execute, status, approve = curl_calls(readme_blocks("sh")[0])
        async with httpx.AsyncClient(timeout=TIMEOUT) as http:
            started = await run_curl(http, execute, base_url)
            assert started.status_code == 202, started.text
            task_id = started.json()["task_id"]
            assert task_id == "task-123"
            async with asyncio.timeout(TIMEOUT):  # one call after another, as a person types
                while True:
                    waiting = (await run_curl(http, status, base_url)).json()
                    if waiting["state"] != "running":
                        break
                    await asyncio.sleep(0.1)
            assert waiting["pending_approvals"][0]["approval_id"] == "approval-1-2"
            approved = await run_curl(http, approve, base_url)
            assert approved.json() == {
                "task_id": task_id,
                "approval_id": "approval-1-2",
                "approved": True,
            }
            events = await asyncio.wait_for(sse(http, f"{base_url}/api/v1/events/{task_id}"), 30)
            assert events[-1]["event"] == EventType.EXECUTION_COMPLETED
            assert (await run_curl(http, execute, base_url)).json()["started"] is False

        [example] = readme_blocks("python")
        script = tmp_path / "a2a_example.py"
        script.write_text(example.replace(README_URL, base_url), encoding="utf-8")
        client = await asyncio.create_subprocess_exec(
            sys.executable, str(script), stdout=asyncio.subprocess.PIPE, stderr=subprocess.STDOUT
        )
        out, _ = await asyncio.wait_for(client.communicate(), TIMEOUT)
        printed = out.decode().splitlines()
        assert client.returncode == 0, out.decode()
        assert any(line.startswith("TASK_STATE_INPUT_REQUIRED save_note(") for line in printed)
        assert "TASK_STATE_WORKING approval-1-2 approved" in printed
        assert printed[-1].startswith("TASK_STATE_COMPLETED All done.")
    finally:
        if dev.returncode is None:
            dev.send_signal(signal.SIGINT)
        assert await asyncio.wait_for(dev.wait(), 30) == 0, (tmp_path / "dev.stderr").read_text()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
