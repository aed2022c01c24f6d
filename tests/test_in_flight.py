"""The in-flight bound the consumers share: waiting for room, and for room for a batch."""

import asyncio

from temporal_executor.bus._common import InFlight


async def test_waits_for_room_for_a_batch_while_deliveries_are_acked_one_by_one() -> None:
    in_flight = InFlight(10)
    in_flight.add(10)

    async def ack_one_by_one() -> None:
        for _ in range(4):
            await asyncio.sleep(0.01)
            in_flight.remove()

    acks = asyncio.create_task(ack_one_by_one())
    assert await in_flight.wait_for_room(seconds=5, at_least=3)
    assert in_flight.room == 3  # woke at the third ack, not the first
    await acks


async def test_a_batch_larger_than_the_limit_waits_for_all_of_it() -> None:
    in_flight = InFlight(2)
    in_flight.add(2)
    asyncio.get_running_loop().call_later(0.01, in_flight.remove, 2)
    assert await in_flight.wait_for_room(seconds=5, at_least=8)
    assert in_flight.room == 2


async def test_gives_up_after_the_timeout() -> None:
    in_flight = InFlight(4)
    in_flight.add(3)
    assert not await in_flight.wait_for_room(seconds=0.02, at_least=2)
    assert await in_flight.wait_for_room(seconds=0.02)  # one slot is free
