"""Transport security. NATS for real: a `nats-server` that demands mutual TLS and a login
(password, NKey, or a `.creds` file in operator mode), with certificates made by the test;
the bridge, the worker and the CLI reach it, and wrong credentials fail at once, saying
why. Kafka (SSL, SASL PLAIN/SCRAM) and Temporal (mTLS, API key): what the clients get."""

import asyncio
import os
import ssl
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from temporalio.service import TLSConfig

from temporal_executor.bus.errors import TransportConfigError
from temporal_executor.bus.kafka.transport import KafkaTransport
from temporal_executor.bus.nats import transport as nats_transport
from temporal_executor.bus.nats.transport import NatsTransport, connect_options
from temporal_executor.cli import main
from temporal_executor.dev.embedded_stack import EmbeddedStack
from temporal_executor.schemas.cloudevent import CloudEvent
from temporal_executor.schemas.config import (
    BusSettings,
    KafkaSettings,
    NatsSettings,
    Settings,
    TemporalSettings,
    TlsSettings,
)
from temporal_executor.schemas.event_types import EventType
from temporal_executor.tasks.temporal_connection import (
    TemporalConfigError,
)
from temporal_executor.tasks.temporal_connection import (
    connect_options as temporal_connect_options,
)
from tests.harness import ServiceHarness, ServiceProcess, new_task_id, service_settings
from tests.secure_nats import OperatorNats, TlsUsersNats, operator_nats, tls_users_nats
from tests.tls_certs import make_certs

PASSWORD_ENV = f"TE_TEST_NATS_PASSWORD_{uuid.uuid4().hex[:6].upper()}"
WRONG_ENV = f"TE_TEST_NATS_WRONG_{uuid.uuid4().hex[:6].upper()}"
TIMEOUT = 30.0


