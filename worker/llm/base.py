"""The provider interface every LLM backend implements."""

from typing import Protocol

from temporal_executor.schemas.task import LlmCallInput, LlmCallResult


class LlmProvider(Protocol):
    """Turns a provider-neutral conversation into one model reply.

    Implementations make exactly one attempt (SDK retries off) and raise an
    `LlmError` subclass on failure, so Temporal owns retries.
    """

    async def complete(self, call: LlmCallInput) -> LlmCallResult: ...

    async def aclose(self) -> None: ...
