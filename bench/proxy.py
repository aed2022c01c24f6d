"""A TCP proxy that delays each direction by a fixed time: Temporal "far away".

Run as its own process (``python -m bench.proxy --target HOST:PORT --delay-ms 10``), so its
work never competes with the event loop of what it measures; it prints the port it
listens on. Bytes keep their order; each chunk is forwarded `delay` after it was read, so
a request/response round trip through it takes two delays more than without it.
"""

import argparse
import asyncio
import contextlib
import sys


async def _pump(src: asyncio.StreamReader, dst: asyncio.StreamWriter, delay: float) -> None:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def forward() -> None:
        while True:
            due, data = await queue.get()
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if not data:
                with contextlib.suppress(OSError):
                    dst.write_eof()
                return
            dst.write(data)
            await dst.drain()

    forwarder = asyncio.create_task(forward())
    try:
        while True:
            data = await src.read(256 * 1024)
            queue.put_nowait((loop.time() + delay, data))
            if not data:
                break
        await forwarder
    except (ConnectionError, OSError):
        forwarder.cancel()
    finally:
        dst.close()


async def serve(target_host: str, target_port: int, delay: float, port: int = 0) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(target_host, target_port)
        except OSError:
            writer.close()
            return
        await asyncio.gather(
            _pump(reader, up_writer, delay), _pump(up_reader, writer, delay), return_exceptions=True
        )

    server = await asyncio.start_server(handle, "127.0.0.1", port)
    listening = server.sockets[0].getsockname()[1]
    print(listening, flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--target", required=True, help="HOST:PORT to forward to")
    parser.add_argument("--delay-ms", type=float, required=True, help="delay per direction")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    host, _, port = args.target.rpartition(":")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(host, int(port), args.delay_ms / 1000, args.port))
    sys.exit(0)


if __name__ == "__main__":
    main()
