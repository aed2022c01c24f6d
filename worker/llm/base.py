"""The provider interface every LLM backend implements."""

from typing import Protocol

from temporal_executor.schemas.task import LlmCallInput, LlmCallResult
from temporal_executor.worker.llm.streaming import DeltaSink


class LlmProvider(Protocol):
    """Turns a provider-neutral conversation into one model reply.

    Implementations make exactly one attempt (SDK retries off) and raise an
    `LlmError` subclass on failure, so Temporal owns retries.

    With `deltas`, the call goes through the provider's streaming API and each fragment
    goes to `deltas` as it arrives; the result is the same as without.
    """

    async def complete(
        self, call: LlmCallInput, deltas: DeltaSink | None = None
    ) -> LlmCallResult: ...

    async def aclose(self) -> None: ...
