"""The CloudEvent 1.0 envelope as the service sees it, independent of any bus binding."""

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

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

    def extension(self, name: str) -> str | None:
        return self.extensions.get(name)
