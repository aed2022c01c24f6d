"""NATS JetStream: the transport, its pull-consumer loops, watches and a readiness probe
(nats-py).

nats-py imports aiohttp on load, for its WebSocket transport only (ws:// URLs), ~9 MB in
every process that never uses it. The service connects over nats:// and tls:// (a ws://
URL is refused, `transport.connect_options`), so nats is loaded here with aiohttp hidden
from it, unless something in the process loaded aiohttp already.
"""

import sys

if "aiohttp" not in sys.modules:
    sys.modules["aiohttp"] = None  # type: ignore[assignment]  # import aiohttp: ImportError
    try:
        import nats.aio.transport  # noqa: F401
    finally:
        del sys.modules["aiohttp"]
