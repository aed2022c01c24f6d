"""Readiness checks the running parts of a process register, and what /readyz reports.

The bridge registers Temporal and each bus it consumes; the worker Temporal and each bus
it publishes on. A check returns None when its dependency answers, else what is wrong.
"""

import asyncio
import contextlib
import itertools
from collections.abc import Awaitable, Callable, Iterator

Check = Callable[[], Awaitable[str | None]]


class HealthChecks:
    def __init__(self) -> None:
        self._checks: dict[int, tuple[str, Check]] = {}
        self._ids = itertools.count()
        self.stopping = False

    @contextlib.contextmanager
    def registered(self, name: str, check: Check) -> Iterator[None]:
        """`check` counts for readiness while the block runs."""
        key = next(self._ids)
        self._checks[key] = (name, check)
        try:
            yield
        finally:
            del self._checks[key]

    async def problems(self, seconds: float) -> list[str]:
        """What keeps the process from being ready; empty when it is."""
        if self.stopping:
            return ["shutting down"]
        if not self._checks:
            return ["starting: not connected yet"]
        checks = list(self._checks.values())
        results = await asyncio.gather(
            *(_run(check, seconds) for _, check in checks), return_exceptions=True
        )
        found: list[str] = []
        for (name, _), result in zip(checks, results, strict=True):
            if isinstance(result, BaseException):
                found.append(f"{name}: {type(result).__name__}: {result}")
            elif result is not None:
                found.append(f"{name}: {result}")
        return found


async def _run(check: Check, seconds: float) -> str | None:
    try:
        async with asyncio.timeout(seconds):
            return await check()
    except TimeoutError:
        return f"no answer within {seconds:g} s"


# One per process: the bridge and the worker of `temporal-executor dev` share it.
HEALTH = HealthChecks()
