"""OpenAI Chat Completions (plain, or streamed with `stream=True`) through the official SDK,
for OpenAI and Azure OpenAI.

Imported only when config names an `openai` or `azure_openai` provider (see `registry`).
On Azure the request's model is the deployment name: the SDK puts it in the URL path.
"""

import json
from typing import Any

import openai
from openai import AsyncStream
from openai.lib.azure import AsyncAzureADTokenProvider
from openai.types import CompletionUsage
from openai.types.chat import (
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionFunctionToolParam,
    ChatCompletionMessageFunctionToolCallParam,
    ChatCompletionMessageParam,
)

from temporal_executor.schemas.config import ProviderSettings
from temporal_executor.schemas.conversation import (
    RAW_ARGUMENTS_KEY,
    AssistantMessage,
    ChatMessage,
    ToolCall,
    Usage,
)
from temporal_executor.schemas.task import LlmCallInput, LlmCallResult
from temporal_executor.worker.llm._http_errors import (
    error_for_status,
    transport_errors,
    unreachable,
)
from temporal_executor.worker.llm._provider_settings import (
    api_key_from_env,
    check_model,
    optional_max_tokens,
    provider_label,
    secret_from_env,
)
from temporal_executor.worker.llm.errors import (
    InvalidLlmRequest,
    LlmError,
    ProviderNotConfigured,
    ProviderUnavailable,
)
from temporal_executor.worker.llm.streaming import DeltaSink

# The HTTP libraries this SDK runs on (its async client's).
TRANSPORT_ERRORS = transport_errors("httpx2")


class OpenAIProvider:
    def __init__(self, settings: ProviderSettings) -> None:
        self._settings = settings
        self._label = provider_label(settings)
        self._client, self._credential = _make_client(settings)

    @property
    def client(self) -> openai.AsyncOpenAI:
        return self._client

    async def complete(self, call: LlmCallInput, deltas: DeltaSink | None = None) -> LlmCallResult:
        selection = call.selection
        check_model(self._settings, selection.model)
        max_tokens = optional_max_tokens(self._settings, selection)
        tools: list[ChatCompletionFunctionToolParam] = [
            {
                "type": "function",
                "function": {
                    "name": spec.name,
                    "description": spec.description,
                    "parameters": spec.parameters,
                },
            }
            for spec in call.tools
        ]
        params: dict[str, Any] = {
            "model": selection.model,
            "messages": to_openai_messages(call.system_prompt, call.messages),
            "tools": tools or openai.omit,
            "temperature": selection.temperature
            if selection.temperature is not None
            else openai.omit,
            # `max_tokens` is deprecated and refused by reasoning models.
            "max_completion_tokens": max_tokens if max_tokens is not None else openai.omit,
        }
        try:
            if deltas is None:
                reply: ChatCompletion = await self._client.chat.completions.create(**params)
                message, usage = self._assistant_message(reply), _usage(reply.usage)
            else:
                message, usage = await self._streamed(params, deltas)
        except openai.APIError as exc:
            # Not chained: the SDK's error holds the whole response, credentials it
            # quotes included; the mapped one says what matters, redacted.
            raise map_openai_error(self._label, exc) from None
        except TRANSPORT_ERRORS as exc:
            # The connection broke while the reply streamed (the SDK passes that on as is).
            raise unreachable(self._label, exc) from None
        return LlmCallResult(
            message=message, usage=usage, provider=self._settings.name, model=selection.model
        )

    async def _streamed(
        self, params: dict[str, Any], deltas: DeltaSink
    ) -> tuple[AssistantMessage, Usage]:
        """The reply as chunks (server-sent events), each fragment to `deltas` as it comes.

        A tool call's first chunk has its id and name, later ones pieces of its arguments;
        with `include_usage` the last chunk has no choices and the usage.
        """
        stream: AsyncStream[ChatCompletionChunk] = await self._client.chat.completions.create(
            **params, stream=True, stream_options={"include_usage": True}
        )
        texts: list[str] = []
        calls: dict[int, list[str]] = {}  # index -> [id, name, arguments so far]
        usage: CompletionUsage | None = None
        answered = False
        async with stream:
            async for chunk in stream:
                usage = chunk.usage or usage
                for choice in chunk.choices:
                    # Azure sends a first chunk without choices (its content filter results).
                    answered = answered or choice.index == 0
                    if choice.index != 0:
                        continue
                    if choice.delta.content:
                        texts.append(choice.delta.content)
                        deltas.text(choice.delta.content)
                    for piece in choice.delta.tool_calls or []:
                        call = calls.setdefault(piece.index, ["", "", ""])
                        function = piece.function
                        call[0] = piece.id or call[0]
                        call[1] = (function.name if function else None) or call[1]
                        fragment = (function.arguments if function else None) or ""
                        call[2] += fragment
                        deltas.tool_call(call[0], call[1], fragment)
        if not answered:
            msg = f"{self._label}: the reply has no choices"
            raise ProviderUnavailable(msg)
        tool_calls = [
            ToolCall(id=call_id, name=name, arguments=parse_arguments(arguments))
            for call_id, name, arguments in (calls[index] for index in sorted(calls))
        ]
        return AssistantMessage(content="".join(texts), tool_calls=tool_calls), _usage(usage)

    async def aclose(self) -> None:
        await self._client.close()
        if self._credential is not None:
            await self._credential.close()

    def _assistant_message(self, reply: ChatCompletion) -> AssistantMessage:
        if not reply.choices:
            msg = f"{self._label}: the reply has no choices"
            raise ProviderUnavailable(msg)
        message = reply.choices[0].message
        calls = [
            ToolCall(
                id=call.id,
                name=call.function.name,
                arguments=parse_arguments(call.function.arguments),
            )
            for call in message.tool_calls or []
            # Only function tools are offered, so other kinds (custom tools) cannot be answered.
            if call.type == "function"
        ]
        return AssistantMessage(content=message.content or "", tool_calls=calls)


