"""What both bus bindings share: attributes as wire strings, and validation back into a model.

The `cloudevents` library is lenient where the contract is not: its v1 event fills in a
missing `id` and `time`, and its JSON format falls back to a string when `data` is not
valid JSON. So the bindings build `WireEvent`s (plain attribute holders) and every decoded
message goes through `to_model`, the one place that decides what is a valid CloudEvent.
"""

import base64
import binascii
import json
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from urllib.parse import quote, unquote_to_bytes

from cloudevents.core.base import BaseCloudEvent, EventFactory
from cloudevents.core.formats.json import JSONFormat
from pydantic import ValidationError
from pydantic_core import to_json, to_jsonable_python

from temporal_executor.bus.errors import DeadLetter, DeadLetterReason
from temporal_executor.schemas.cloudevent import (
    JSON_MEDIA_TYPE,
    STRUCTURED_MEDIA_TYPE,
    CloudEvent,
    is_media_type,
)

SPECVERSION = "1.0"
REQUIRED = ("id", "source", "type", "specversion")
OPTIONAL = ("datacontenttype", "dataschema", "subject", "time")
_EXTENSION_NAME = re.compile(r"^[a-z0-9]+$")
# RFC 3339 section 5.6 `date-time`; `T` and `Z` may be lower case (its note), seconds are
# required, fractions of any length, the offset is `Z` or `±hh:mm`. Ranges are checked by
# `datetime`, except the leap second `:60`.
_RFC3339 = re.compile(
    r"(?P<date>[0-9]{4}-[0-9]{2}-[0-9]{2})[Tt]"
    r"(?P<hour>[0-9]{2}):(?P<minute>[0-9]{2}):(?P<second>[0-9]{2})(?:\.(?P<fraction>[0-9]+))?"
    r"(?:(?P<utc>[Zz])|(?P<sign>[+-])(?P<offset_hour>[0-9]{2}):(?P<offset_minute>[0-9]{2}))"
)
_JSON_MEDIA_TYPE = re.compile(r"^(application|text)/([a-z0-9.+-]+\+)?json$")
# Percent-encoding of header values (NATS binding 3.1.3.2, same rule as HTTP): space, `"`,
# `%` and everything outside printable ASCII is encoded; `quote` always encodes the rest.
_HEADER_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in '"%')


def invalid(detail: str) -> DeadLetter:
    return DeadLetter(DeadLetterReason.INVALID_CLOUDEVENT, detail)


def media_type(content_type: str | None) -> str | None:
    """`application/json; charset=utf-8` -> `application/json` (lower case)."""
    if content_type is None:
        return None
    return content_type.split(";", 1)[0].strip().lower()


def is_json_media_type(content_type: str | None) -> bool:
    """Absent means JSON (JSON event format); `*/json` and `*/*+json` are JSON too."""
    media = media_type(content_type)
    return media is None or bool(_JSON_MEDIA_TYPE.match(media))


def is_structured_media_type(content_type: str | None) -> bool:
    media = media_type(content_type)
    return media is not None and media.startswith("application/cloudevents")


def check_structured_format(content_type: str | None) -> None:
    media = media_type(content_type)
    if media is not None and media != STRUCTURED_MEDIA_TYPE:
        msg = f"structured mode {media!r} is not supported (only {STRUCTURED_MEDIA_TYPE})"
        raise invalid(msg)


