"""LLM providers behind one interface (`LlmProvider`), created lazily by `ProviderRegistry`."""
