"""The CloudEvent 1.0 envelope as the service sees it, independent of any bus binding."""

import re
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

# Extension attributes the service sets on everything it publishes (contract, "Envelope").
TASKID_EXTENSION = "taskid"
SEQUENCE_EXTENSION = "sequence"
TRACEPARENT_EXTENSION = "traceparent"
TRACESTATE_EXTENSION = "tracestate"
REPLYTO_EXTENSION = "replyto"
# An approval reply's signature, a compact JWS (contract v1.1, "Verified approvals").
APPROVALSIG_EXTENSION = "approvalsig"
PARTITIONKEY_EXTENSION = "partitionkey"

JSON_MEDIA_TYPE = "application/json"
STRUCTURED_MEDIA_TYPE = "application/cloudevents+json"

# RFC 2045 section 5.1 (the syntax RFC 2046 media types are written in): `type/subtype`
# then `; attribute=value` parameters, a value being a token or a quoted-string. A token is
# printable US-ASCII minus the tspecials. Whitespace is allowed around the `;` only.
_TOKEN = r"[!#$%&'*+\-.0-9A-Z^_`a-z{|}~]+"
_QUOTED_STRING = r'"(?:[\x00-\x0c\x0e-\x21\x23-\x5b\x5d-\x7f]|\\[\x00-\x7f])*"'
_MEDIA_TYPE = re.compile(
    rf"{_TOKEN}/{_TOKEN}(?:[ \t]*;[ \t]*{_TOKEN}=(?:{_TOKEN}|{_QUOTED_STRING}))*", re.ASCII
)


def is_media_type(value: str) -> bool:
    """Whether `value` is an RFC 2046 media type, as `datacontenttype` must be."""
    return _MEDIA_TYPE.fullmatch(value) is not None


class CloudEvent(BaseModel):
    """A decoded CloudEvent: context attributes, extensions, and JSON data."""

    model_config = ConfigDict(frozen=True)

    id: str = Field(min_length=1)
    source: str = Field(min_length=1)
    type: str = Field(min_length=1)
    specversion: str = "1.0"
    subject: str | None = None
    time: datetime | None = None
    datacontenttype: str | None = JSON_MEDIA_TYPE
    dataschema: str | None = None
    data: Any = None
    extensions: dict[str, str] = Field(default_factory=dict)

    @field_validator("datacontenttype")
    @classmethod
    def _media_type(cls, value: str | None) -> str | None:
        if value is not None and not is_media_type(value):
            msg = f"datacontenttype {value!r} is not an RFC 2046 media type"
            raise ValueError(msg)
        return value

    def extension(self, name: str) -> str | None:
        return self.extensions.get(name)
