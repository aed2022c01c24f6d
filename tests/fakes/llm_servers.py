"""Local servers speaking the Anthropic Messages, OpenAI Chat Completions (OpenAI and Azure)
and Vertex AI (Claude `:rawPredict`, Gemini `:generateContent`) wire formats.

The real SDKs, pointed at them with `base_url`, go through their whole HTTP stack. Each
server plays a script of replies, one per accepted request, and records every request
(`requests`, `last_request`: method, path, query, lower-case headers, parsed JSON body).

Like the real APIs, and before playing the script, they refuse a missing or wrong API
key (401), a malformed request (400: tool names not matching `^[a-zA-Z0-9_-]{1,64}$`, a
missing `max_tokens` for Anthropic, tool results that do not answer the previous
message's tool calls) and, when given `models`, an unknown model (404), each with the
real API's error body.

    with FakeOpenAIServer() as server:  # or FakeAnthropicServer(), FakeGeminiServer(), …
        server.enqueue(tool_calls(("calculator", {"expression": "6 * 7"})), text("42"))
        # point the SDK at server.base_url (Azure: server.azure_endpoint), key server.api_key

Script items: `text(...)`, `tool_calls(...)`, an error (`rate_limited()`,
`unauthorized()`, `model_not_found()`, `server_error()`, `context_too_long()`,
`http_error(...)`), or a function of the `RecordedRequest` returning one of those.
Once the script is used up, `server.default` is played (None: a 500 saying so).
"""

from tests.fakes._anthropic import FakeAnthropicServer
from tests.fakes._json_http import RecordedRequest
from tests.fakes._openai import FakeOpenAIServer
from tests.fakes._script import (
    ErrorReply,
    FakeToolCall,
    Reply,
    ScriptItem,
    context_too_long,
    http_error,
    model_not_found,
    rate_limited,
    server_error,
    text,
    tool_calls,
    unauthorized,
)
from tests.fakes._vertex import (
    FakeGeminiServer,
    FakeGoogleTokenServer,
    FakeVertexAnthropicServer,
    gemini_rate_limited,
)

__all__ = [
    "ErrorReply",
    "FakeAnthropicServer",
    "FakeGeminiServer",
    "FakeGoogleTokenServer",
    "FakeOpenAIServer",
    "FakeToolCall",
    "FakeVertexAnthropicServer",
    "RecordedRequest",
    "Reply",
    "ScriptItem",
    "context_too_long",
    "gemini_rate_limited",
    "http_error",
    "model_not_found",
    "rate_limited",
    "server_error",
    "text",
    "tool_calls",
    "unauthorized",
]