def _make_client(settings: ProviderSettings) -> tuple[openai.AsyncOpenAI, Any]:
    """The SDK client, and the Azure credential to close with it (None when there is none)."""
    if settings.kind == "azure_openai":
        # Checked here: the SDK would fall back to AZURE_OPENAI_ENDPOINT / OPENAI_API_VERSION.
        endpoint, api_version = settings.base_url, settings.api_version
        if endpoint is None or api_version is None:
            msg = f"{provider_label(settings)}: set base_url and api_version in llm.providers[]"
            raise ProviderNotConfigured(msg)
        auth, credential = _azure_auth(settings)
        azure = openai.AsyncAzureOpenAI(
            **auth,
            azure_endpoint=endpoint,
            api_version=api_version,
            max_retries=0,
        )
        return azure, credential
    client = openai.AsyncOpenAI(
        api_key=api_key_from_env(settings, "OPENAI_API_KEY"),
        base_url=settings.base_url,
        # Temporal owns retries, so every attempt is visible in the workflow's history.
        max_retries=0,
    )
    return client, None


# The scope of Azure OpenAI (Azure AI services) for Microsoft Entra ID tokens.
AZURE_COGNITIVE_SERVICES_SCOPE = "https://cognitiveservices.azure.com/.default"


def _azure_auth(settings: ProviderSettings) -> tuple[dict[str, Any], Any]:
    """`AsyncAzureOpenAI`'s credential argument: a key, or a Microsoft Entra ID token.

    Always passed explicitly, so the SDK never picks up AZURE_OPENAI_AD_TOKEN or
    AZURE_OPENAI_API_KEY behind config's back.
    """
    if settings.azure_ad_token_provider is not None:
        credential, provider = _default_azure_credential(settings)
        return {"azure_ad_token_provider": provider}, credential
    if settings.azure_ad_token_env is not None:
        # Read once: a token expires (about an hour), so this is for tests and short jobs.
        token = secret_from_env(settings, settings.azure_ad_token_env, "azure_ad_token_env")
        return {"azure_ad_token": token}, None
    return {"api_key": api_key_from_env(settings, "AZURE_OPENAI_API_KEY")}, None


