"""Whether a NATS server with JetStream answers, for the dev stack's readiness check."""

from nats.aio.client import Client as NatsClient


async def jetstream_ready(url: str) -> None:
    """Return once JetStream at `url` answers a real request; raise (at once) until then."""

    async def quiet(exc: Exception) -> None:  # nats-py logs every refused connect otherwise
        del exc

    nc = NatsClient()
    try:
        # max_reconnect_attempts=0 would mean "retry forever" inside connect() itself.
        await nc.connect(
            url,
            connect_timeout=1,
            allow_reconnect=False,
            max_reconnect_attempts=1,
            reconnect_time_wait=0,
            error_cb=quiet,
        )
        await nc.jetstream().account_info()
    finally:
        await nc.close()  # also after a failed connect, which leaves its socket open
