"""The configured LLM providers, each created on first use.

A provider's module, and with it its SDK, is imported only when a task first asks for
that provider: a worker that only runs the scripted demo never loads `anthropic`,
`openai` or `google.genai`, which saves start time and tens of MB per worker process.
"""

from temporal_executor.schemas.config import LlmSettings, ProviderSettings
from temporal_executor.worker.llm._provider_settings import check_model
from temporal_executor.worker.llm.base import LlmProvider
from temporal_executor.worker.llm.errors import ProviderNotConfigured


class ProviderRegistry:
    def __init__(self, llm_settings: LlmSettings) -> None:
        self._settings = llm_settings
        self._providers: dict[str, LlmProvider] = {}

    @property
    def created(self) -> list[str]:
        """Names of the providers created so far."""
        return list(self._providers)

    def settings_of(self, name: str) -> ProviderSettings:
        settings = self._settings.provider(name)
        if settings is None:
            # A config without providers still runs the default scripted demo.
            if name == "scripted":
                return ProviderSettings(name="scripted", kind="scripted")
            configured = ", ".join(p.name for p in self._settings.providers) or "none"
            msg = f"LLM provider {name!r} is not configured (llm.providers: {configured})"
            raise ProviderNotConfigured(msg)
        return settings

    def get(self, name: str) -> LlmProvider:
        """The provider named `name` in config, created (and its SDK imported) on first use."""
        provider = self._providers.get(name)
        if provider is None:
            provider = _create(self.settings_of(name))
            self._providers[name] = provider
        return provider

    def check_model(self, provider: str, model: str) -> None:
        """Fail early (`ProviderNotConfigured`, `ModelNotFound`) without creating a client.

        Providers check the allowlist again on every call.
        """
        check_model(self.settings_of(provider), model)

    async def aclose(self) -> None:
        """Close every client created so far; a later `get` creates a new one."""
        providers, self._providers = self._providers, {}
        for provider in providers.values():
            await provider.aclose()


def _create(settings: ProviderSettings) -> LlmProvider:
    # Imports inside the branches on purpose: they are what keeps the SDKs unloaded.
    if settings.kind in ("anthropic", "vertex_anthropic"):
        from temporal_executor.worker.llm.anthropic_provider import AnthropicProvider

        return AnthropicProvider(settings)
    if settings.kind in ("openai", "azure_openai"):
        from temporal_executor.worker.llm.openai_provider import OpenAIProvider

        return OpenAIProvider(settings)
    if settings.kind == "vertex_gemini":
        from temporal_executor.worker.llm.gemini_provider import GeminiProvider

        return GeminiProvider(settings)
    from temporal_executor.worker.llm.scripted_provider import ScriptedProvider

    return ScriptedProvider(settings)