def _default_azure_credential(settings: ProviderSettings) -> tuple[Any, AsyncAzureADTokenProvider]:
    """azure-identity's `DefaultAzureCredential` (managed identity, workload identity, Azure
    CLI, environment, …), from the optional package, imported only here."""
    try:
        from azure.identity.aio import (  # type: ignore[import-not-found, unused-ignore]
            DefaultAzureCredential,
            get_bearer_token_provider,
        )
    except ImportError as exc:
        msg = (
            f"{provider_label(settings)}: azure_ad_token_provider needs the azure-identity "
            "package (pip install azure-identity)"
        )
        raise ProviderNotConfigured(msg) from exc
    credential = DefaultAzureCredential()
    provider: AsyncAzureADTokenProvider = get_bearer_token_provider(
        credential, AZURE_COGNITIVE_SERVICES_SCOPE
    )
    return credential, provider


def to_openai_messages(
    system_prompt: str | None, messages: list[ChatMessage]
) -> list[ChatCompletionMessageParam]:
    out: list[ChatCompletionMessageParam] = []
    if system_prompt:
        out.append({"role": "system", "content": system_prompt})
    for message in messages:
        if message.role == "tool":
            if not message.tool_call_id:
                msg = "a tool message has no tool_call_id; OpenAI needs it to match the tool call"
                raise InvalidLlmRequest(msg)
            # Chat Completions has no error flag on tool results; say it in the text.
            content = f"Error: {message.content}" if message.is_error else message.content
            out.append({"role": "tool", "tool_call_id": message.tool_call_id, "content": content})
        elif message.role == "assistant":
            if message.tool_calls:
                calls: list[ChatCompletionMessageFunctionToolCallParam] = [
                    {
                        "id": c.id,
                        "type": "function",
                        "function": {"name": c.name, "arguments": _dump_arguments(c)},
                    }
                    for c in message.tool_calls
                ]
                # An empty `tool_calls` array is refused, so it is only set when there are some.
                out.append(
                    {"role": "assistant", "content": message.content or None, "tool_calls": calls}
                )
            else:
                out.append({"role": "assistant", "content": message.content})
        else:
            out.append({"role": "user", "content": message.content})
    return out


def parse_arguments(raw: str) -> dict[str, Any]:
    """The model's arguments JSON; anything but an object is kept as `{"_raw": raw}`."""
    if not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except ValueError:
        return {RAW_ARGUMENTS_KEY: raw}
    return value if isinstance(value, dict) else {RAW_ARGUMENTS_KEY: raw}


def _dump_arguments(call: ToolCall) -> str:
    # Send unreadable arguments back exactly as the model wrote them.
    raw = call.unreadable_arguments()
    return raw if raw is not None else json.dumps(call.arguments, ensure_ascii=False)


def map_openai_error(label: str, exc: openai.APIError) -> LlmError:
    if isinstance(exc, openai.APIStatusError):
        body = exc.body if isinstance(exc.body, dict) else {}
        detail = body.get("message") if isinstance(body.get("message"), str) else None
        code = (exc.code or "").lower()
        return error_for_status(
            label,
            exc.status_code,
            detail or exc.message,
            exc.response.headers,
            context_too_long=code == "context_length_exceeded",
            # Azure names a missing deployment `DeploymentNotFound`.
            model_not_found=code in ("model_not_found", "deploymentnotfound"),
        )
    if isinstance(exc, openai.APIConnectionError):
        return unreachable(label, exc)
    return ProviderUnavailable(f"{label}: {type(exc).__name__}: {exc.message}")


def _usage(usage: CompletionUsage | None) -> Usage:
    if usage is None:
        return Usage()
    return Usage(input_tokens=usage.prompt_tokens, output_tokens=usage.completion_tokens)
