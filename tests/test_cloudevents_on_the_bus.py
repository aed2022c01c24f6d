"""CloudEvents strictness on the real buses (issue 12, point 6): a request whose `time` is
not RFC 3339 or whose `datacontenttype` is not an RFC 2046 media type is dead-lettered
`invalid-cloudevent` and starts nothing, on Kafka and NATS, in binary and structured mode;
a request with any valid form of those attributes runs."""

import json

import pytest

from temporal_executor.bus.codec import EncodedMessage, encode_kafka, encode_nats
from temporal_executor.schemas.cloudevent import TASKID_EXTENSION, CloudEvent
from temporal_executor.schemas.config import ContentMode
from temporal_executor.schemas.event_types import EventType, workflow_id_for
from temporal_executor.schemas.task import BusName
from tests.harness import BUSES, ServiceHarness, new_task_id

pytestmark = [
    pytest.mark.parametrize("bus", BUSES),
    pytest.mark.parametrize("mode", ["binary", "structured"]),
]


def request(task_id: str, bus: BusName, mode: ContentMode, **attributes: str) -> EncodedMessage:
    """A valid request encoded by our codec, then `attributes` written over it as raw text."""
    event = CloudEvent(
        id=task_id,
        source="tests",
        type=EventType.EXECUTION_REQUESTED,
        data={
            "task_id": task_id,
            "user_message": "hello",
            "model_config": {"provider": "scripted", "model": "one-turn"},
        },
        extensions={TASKID_EXTENSION: task_id},
    )
    encoded = (encode_kafka if bus == "kafka" else encode_nats)(event, mode)
    if mode == "structured":
        document = {**json.loads(encoded.value), **attributes}
        return EncodedMessage(encoded.key, json.dumps(document).encode(), encoded.headers)
    headers = dict(encoded.headers)
    for name, value in attributes.items():
        if bus == "kafka":
            headers["content-type" if name == "datacontenttype" else f"ce_{name}"] = value.encode()
        else:
            headers[f"ce-{name}"] = value.encode()
    return EncodedMessage(encoded.key, encoded.value, list(headers.items()))


async def publish(
    service: ServiceHarness, bus: BusName, task_id: str, message: EncodedMessage
) -> None:
    transport = service.producers[bus].transport
    destination = transport.requests_destination(task_id)
    await transport.publish_raw(destination, message.key, message.value, message.headers)


@pytest.mark.parametrize(
    ("attribute", "value"),
    [
        ("time", "2018-04-05T17:31Z"),
        ("time", "2018-04-05T17:31:00+01"),
        ("datacontenttype", "json"),
        ("datacontenttype", "application/json;"),
    ],
)
async def test_invalid_envelope_is_dead_lettered_and_starts_nothing(
    service: ServiceHarness, bus: BusName, mode: ContentMode, attribute: str, value: str
) -> None:
    task_id = new_task_id("strict")
    await publish(service, bus, task_id, request(task_id, bus, mode, **{attribute: value}))

    dead = await service.watchers[bus].wait_for_dead_letter(task_id.encode(), field="id")

    assert dead.header("dlq_reason") == b"invalid-cloudevent"
    error = (dead.header("dlq_error") or b"").decode()
    assert attribute in error
    assert value in error
    # A later valid request on the same partition / subject is handled: the bad one did
    # not block it, and it alone started the workflow.
    good = new_task_id("strict-ok")
    await service.producers[bus].request(good)
    await service.watchers[bus].wait_for_end(good)
    runs = service.client.list_workflows(f'WorkflowId = "{workflow_id_for(task_id)}"')
    assert [run async for run in runs] == []
    assert service.watchers[bus].events(task_id) == []


async def test_every_valid_form_is_accepted(
    service: ServiceHarness, bus: BusName, mode: ContentMode
) -> None:
    task_id = new_task_id("strict-valid")
    attributes = {
        "time": "2018-04-05t17:31:00.123456789+01:00",
        "datacontenttype": 'application/json; charset="utf-8"',
    }
    await publish(service, bus, task_id, request(task_id, bus, mode, **attributes))

    events = await service.watchers[bus].wait_for_end(task_id)

    assert events[-1].type == EventType.EXECUTION_COMPLETED