@pytest.fixture(scope="module")
async def secure(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[TlsUsersNats]:
    async with tls_users_nats(tmp_path_factory.mktemp("secure-nats")) as server:
        os.environ[PASSWORD_ENV] = server.password
        os.environ[WRONG_ENV] = "not-the-password"
        yield server
        del os.environ[PASSWORD_ENV], os.environ[WRONG_ENV]


@pytest.fixture(scope="module")
async def operator(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[OperatorNats]:
    async with operator_nats(tmp_path_factory.mktemp("operator-nats")) as server:
        yield server


def mtls(server: TlsUsersNats) -> TlsSettings:
    certs = server.certs
    return TlsSettings(
        ca_file=str(certs.ca), cert_file=str(certs.client_cert), key_file=str(certs.client_key)
    )


def bus_for(url: str, **nats: object) -> BusSettings:
    bus = BusSettings(default="nats")
    bus.nats = NatsSettings.model_validate({"url": url, **nats})
    suffix = uuid.uuid4().hex[:6]
    for field in type(bus.nats.subjects).model_fields:
        setattr(bus.nats.subjects, field, f"{suffix}.{getattr(bus.nats.subjects, field)}")
        setattr(bus.nats.streams, field, f"{getattr(bus.nats.streams, field)}_{suffix.upper()}")
    return bus


async def round_trip(bus: BusSettings) -> None:
    """Start (streams created), publish an event and read it back."""
    transport = NatsTransport(bus, connect_timeout_seconds=2)
    try:
        await transport.start()
        destination = transport.events_destination("t1")
        event = CloudEvent(id=str(uuid.uuid4()), source="tests", type="x.y", data={"a": 1})
        await transport.publish(destination, event)
        async with asyncio.timeout(TIMEOUT):
            async for message in transport.watch(destination, from_start=True):
                assert transport.decode(message).id == event.id
                break
    finally:
        await transport.close()


async def refusal(bus: BusSettings) -> str:
    transport = NatsTransport(bus, connect_timeout_seconds=2)
    try:
        with pytest.raises(TransportConfigError) as caught:
            await transport.start()
    finally:
        await transport.close()
    return str(caught.value)


# -- NATS, for real ---------------------------------------------------------------------


async def test_nats_mtls_with_password_and_nkey(secure: TlsUsersNats) -> None:
    await round_trip(
        bus_for(secure.url, tls=mtls(secure), user="bridge", password_env=PASSWORD_ENV)
    )
    await round_trip(
        bus_for(secure.url, tls=mtls(secure), nkey_seed_file=str(secure.nkey_seed_file))
    )


async def test_nats_refuses_wrong_credentials_clearly(
    secure: TlsUsersNats, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    wrong = bus_for(secure.url, tls=mtls(secure), user="bridge", password_env=WRONG_ENV)
    assert "Authorization Violation" in await refusal(wrong)
    no_client_cert = bus_for(
        secure.url,
        tls=TlsSettings(ca_file=str(secure.certs.ca)),
        user="bridge",
        password_env=PASSWORD_ENV,
    )
    assert "certificate required" in await refusal(no_client_cert)
    # A server whose certificate another CA signed is not trusted (nats-py can hang after
    # a failed handshake: the attempt's bound ends it).
    monkeypatch.setattr(nats_transport, "CONNECT_ATTEMPT_SECONDS", 2.0)
    other_ca = make_certs(tmp_path, "other")
    untrusted = bus_for(
        secure.url,
        tls=TlsSettings(
            ca_file=str(other_ca.ca),
            cert_file=str(secure.certs.client_cert),
            key_file=str(secure.certs.client_key),
        ),
        user="bridge",
        password_env=PASSWORD_ENV,
    )
    assert "CERTIFICATE_VERIFY_FAILED" in await refusal(untrusted)
    unset = bus_for(secure.url, tls=mtls(secure), user="bridge", password_env="TE_UNSET_VAR")
    assert "TE_UNSET_VAR" in await refusal(unset)
    no_seed = bus_for(secure.url, nkey_seed_file=str(tmp_path / "missing.nk"))
    assert "no file at" in await refusal(no_seed)
    bad_ca = bus_for(secure.url, tls=TlsSettings(ca_file=str(tmp_path / "missing.pem")))
    assert "cannot load the TLS files" in await refusal(bad_ca)


async def test_nats_creds_file_in_operator_mode(operator: OperatorNats) -> None:
    await round_trip(bus_for(operator.url, creds_file=str(operator.creds_file)))
    stranger = bus_for(operator.url, creds_file=str(operator.untrusted_creds_file))
    assert "Authorization Violation" in await refusal(stranger)


def test_nats_options_and_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TE_TEST_NATS_TOKEN", "s3cret-token")
    token = connect_options(NatsSettings(token_env="TE_TEST_NATS_TOKEN", tls=True))
    assert token["token"] == "s3cret-token"
    assert isinstance(token["tls"], ssl.SSLContext)
    named = connect_options(NatsSettings(tls=TlsSettings(server_name="nats.internal")))
    assert named["tls_hostname"] == "nats.internal"
    assert connect_options(NatsSettings()) == {}
    with pytest.raises(ValueError, match="user and password_env go together"):
        NatsSettings(user="bridge")
    with pytest.raises(ValueError, match="at most one of"):
        NatsSettings(token_env="A", creds_file="b.creds")
    with pytest.raises(ValueError, match="cert_file and key_file go together"):
        TlsSettings(cert_file="c.pem")


# -- the bridge, the worker and the CLI over the secured NATS ----------------------------


@pytest.fixture(scope="module")
async def secured_service(
    secure: TlsUsersNats, embedded_stack: EmbeddedStack, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[ServiceHarness]:
    settings = service_settings(embedded_stack, tmp_path_factory.mktemp("secure-notes"))
    settings.bus.default = "nats"
    nats = settings.bus.nats
    nats.url, nats.tls, nats.user, nats.password_env = (
        secure.url,
        mtls(secure),
        "bridge",
        PASSWORD_ENV,
    )
    from temporal_executor.tasks.temporal_connection import connect_temporal

    harness = ServiceHarness(settings, await connect_temporal(settings))
    await harness.start()
    yield harness
    await harness.stop()


async def test_bridge_and_worker_run_a_task_over_secured_nats(
    secured_service: ServiceHarness,
) -> None:
    task_id = new_task_id("tls")
    await secured_service.producers["nats"].request(task_id)
    events = await secured_service.watchers["nats"].wait_for_end(task_id)
    assert events[-1].type == EventType.EXECUTION_COMPLETED


@pytest.fixture
def secured_config(secured_service: ServiceHarness, tmp_path: Path) -> Path:
    return ServiceProcess.write_config(secured_service.settings, tmp_path / "secure.yaml")


@pytest.fixture
def wrong_password_config(secured_config: Path) -> Path:
    secured_config.write_text(secured_config.read_text().replace(PASSWORD_ENV, WRONG_ENV))
    return secured_config


async def test_cli_sends_and_follows_over_secured_nats(
    secured_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    task_id = new_task_id("cli-tls")
    argv = [
        "--config",
        str(secured_config),
        "send",
        "hi",
        "--task-id",
        task_id,
        "--provider",
        "scripted",
        "--model",
        "one-turn",
        "--transport",
        "nats",
        "--follow",
    ]
    assert await asyncio.wait_for(asyncio.to_thread(main, argv), TIMEOUT) == 0
    assert "agent.execution.completed" in capsys.readouterr().out


async def test_cli_says_why_nats_refused_it(
    wrong_password_config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["--config", str(wrong_password_config), "send", "hi", "--transport", "nats"]
    assert await asyncio.wait_for(asyncio.to_thread(main, argv), TIMEOUT) == 2
    err = capsys.readouterr().err
    assert "refused the connection" in err
    assert "Authorization Violation" in err
    assert "Traceback" not in err


# -- Kafka and Temporal: what the clients are given ---------------------------------------


async def test_kafka_ssl_and_sasl_reach_the_client(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    certs = make_certs(tmp_path, "kafka")
    monkeypatch.setenv("TE_TEST_KAFKA_USER", "svc")
    monkeypatch.setenv("TE_TEST_KAFKA_PASSWORD", "pw-123")
    for mechanism in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"):
        kafka = KafkaSettings(
            security_protocol="SASL_SSL",
            sasl_mechanism=mechanism,
            sasl_username_env="TE_TEST_KAFKA_USER",
            sasl_password_env="TE_TEST_KAFKA_PASSWORD",
            tls=TlsSettings(
                ca_file=str(certs.ca),
                cert_file=str(certs.client_cert),
                key_file=str(certs.client_key),
            ),
        )
        kwargs = KafkaTransport(BusSettings(kafka=kafka))._client_kwargs()
        assert kwargs["security_protocol"] == "SASL_SSL"
        assert kwargs["sasl_mechanism"] == mechanism
        assert (kwargs["sasl_plain_username"], kwargs["sasl_plain_password"]) == ("svc", "pw-123")
        context = kwargs["ssl_context"]
        assert [c["subject"] for c in context.get_ca_certs()] == [((("commonName", "kafka CA"),),)]
        assert context.verify_mode == ssl.CERT_REQUIRED
        producer = AIOKafkaProducer(**kwargs)  # aiokafka accepts them as they are
        assert producer.client._sasl_mechanism == mechanism
        await producer.stop()
    plain_sasl = KafkaSettings(
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="PLAIN",
        sasl_username_env="TE_TEST_KAFKA_USER",
        sasl_password_env="TE_UNSET_VAR",
    )
    with pytest.raises(TransportConfigError, match="TE_UNSET_VAR"):
        await KafkaTransport(BusSettings(kafka=plain_sasl)).start()
    with pytest.raises(ValueError, match="does not use TLS"):
        KafkaSettings(tls=TlsSettings(ca_file="ca.pem"))
    with pytest.raises(ValueError, match="go together"):
        KafkaSettings(security_protocol="SASL_SSL")
    with pytest.raises(ValueError, match="server_name"):
        KafkaSettings(security_protocol="SSL", tls=TlsSettings(server_name="k"))


def temporal_options(**temporal: Any) -> dict[str, Any]:
    return temporal_connect_options(Settings(temporal=TemporalSettings.model_validate(temporal)))


def test_temporal_mtls_and_api_key_reach_the_client(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    certs = make_certs(tmp_path, "temporal")
    tls = TlsSettings(
        ca_file=str(certs.ca),
        cert_file=str(certs.client_cert),
        key_file=str(certs.client_key),
        server_name="temporal.internal",
    )
    options = temporal_options(host_port="temporal.internal:7233", namespace="prod", tls=tls)
    assert options["namespace"] == "prod"
    assert options["api_key"] is None
    assert options["tls"] == TLSConfig(
        server_root_ca_cert=certs.ca.read_bytes(),
        domain="temporal.internal",
        client_cert=certs.client_cert.read_bytes(),
        client_private_key=certs.client_key.read_bytes(),
    )
    monkeypatch.setenv("TE_TEST_TEMPORAL_KEY", "tk-123")
    cloud = temporal_options(api_key_env="TE_TEST_TEMPORAL_KEY")
    assert (cloud["api_key"], cloud["tls"]) == ("tk-123", True)  # an API key only over TLS
    assert temporal_options(tls=True)["tls"] is True
    with pytest.raises(TemporalConfigError, match="TE_UNSET_VAR"):
        temporal_options(api_key_env="TE_UNSET_VAR")
    with pytest.raises(TemporalConfigError, match="cannot read"):
        temporal_options(tls=TlsSettings(ca_file=str(tmp_path / "x")))
