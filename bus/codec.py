"""CloudEvents on the wire: our `CloudEvent` to and from Kafka and NATS messages.

Both bindings read binary and structured content mode, detected per message, and write
the mode the caller asks for (contract, "Envelope"):

- Kafka, through the `cloudevents` library's Kafka binding: binary mode has `ce_<name>`
  headers and `content-type` for `datacontenttype`; structured mode is the JSON event in
  the value with `content-type: application/cloudevents+json`. The message key is the
  `taskid` extension (else `partitionkey`). The binding turns a key into a `partitionkey`
  extension when reading; when writing, `partitionkey` is the key and nothing else, so a
  decoded event published again carries no stray `ce_partitionkey` header.
- NATS (no library binding; NATS binding 1.0.3): binary mode has every attribute in a
  percent-encoded `ce-<name>` header, `ce-datacontenttype` included; structured mode is
  the JSON event as payload with `Content-Type: application/cloudevents+json`.

A message with a structured `content-type`, or with no `ce_`/`ce-` header at all (so a
message without headers), is read as structured; anything else as binary. Whatever cannot
be read raises `DeadLetter` with reason `invalid-cloudevent` and a detail that says why.
"""

from dataclasses import dataclass
from typing import Any

from cloudevents.core.bindings import kafka

from temporal_executor.bus._wire import (
    StrictJSONFormat,
    WireEvent,
    check_structured_format,
    data_bytes,
    invalid,
    is_structured_media_type,
    percent_decode,
    percent_encode,
    structured_data,
    to_model,
    wire_attributes,
)
from temporal_executor.bus.errors import DeadLetter
from temporal_executor.bus.transport import InboundMessage
from temporal_executor.schemas.cloudevent import (
    PARTITIONKEY_EXTENSION,
    STRUCTURED_MEDIA_TYPE,
    TASKID_EXTENSION,
    CloudEvent,
)
from temporal_executor.schemas.config import ContentMode

KAFKA_PREFIX = "ce_"
NATS_PREFIX = "ce-"
CONTENT_TYPE = "content-type"
NATS_CONTENT_TYPE = "Content-Type"

_FORMAT = StrictJSONFormat()
# What the library and the standard library raise on malformed input, beyond our DeadLetter.
_DECODE_ERRORS = (ValueError, TypeError, KeyError, UnicodeDecodeError, OverflowError)


@dataclass(frozen=True)
class EncodedMessage:
    """A message ready for the bus. NATS has no key, so its `key` is always None."""

    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]


def encode_kafka(event: CloudEvent, mode: ContentMode) -> EncodedMessage:
    key_text = event.extension(TASKID_EXTENSION) or event.extension(PARTITIONKEY_EXTENSION)
    key = key_text.encode("utf-8") if key_text is not None else None
    attributes: dict[str, Any] = wire_attributes(event, drop=frozenset({PARTITIONKEY_EXTENSION}))
    if mode == "binary":
        message = kafka.to_binary(
            WireEvent(attributes, data_bytes(event)), _FORMAT, key_mapper=lambda _: key
        )
    else:
        message = kafka.to_structured(
            WireEvent(attributes, structured_data(event)), _FORMAT, key_mapper=lambda _: key
        )
    return EncodedMessage(key=key, value=message.value, headers=list(message.headers.items()))


def decode_kafka(message: InboundMessage) -> CloudEvent:
    headers = _lowered(message.headers)
    content_type = _text(headers.get(CONTENT_TYPE))
    structured = is_structured_media_type(content_type) or not _has_prefix(headers, KAFKA_PREFIX)
    try:
        if not structured:
            return to_model(_kafka_binary_attributes(headers, message.key), message.value or None)
        check_structured_format(content_type)
        wire = kafka.KafkaMessage(headers=headers, key=message.key, value=message.value)
        event = kafka.from_structured(wire, _FORMAT, WireEvent)
        return to_model(event.get_attributes(), event.get_data())
    except DeadLetter:
        raise
    except _DECODE_ERRORS as exc:
        raise _unreadable(structured, exc) from exc


def _kafka_binary_attributes(headers: dict[str, bytes], key: bytes | None) -> dict[str, Any]:
    """The Kafka binding's binary mode, read as the text it is.

    The library's `from_binary` parses `ce_time` leniently (`2018-04-05T17:31Z` passes), so
    the attributes are read here and `to_model` alone judges them.
    """
    attributes: dict[str, Any] = {
        name[len(KAFKA_PREFIX) :]: value.decode("utf-8")
        for name, value in headers.items()
        if name.startswith(KAFKA_PREFIX)
    }
    content_type = headers.get(CONTENT_TYPE)
    if content_type is not None:
        attributes["datacontenttype"] = content_type.decode("utf-8")
    if key is not None:
        attributes[PARTITIONKEY_EXTENSION] = key.decode("utf-8")
    return attributes


def encode_nats(event: CloudEvent, mode: ContentMode) -> EncodedMessage:
    attributes = wire_attributes(event)
    if mode == "binary":
        headers = [
            (f"{NATS_PREFIX}{name}", percent_encode(value).encode("ascii"))
            for name, value in attributes.items()
        ]
        return EncodedMessage(key=None, value=data_bytes(event), headers=headers)
    value = _FORMAT.write(WireEvent(dict(attributes), structured_data(event)))
    return EncodedMessage(
        key=None,
        value=value,
        headers=[(NATS_CONTENT_TYPE, STRUCTURED_MEDIA_TYPE.encode("ascii"))],
    )


def decode_nats(message: InboundMessage) -> CloudEvent:
    headers = _lowered(message.headers)
    content_type = _text(headers.get(CONTENT_TYPE))
    structured = is_structured_media_type(content_type) or not _has_prefix(headers, NATS_PREFIX)
    try:
        if structured:
            check_structured_format(content_type)
            event = _FORMAT.read(WireEvent, message.value)
            return to_model(event.get_attributes(), event.get_data())
        attributes: dict[str, Any] = {
            name[len(NATS_PREFIX) :]: percent_decode(value.decode("utf-8"))
            for name, value in headers.items()
            if name.startswith(NATS_PREFIX)
        }
        if "datacontenttype" not in attributes and content_type is not None:
            # Not the binding's way, but a plain `Content-Type` says the same thing.
            attributes["datacontenttype"] = content_type
        return to_model(attributes, message.value or None)
    except DeadLetter:
        raise
    except _DECODE_ERRORS as exc:
        raise _unreadable(structured, exc) from exc


def _lowered(headers: tuple[tuple[str, bytes], ...]) -> dict[str, bytes]:
    """Header names are case-insensitive in both bindings; the last of duplicates wins."""
    return {name.lower(): value for name, value in headers}


def _has_prefix(headers: dict[str, bytes], prefix: str) -> bool:
    return any(name.startswith(prefix) for name in headers)


def _text(value: bytes | None) -> str | None:
    return value.decode("utf-8", errors="replace") if value is not None else None


def _unreadable(structured: bool, exc: Exception) -> DeadLetter:
    mode = "structured" if structured else "binary"
    return invalid(f"cannot read {mode}-mode CloudEvent: {type(exc).__name__}: {exc}")
