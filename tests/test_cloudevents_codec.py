"""The CloudEvents bindings, without a bus: both modes on Kafka and NATS, detection, errors."""

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone

import pytest

from temporal_executor.bus.codec import (
    EncodedMessage,
    decode_kafka,
    decode_nats,
    encode_kafka,
    encode_nats,
)
from temporal_executor.bus.errors import DeadLetter, DeadLetterReason
from temporal_executor.bus.transport import InboundMessage
from temporal_executor.schemas.cloudevent import CloudEvent
from temporal_executor.schemas.config import ContentMode

Encode = Callable[[CloudEvent, ContentMode], EncodedMessage]
Decode = Callable[[InboundMessage], CloudEvent]
BINDINGS = [
    pytest.param(encode_kafka, decode_kafka, id="kafka"),
    pytest.param(encode_nats, decode_nats, id="nats"),
]
MODES: list[ContentMode] = ["binary", "structured"]

EVENT = CloudEvent(
    id="agent-execution-t1/3",
    source="temporal-executor",
    type="agent.llm.responded",
    subject="t1",
    time=datetime(2025, 5, 6, 7, 8, 9, 123000, tzinfo=UTC),
    data={"task_id": "t1", "text": 'Grüße, "quoted" 100% ✓', "n": [1, 2.5, None]},
    extensions={
        "taskid": "t1",
        "sequence": "3",
        "traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    },
)


def received(message: EncodedMessage, source: str = "agent.events") -> InboundMessage:
    return InboundMessage(
        source=source, key=message.key, value=message.value, headers=tuple(message.headers)
    )


def message(
    value: bytes, headers: dict[str, str] | None = None, key: bytes | None = None
) -> InboundMessage:
    pairs = tuple((k, v.encode()) for k, v in (headers or {}).items())
    return InboundMessage(source="agent.requests", key=key, value=value, headers=pairs)


def without_partitionkey(event: CloudEvent) -> CloudEvent:
    extensions = {k: v for k, v in event.extensions.items() if k != "partitionkey"}
    return event.model_copy(update={"extensions": extensions})


def assert_dead(exc: pytest.ExceptionInfo[DeadLetter], *words: str) -> None:
    assert exc.value.reason == DeadLetterReason.INVALID_CLOUDEVENT
    for word in words:
        assert word in exc.value.detail


# -- round trips ----------------------------------------------------------------------


@pytest.mark.parametrize(("encode", "decode"), BINDINGS)
@pytest.mark.parametrize("mode", MODES)
def test_round_trip_keeps_every_attribute(
    encode: Encode, decode: Decode, mode: ContentMode
) -> None:
    decoded = decode(received(encode(EVENT, mode)))

    assert without_partitionkey(decoded) == EVENT


@pytest.mark.parametrize(("encode", "decode"), BINDINGS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("data", [None, "a JSON string", [1, 2], 7, {"nested": {"x": True}}])
def test_round_trip_of_any_json_data(
    encode: Encode, decode: Decode, mode: ContentMode, data: object
) -> None:
    event = EVENT.model_copy(update={"data": data})

    assert decode(received(encode(event, mode))).data == data


@pytest.mark.parametrize(("encode", "decode"), BINDINGS)
def test_time_is_written_as_rfc3339_utc_with_z(encode: Encode, decode: Decode) -> None:
    plus_two = timezone(timedelta(hours=2))
    event = EVENT.model_copy(update={"time": datetime(2025, 1, 1, 2, 0, tzinfo=plus_two)})

    binary = dict(encode(event, "binary").headers)
    structured = json.loads(encode(event, "structured").value)

    time_header = binary.get("ce_time", binary.get("ce-time"))
    assert time_header == b"2025-01-01T00:00:00Z"
    assert structured["time"] == "2025-01-01T00:00:00Z"
    assert decode(received(encode(event, "binary"))).time == datetime(2025, 1, 1, tzinfo=UTC)


# -- Kafka binding --------------------------------------------------------------------


def test_kafka_binary_uses_ce_headers_content_type_and_taskid_key() -> None:
    encoded = encode_kafka(EVENT, "binary")
    headers = dict(encoded.headers)

    assert encoded.key == b"t1"
    assert headers["content-type"] == b"application/json"
    assert headers["ce_id"] == b"agent-execution-t1/3"
    assert headers["ce_specversion"] == b"1.0"
    assert headers["ce_taskid"] == b"t1"
    assert "ce_datacontenttype" not in headers
    assert json.loads(encoded.value) == EVENT.data


def test_kafka_structured_is_the_json_event_in_the_value() -> None:
    encoded = encode_kafka(EVENT, "structured")
    document = json.loads(encoded.value)

    assert encoded.key == b"t1"
    assert encoded.headers == [("content-type", b"application/cloudevents+json")]
    assert document["id"] == EVENT.id
    assert document["taskid"] == "t1"
    assert document["data"] == EVENT.data


def test_kafka_key_becomes_partitionkey_but_is_not_published_again() -> None:
    decoded = decode_kafka(received(encode_kafka(EVENT, "binary")))
    assert decoded.extension("partitionkey") == "t1"

    again = encode_kafka(decoded, "binary")

    assert again.key == b"t1"
    assert "ce_partitionkey" not in dict(again.headers)
    assert "partitionkey" not in json.loads(encode_kafka(decoded, "structured").value)


def test_kafka_key_falls_back_to_partitionkey() -> None:
    event = EVENT.model_copy(update={"extensions": {"partitionkey": "p9"}})

    assert encode_kafka(event, "binary").key == b"p9"
    assert encode_kafka(EVENT.model_copy(update={"extensions": {}}), "binary").key is None


def test_kafka_hand_written_binary_message_decodes() -> None:
    headers = {
        "ce_specversion": "1.0",
        "ce_id": "r-1",
        "ce_source": "kcat",
        "ce_type": "agent.execution.requested",
        "ce_time": "2025-02-03T04:05:06.5+01:00",
        "ce_taskid": "t7",
        "Content-Type": "application/json; charset=utf-8",
    }

    event = decode_kafka(message(b'{"user_message": "hi"}', headers, key=b"t7"))

    assert event.id == "r-1"
    assert event.time == datetime(2025, 2, 3, 3, 5, 6, 500000, tzinfo=UTC)
    assert event.datacontenttype == "application/json; charset=utf-8"
    assert event.data == {"user_message": "hi"}
    assert event.extensions == {"taskid": "t7", "partitionkey": "t7"}


# -- NATS binding ---------------------------------------------------------------------


def test_nats_binary_puts_every_attribute_in_percent_encoded_ce_headers() -> None:
    event = EVENT.model_copy(update={"subject": 'a b"c%d€'})
    headers = dict(encode_nats(event, "binary").headers)

    assert headers["ce-datacontenttype"] == b"application/json"
    assert headers["ce-specversion"] == b"1.0"
    assert headers["ce-subject"] == b"a%20b%22c%25d%E2%82%AC"
    assert all(name.startswith("ce-") for name in headers)
    assert encode_nats(event, "binary").key is None


def test_nats_structured_has_the_cloudevents_content_type() -> None:
    encoded = encode_nats(EVENT, "structured")

    assert encoded.headers == [("Content-Type", b"application/cloudevents+json")]
    assert json.loads(encoded.value)["data"] == EVENT.data


def test_nats_header_values_are_unescaped_and_case_insensitive() -> None:
    headers = {
        "CE-SpecVersion": "1.0",
        "ce-id": '"quoted \\"id\\""',  # an RFC 7230 quoted-string, as older producers sent
        "ce-source": "%2Fsensors%2Fa",
        "ce-type": "agent.execution.requested",
        "ce-subject": "%e2%82%ac",  # lower-case hex is accepted
    }

    event = decode_nats(message(b"", headers))

    assert event.id == 'quoted "id"'
    assert event.source == "/sensors/a"
    assert event.subject == "€"
    assert event.data is None


def test_nats_rejects_percent_encoding_that_is_not_utf8() -> None:
    headers = {"ce-specversion": "1.0", "ce-id": "%C0%A0", "ce-source": "s", "ce-type": "t"}

    with pytest.raises(DeadLetter) as exc:
        decode_nats(message(b"{}", headers))

    assert_dead(exc, "UTF-8")


def test_nats_message_without_headers_is_structured() -> None:
    document = {"specversion": "1.0", "id": "1", "source": "nats-cli", "type": "t", "data": {}}

    event = decode_nats(message(json.dumps(document).encode()))

    assert event.id == "1"
    assert event.data == {}


# -- detection ------------------------------------------------------------------------

STRUCTURED = json.dumps(
    {"specversion": "1.0", "id": "s-1", "source": "s", "type": "t", "data": {"from": "value"}}
).encode()


@pytest.mark.parametrize("decode", [decode_kafka, decode_nats], ids=["kafka", "nats"])
def test_structured_content_type_wins_over_stray_ce_headers(decode: Decode) -> None:
    headers = {
        "content-type": "application/cloudevents+json; charset=UTF-8",
        "ce_id": "ignored",
        "ce-id": "ignored",
    }

    event = decode(message(STRUCTURED, headers))

    assert event.id == "s-1"
    assert event.data == {"from": "value"}


@pytest.mark.parametrize("decode", [decode_kafka, decode_nats], ids=["kafka", "nats"])
def test_message_without_ce_headers_is_read_as_structured(decode: Decode) -> None:
    assert decode(message(STRUCTURED, {"x-trace": "1"})).id == "s-1"


@pytest.mark.parametrize("decode", [decode_kafka, decode_nats], ids=["kafka", "nats"])
def test_structured_data_base64_with_json_type_is_decoded(decode: Decode) -> None:
    document = {"specversion": "1.0", "id": "1", "source": "s", "type": "t"}
    document["data_base64"] = "eyJhIjogMX0="  # {"a": 1}

    assert decode(message(json.dumps(document).encode())).data == {"a": 1}


# -- what is not a CloudEvent ---------------------------------------------------------


def binary_headers(decode: Decode, **attributes: str) -> dict[str, str]:
    prefix = "ce_" if decode is decode_kafka else "ce-"
    return {f"{prefix}{name}": value for name, value in attributes.items()}


VALID = {"specversion": "1.0", "id": "1", "source": "s", "type": "t"}


@pytest.mark.parametrize("decode", [decode_kafka, decode_nats], ids=["kafka", "nats"])
@pytest.mark.parametrize(
    ("value", "words"),
    [
        (b"not json", ("structured-mode payload is not JSON",)),
        (b"[1, 2]", ("JSON list, not an object",)),
        (b'{"id": "1", "source": "s", "type": "t"}', ("'specversion' is missing",)),
        (b'{"specversion": "1.0", "source": "s", "type": "t"}', ("'id' is missing",)),
        (b'{"specversion": "1.0", "id": "1", "type": "t"}', ("'source' is missing",)),
        (b'{"specversion": "1.0", "id": "1", "source": "s"}', ("'type' is missing",)),
        (b'{"specversion": "1.0", "id": "", "source": "s", "type": "t"}', ("'id'",)),
        (b'{"specversion": "0.3", "id": "1", "source": "s", "type": "t"}', ("'0.3'",)),
        (
            b'{"specversion": "1.0", "id": "1", "source": "s", "type": "t", "time": "noon"}',
            ("time",),
        ),
        (
            b'{"specversion": "1.0", "id": "1", "source": "s", "type": "t", "Bad_Name": "x"}',
            ("Bad_Name",),
        ),
        (
            b'{"specversion": "1.0", "id": "1", "source": "s", "type": "t", "ext": {"a": 1}}',
            ("'ext'",),
        ),
    ],
)
def test_unreadable_structured_messages_are_dead_letters(
    decode: Decode, value: bytes, words: tuple[str, ...]
) -> None:
    with pytest.raises(DeadLetter) as exc:
        decode(message(value))

    assert_dead(exc, *words)


@pytest.mark.parametrize("decode", [decode_kafka, decode_nats], ids=["kafka", "nats"])
def test_binary_data_must_be_json_when_the_type_says_so(decode: Decode) -> None:
    headers = binary_headers(decode, **VALID)

    with pytest.raises(DeadLetter) as exc:
        decode(message(b"{oops", headers))

    assert_dead(exc, "data is not JSON", "application/json")


@pytest.mark.parametrize("decode", [decode_kafka, decode_nats], ids=["kafka", "nats"])
def test_binary_required_attribute_missing_is_a_dead_letter(decode: Decode) -> None:
    headers = binary_headers(decode, specversion="1.0", id="1", type="t")

    with pytest.raises(DeadLetter) as exc:
        decode(message(b"{}", headers))

    assert_dead(exc, "'source' is missing")


@pytest.mark.parametrize("decode", [decode_kafka, decode_nats], ids=["kafka", "nats"])
def test_binary_naive_time_is_a_dead_letter(decode: Decode) -> None:
    headers = binary_headers(decode, **VALID, time="2025-01-01T00:00:00")

    with pytest.raises(DeadLetter) as exc:
        decode(message(b"{}", headers))

    assert_dead(exc, "time")


@pytest.mark.parametrize("decode", [decode_kafka, decode_nats], ids=["kafka", "nats"])
def test_other_structured_formats_are_dead_letters(decode: Decode) -> None:
    with pytest.raises(DeadLetter) as exc:
        decode(message(b"\x00avro", {"content-type": "application/cloudevents+avro"}))

    assert_dead(exc, "application/cloudevents+avro")


def test_non_json_data_is_kept_as_text_or_bytes() -> None:
    headers = {**binary_headers(decode_nats, **VALID), "ce-datacontenttype": "text/plain"}

    assert decode_nats(message("héllo".encode(), headers)).data == "héllo"
    assert decode_nats(message(b"\xff\xfe", headers)).data == b"\xff\xfe"


# -- RFC 3339 times and RFC 2046 media types (issue 12, point 6) -----------------------

INVALID_TIMES = [
    "2018-04-05T17:31Z",  # no seconds
    "2018-04-05T17:31:00+01",  # offset with hours only
    "2018-04-05T17:31:00",  # no offset
    "2018-04-05 17:31:00Z",  # space for T
    "2018-04-05T17:31:00.Z",  # empty fraction
    "2018-02-30T00:00:00Z",  # no such day
    "2018-04-05T17:31:00+24:00",
    "20180405T173100Z",  # ISO 8601 basic format
]
VALID_TIMES = [
    ("2018-04-05T17:31:00Z", datetime(2018, 4, 5, 17, 31, tzinfo=UTC)),
    ("2018-04-05t17:31:00z", datetime(2018, 4, 5, 17, 31, tzinfo=UTC)),
    ("2018-04-05T17:31:00.5+01:00", datetime(2018, 4, 5, 16, 31, 0, 500000, tzinfo=UTC)),
    ("2018-04-05T17:31:00.123456789-02:30", datetime(2018, 4, 5, 20, 1, 0, 123456, tzinfo=UTC)),
    ("2018-04-05T17:31:00-00:00", datetime(2018, 4, 5, 17, 31, tzinfo=UTC)),
    ("2016-12-31T23:59:60Z", datetime(2017, 1, 1, tzinfo=UTC)),  # a leap second
]
INVALID_MEDIA_TYPES = [
    "json",
    "application/",
    "application/json;",
    "application/json; charset",
    "application json",
    "application/json/x",
    "application/json ",
    "appl(ication)/json",
    "text/plain; a=b c",
]
VALID_MEDIA_TYPES = [
    "application/json",
    "application/json; charset=utf-8",
    "Application/JSON;charset=UTF-8",
    'application/json; profile="urn:x; y"',
    "application/vnd.example.order+json",
    "text/plain",
]


def envelope(decode: Decode, mode: ContentMode, **attributes: str) -> InboundMessage:
    """A hand-written request in `mode` with `attributes` on top of the required ones."""
    everything = {**VALID, **attributes}
    if mode == "structured":
        body = json.dumps({**everything, "data": {"a": 1}}).encode()
        return message(body, {"content-type": "application/cloudevents+json"})
    content_type = everything.pop("datacontenttype", None)
    headers = binary_headers(decode, **everything)
    if content_type is not None:
        name = "content-type" if decode is decode_kafka else "ce-datacontenttype"
        headers[name] = content_type
    return message(b'{"a": 1}', headers)


@pytest.mark.parametrize("decode", [decode_kafka, decode_nats], ids=["kafka", "nats"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("time", INVALID_TIMES)
def test_time_that_is_not_rfc3339_is_a_dead_letter(
    decode: Decode, mode: ContentMode, time: str
) -> None:
    with pytest.raises(DeadLetter) as exc:
        decode(envelope(decode, mode, time=time))

    assert_dead(exc, "RFC 3339", time)


@pytest.mark.parametrize("decode", [decode_kafka, decode_nats], ids=["kafka", "nats"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(("time", "instant"), VALID_TIMES)
def test_every_rfc3339_time_is_accepted(
    decode: Decode, mode: ContentMode, time: str, instant: datetime
) -> None:
    assert decode(envelope(decode, mode, time=time)).time == instant


def test_structured_time_must_be_a_string() -> None:
    body = json.dumps({**VALID, "time": 1522949460}).encode()

    with pytest.raises(DeadLetter) as exc:
        decode_nats(message(body))

    assert_dead(exc, "int, not an RFC 3339 string")


@pytest.mark.parametrize("decode", [decode_kafka, decode_nats], ids=["kafka", "nats"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("media", INVALID_MEDIA_TYPES)
def test_datacontenttype_that_is_not_a_media_type_is_a_dead_letter(
    decode: Decode, mode: ContentMode, media: str
) -> None:
    with pytest.raises(DeadLetter) as exc:
        decode(envelope(decode, mode, datacontenttype=media))

    assert_dead(exc, "RFC 2046 media type", repr(media))


@pytest.mark.parametrize("decode", [decode_kafka, decode_nats], ids=["kafka", "nats"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("media", VALID_MEDIA_TYPES)
def test_every_media_type_is_accepted(decode: Decode, mode: ContentMode, media: str) -> None:
    event = decode(envelope(decode, mode, datacontenttype=media))

    assert event.datacontenttype == media


def test_the_model_refuses_a_datacontenttype_that_is_not_a_media_type() -> None:
    with pytest.raises(ValueError, match="RFC 2046"):
        CloudEvent(id="1", source="s", type="t", datacontenttype="json")