def format_time(value: datetime) -> str:
    """RFC 3339 in UTC with `Z`; a naive datetime is taken to be UTC."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def percent_encode(value: str) -> str:
    return quote(value, safe=_HEADER_SAFE)


def percent_decode(value: str) -> str:
    """One round of percent-decoding, after unquoting an RFC 7230 quoted-string."""
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = re.sub(r"\\(.)", r"\1", value[1:-1])
    try:
        return unquote_to_bytes(value).decode("utf-8")
    except UnicodeDecodeError as exc:
        msg = f"header value {value!r} is not percent-encoded UTF-8"
        raise invalid(msg) from exc


class WireEvent(BaseCloudEvent):
    """Attributes and data exactly as given: no defaults, no validation (see `to_model`)."""

    def __init__(
        self, attributes: dict[str, Any], data: dict[str, Any] | str | bytes | None = None
    ) -> None:
        self._attributes = attributes
        self._data = data

    def get_id(self) -> str:
        return str(self._attributes.get("id"))

    def get_source(self) -> str:
        return str(self._attributes.get("source"))

    def get_type(self) -> str:
        return str(self._attributes.get("type"))

    def get_specversion(self) -> str:
        return str(self._attributes.get("specversion"))

    def get_datacontenttype(self) -> str | None:
        return self._optional("datacontenttype")

    def get_dataschema(self) -> str | None:
        return self._optional("dataschema")

    def get_subject(self) -> str | None:
        return self._optional("subject")

    def get_time(self) -> datetime | None:
        value = self._attributes.get("time")
        return value if isinstance(value, datetime) else None

    def get_extension(self, extension_name: str) -> Any:
        return self._attributes.get(extension_name)

    def get_data(self) -> dict[str, Any] | str | bytes | None:
        return self._data

    def get_attributes(self) -> dict[str, Any]:
        return self._attributes

    def _optional(self, name: str) -> str | None:
        value = self._attributes.get(name)
        return None if value is None else str(value)


class StrictJSONFormat(JSONFormat):
    """The JSON event format, minus the library's guessing.

    `read` rejects what is not a JSON object and leaves `time` and `data` to `to_model`;
    `read_data` hands over the raw bytes so `to_model` decodes them (or fails) by media type.
    """

    def read(self, event_factory: EventFactory | None, data: str | bytes) -> BaseCloudEvent:
        try:
            document = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            msg = f"structured-mode payload is not JSON: {exc}"
            raise invalid(msg) from exc
        if not isinstance(document, dict):
            msg = f"structured-mode payload is a JSON {type(document).__name__}, not an object"
            raise invalid(msg)
        attributes: dict[str, Any] = document
        payload: Any = attributes.pop("data", None)
        encoded = attributes.pop("data_base64", None)
        if encoded is not None:
            if payload is not None:
                msg = "structured-mode event has both `data` and `data_base64`"
                raise invalid(msg)
            payload = _base64(encoded)
        return (event_factory or WireEvent)(attributes, payload)

    def read_data(
        self, body: bytes, datacontenttype: str | None
    ) -> dict[str, Any] | str | bytes | None:
        return bytes(body) if body else None


def _base64(value: object) -> bytes:
    if not isinstance(value, str):
        msg = "`data_base64` is not a string"
        raise invalid(msg)
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error as exc:
        msg = f"`data_base64` is not base64: {exc}"
        raise invalid(msg) from exc


def wire_attributes(event: CloudEvent, *, drop: frozenset[str] = frozenset()) -> dict[str, str]:
    """Every attribute that has a value, as its canonical string."""
    attributes: dict[str, str] = {
        "id": event.id,
        "source": event.source,
        "type": event.type,
        "specversion": event.specversion,
    }
    optional = {
        "datacontenttype": event.datacontenttype,
        "dataschema": event.dataschema,
        "subject": event.subject,
        "time": format_time(event.time) if event.time is not None else None,
    }
    attributes.update({name: value for name, value in optional.items() if value is not None})
    for name, value in event.extensions.items():
        if name not in attributes:  # an extension never overrides a context attribute
            attributes[name] = value
    return {name: value for name, value in attributes.items() if name not in drop}


def data_bytes(event: CloudEvent) -> bytes:
    """The `data` of a binary-mode message: JSON text for JSON media types."""
    if event.data is None:
        return b""
    if isinstance(event.data, bytes):
        return event.data
    if isinstance(event.data, str) and not is_json_media_type(event.datacontenttype):
        return event.data.encode("utf-8")
    return to_json(event.data)


def structured_data(event: CloudEvent) -> Any:
    """The `data` for the JSON event format (bytes become `data_base64` in the library)."""
    if isinstance(event.data, bytes | str) or event.data is None:
        return event.data
    return to_jsonable_python(event.data)


def to_model(attributes: dict[str, Any], data: Any) -> CloudEvent:
    """Validate decoded attributes and data into our model, or raise `DeadLetter`."""
    for name in REQUIRED:
        value = attributes.get(name)
        if not isinstance(value, str) or not value:
            problem = "missing" if value is None else "not a non-empty string"
            msg = f"required attribute {name!r} is {problem}"
            raise invalid(msg)
    if attributes["specversion"] != SPECVERSION:
        msg = f"specversion {attributes['specversion']!r} is not supported (only {SPECVERSION})"
        raise invalid(msg)
    for name in ("datacontenttype", "dataschema", "subject"):
        value = attributes.get(name)
        if value is not None and (not isinstance(value, str) or not value):
            msg = f"attribute {name!r} is not a non-empty string"
            raise invalid(msg)
    content_type: str | None = attributes.get("datacontenttype")
    if content_type is not None and not is_media_type(content_type):
        msg = f"datacontenttype {content_type!r} is not an RFC 2046 media type"
        raise invalid(msg)
    try:
        return CloudEvent(
            id=attributes["id"],
            source=attributes["source"],
            type=attributes["type"],
            specversion=SPECVERSION,
            subject=attributes.get("subject"),
            time=_time(attributes.get("time")),
            datacontenttype=content_type,
            dataschema=attributes.get("dataschema"),
            data=_data(data, content_type),
            extensions=_extensions(attributes),
        )
    except ValidationError as exc:
        raise invalid(str(exc)) from exc


def _time(value: object) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        msg = f"time {value!r} is a {type(value).__name__}, not an RFC 3339 string"
        raise invalid(msg)
    try:
        return parse_rfc3339(value)
    except ValueError as exc:
        msg = f"time {value!r} is not an RFC 3339 date-time: {exc}"
        raise invalid(msg) from exc


def parse_rfc3339(text: str) -> datetime:
    """An RFC 3339 `date-time` in UTC; `ValueError` says what is wrong with anything else.

    Python keeps microseconds, so longer fractions are cut; a leap second (`23:59:60`) is
    the first instant of the next minute, as POSIX clocks count it.
    """
    match = _RFC3339.fullmatch(text)
    if match is None:
        msg = "expected YYYY-MM-DDThh:mm:ss[.fraction] then Z or +hh:mm / -hh:mm"
        raise ValueError(msg)
    offset = timedelta(0)
    if match["sign"] is not None:
        hours, minutes = int(match["offset_hour"]), int(match["offset_minute"])
        if hours > 23 or minutes > 59:
            msg = f"offset {match['offset_hour']}:{match['offset_minute']} is out of range"
            raise ValueError(msg)
        offset = timedelta(hours=hours, minutes=minutes) * (-1 if match["sign"] == "-" else 1)
    second = int(match["second"])
    leap = second == 60
    parsed = datetime.fromisoformat(match["date"]).replace(
        hour=int(match["hour"]),
        minute=int(match["minute"]),
        second=59 if leap else second,
        microsecond=int((match["fraction"] or "0")[:6].ljust(6, "0")),
        tzinfo=timezone(offset),
    )
    return (parsed + timedelta(seconds=1 if leap else 0)).astimezone(UTC)


def _data(data: Any, content_type: str | None) -> Any:
    if not isinstance(data, bytes):
        return data  # structured mode: already a JSON value, or None
    if is_json_media_type(content_type):
        try:
            return json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            msg = (
                f"data is not JSON although datacontenttype is {content_type or JSON_MEDIA_TYPE!r}"
            )
            raise invalid(msg) from exc
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data


def _extensions(attributes: dict[str, Any]) -> dict[str, str]:
    extensions: dict[str, str] = {}
    for name, value in attributes.items():
        if name in REQUIRED or name in OPTIONAL or value is None:
            continue
        if not _EXTENSION_NAME.match(name):
            msg = f"extension attribute name {name!r} is not lower-case letters and digits"
            raise invalid(msg)
        if isinstance(value, bool):  # before int: bool is an int
            extensions[name] = "true" if value else "false"
        elif isinstance(value, str | int):
            extensions[name] = str(value)
        else:
            msg = f"extension attribute {name!r} is a {type(value).__name__}, not a string"
            raise invalid(msg)
    return extensions
