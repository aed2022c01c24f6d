"""LLM providers behind one interface (`LlmProvider`), created lazily by `ProviderRegistry`.

Kinds: `anthropic`, `vertex_anthropic` (`anthropic_provider`), `openai`, `azure_openai`
(`openai_provider`), `vertex_gemini` (`gemini_provider`) and `scripted`. Each makes one
attempt per call (SDK retries off) and maps its SDK's failures to the one error model of
`errors`: retryable (`RateLimited`, `ProviderUnavailable`, with the wait a 429 asks for)
or not (authentication, unknown model, context too long, invalid request, provider not
configured), so Temporal owns retries and a non-retryable error fails the task at once.

Fallbacks (`llm.providers[].fallbacks`) are the workflow's business, not a provider's:
`plan_task` puts the selected provider's fallback chain in the task's plan, and the
workflow's `_call_llm`, when the LLM activity still fails with a retryable error (or times
out) after all its attempts, makes the same call with the next selection of the chain, a
new activity with attempts of its own. Kept in the workflow, each provider's attempts and
the switch are visible in its history, are replay-safe, and need no state in the worker;
`agent.llm.responded` names the provider and model that answered.
"""
