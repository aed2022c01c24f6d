"""Running the service's processes: signal handling and the shared stop event."""

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable


def stop_on_signals(stop: asyncio.Event) -> None:
    """SIGTERM and SIGINT set `stop`: stop fetching, finish in-flight work, then exit."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


async def run_until_signal(main: Callable[[asyncio.Event], Awaitable[None]]) -> None:
    stop = asyncio.Event()
    stop_on_signals(stop)
    await main(stop)


INTERRUPTED = 130  # the shell's status for a command ended by Ctrl-C (128 + SIGINT)


async def until_interrupted(work: Awaitable[int]) -> int:
    """`work`'s exit status, or INTERRUPTED when Ctrl-C comes first.

    Ctrl-C is a signal handler here rather than asyncio.run's cancellation: a library that
    swallows a CancelledError while closing its connections would turn an interrupted
    command into a quiet exit 0."""
    interrupted = asyncio.Event()
    try:
        asyncio.get_running_loop().add_signal_handler(signal.SIGINT, interrupted.set)
    except RuntimeError:  # not the main thread, where signals never arrive
        return await work
    working = asyncio.ensure_future(work)
    waiting = asyncio.create_task(interrupted.wait())
    await asyncio.wait([working, waiting], return_when=asyncio.FIRST_COMPLETED)
    waiting.cancel()
    if working.done():
        return working.result()
    working.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await working
    return INTERRUPTED
