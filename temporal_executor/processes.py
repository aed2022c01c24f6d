"""Running the service's processes: signal handling and the shared stop event."""

import asyncio
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
