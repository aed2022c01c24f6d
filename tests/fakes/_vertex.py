"""Fake Vertex AI endpoints: Claude (`:rawPredict`, `:streamRawPredict`) and Gemini
(`:generateContent`, `:streamGenerateContent?alt=sse`).

Both take a Google OAuth access token (`Authorization: Bearer`) and serve one project and
region. Errors of the Vertex front end (authentication, permission, unknown model, quota,
internal errors) have Google's body, `{"error": {"code", "message", "status"}}`; errors
the model itself raises on Claude (a prompt too long, a malformed request, overloaded)
keep Anthropic's body, as Vertex passes them through.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import parse_qsl

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from tests.fakes._anthropic import FakeAnthropicServer, _check_messages, _check_tools
from tests.fakes._json_http import HttpResponse, JsonHttpServer, RecordedRequest
from tests.fakes._script import ErrorReply, Refused, Reply, ScriptedLlmServer, sse, text_pieces

_STATUS = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    408: "DEADLINE_EXCEEDED",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}
_UNAUTHENTICATED = (
    "Request had invalid authentication credentials. Expected OAuth 2 access token, login "
    "cookie or other valid authentication credential. See "
    "https://developers.google.com/identity/sign-in/web/devconsole-project."
)
_QUOTA = (
    "Resource exhausted. Please try again later. Please refer to "
    "https://cloud.google.com/vertex-ai/generative-ai/docs/error-code-429 for more details."
)


def google_error(
    status: int,
    message: str,
    *,
    details: list[Any] | None = None,
    headers: dict[str, str] | None = None,
) -> HttpResponse:
    error: dict[str, Any] = {
        "code": status,
        "message": message,
        "status": _STATUS.get(status, "INTERNAL" if status >= 500 else "FAILED_PRECONDITION"),
    }
    if details is not None:
        error["details"] = details
    return HttpResponse(status, {"error": error}, headers or {})


def gemini_rate_limited(retry_delay: str = "2s") -> ErrorReply:
    """A 429 saying when to retry in the body (google.rpc.RetryInfo), as the Gemini API does."""
    body = google_error(
        429,
        _QUOTA,
        details=[{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": retry_delay}],
    ).body
    return ErrorReply(429, "rate_limited", body=body)


class _GoogleFrontEnd:
    """What both fakes check the same way: the token, the project and the region."""

    access_token: str
    project: str
    region: str

    def check_token(self, request: RecordedRequest) -> None:
        if request.header("authorization") != f"Bearer {self.access_token}":
            raise Refused(google_error(401, _UNAUTHENTICATED))

    def check_resource(self, project: str, region: str, resource: str) -> None:
        if (project, region) != (self.project, self.region):
            message = (
                f"Permission 'aiplatform.endpoints.predict' denied on resource "
                f"'//aiplatform.googleapis.com/{resource}' (or it may not exist)."
            )
            raise Refused(google_error(403, message))


# -- Claude on Vertex -------------------------------------------------------------------------

_RAW_PREDICT = re.compile(
    r"/v1/projects/([^/]+)/locations/([^/]+)/publishers/anthropic/models/([^/:]+)"
    r":(rawPredict|streamRawPredict)"
)


class FakeVertexAnthropicServer(_GoogleFrontEnd, FakeAnthropicServer):
    """`POST /v1/projects/{p}/locations/{r}/publishers/anthropic/models/{model}:rawPredict`,
    or `:streamRawPredict` for a streamed reply.

    The body is a Messages API body with `anthropic_version` and without `model` (it is in
    the path); the reply is a Messages API reply, or its server-sent events.
    """

    def __init__(
        self,
        *,
        access_token: str = "ya29.test-vertex-token",
        project: str = "test-project",
        region: str = "us-east5",
        models: Iterable[str] | None = None,
    ) -> None:
        super().__init__(api_key=access_token, models=models)
        self.access_token = access_token
        self.project = project
        self.region = region

    @property
    def base_url(self) -> str:
        """The Vertex client's `base_url` (it appends `/projects/...`)."""
        return f"{self.url}/v1"

    def validate(self, request: RecordedRequest) -> str:
        found = _RAW_PREDICT.fullmatch(request.path)
        if request.method != "POST" or found is None:
            raise Refused(google_error(404, f"The requested URL {request.path} was not found."))
        project, region, model, method = found.groups()
        self.check_token(request)
        resource = f"projects/{project}/locations/{region}/publishers/anthropic/models/{model}"
        self.check_resource(project, region, resource)
        body = request.body
        if not isinstance(body, dict):
            _refuse_anthropic("There was an error parsing the body of your request.")
        if "model" in body:
            _refuse_anthropic("model: Extra inputs are not permitted")
        if (method == "streamRawPredict") != body.get("stream", False):
            _refuse_anthropic(f"stream: must be {method == 'streamRawPredict'} for :{method}")
        for name in ("anthropic_version", "max_tokens", "messages"):
            if name not in body:
                _refuse_anthropic(f"{name}: Field required")
        if not isinstance(body["max_tokens"], int) or body["max_tokens"] < 1:
            _refuse_anthropic("max_tokens: Input should be greater than or equal to 1")
        temperature = body.get("temperature")
        if temperature is not None and not 0 <= temperature <= 1:
            _refuse_anthropic("temperature: Input should be less than or equal to 1")
        _check_tools(body.get("tools", []))
        _check_messages(body["messages"])
        if self.models is not None and model not in self.models:
            raise Refused(self.render_error(ErrorReply(404, "model_not_found"), model))
        return model

    def render_error(self, error: ErrorReply, model: str) -> HttpResponse:
        if error.body is None and (error.kind in _FRONT_END_KINDS or error.status == 500):
            response = _front_end_error(error, self._model_resource(model))
            return HttpResponse(response.status, response.body, error.headers)
        # Raised by the model behind Vertex: Anthropic's own body.
        return super().render_error(error, model)

    def _model_resource(self, model: str) -> str:
        return (
            f"projects/{self.project}/locations/{self.region}/publishers/anthropic/models/{model}"
        )


def _refuse_anthropic(message: str) -> NoReturn:
    body = {"type": "error", "error": {"type": "invalid_request_error", "message": message}}
    raise Refused(HttpResponse(400, body))


_FRONT_END_KINDS = ("rate_limited", "unauthorized", "model_not_found")


def _front_end_error(error: ErrorReply, resource: str) -> HttpResponse:
    if error.kind == "rate_limited":
        return google_error(429, error.message or _QUOTA)
    if error.kind == "unauthorized":
        return google_error(401, error.message or _UNAUTHENTICATED)
    if error.kind == "model_not_found":
        message = (
            f"Publisher Model `{resource}` was not found or your project does not have access "
            "to it. Please ensure you are using a valid model version. For more information, "
            "see: https://cloud.google.com/vertex-ai/generative-ai/docs/learn/model-versions"
        )
        return google_error(404, error.message or message)
    if error.kind == "context_too_long":
        message = (
            "The input token count (1215000) exceeds the maximum number of tokens allowed "
            "(1048576)."
        )
        return google_error(400, error.message or message)
    if error.status == 503:
        return google_error(
            503, error.message or "The model is overloaded. Please try again later."
        )
    if error.status >= 500:
        return google_error(error.status, error.message or "Internal error encountered.")
    return google_error(error.status, error.message or "fake error")


# -- Gemini on Vertex -------------------------------------------------------------------------

_GENERATE_CONTENT = re.compile(
    r"/(v1|v1beta1)/projects/([^/]+)/locations/([^/]+)/publishers/google/models/([^/:]+)"
    r":(generateContent|streamGenerateContent)"
)
# Gemini's rule for function names.
GEMINI_FUNCTION_NAME = r"^[a-zA-Z_][a-zA-Z0-9_.:-]{0,63}$"
# Fields of Gemini's `Schema` in its oldest form; anything else is refused as unknown.
_SCHEMA_FIELDS = frozenset(
    {
        "type",
        "format",
        "description",
        "nullable",
        "enum",
        "items",
        "properties",
        "required",
        "minItems",
        "maxItems",
        "minLength",
        "maxLength",
        "minProperties",
        "maxProperties",
        "minimum",
        "maximum",
        "pattern",
        "anyOf",
        "propertyOrdering",
        "example",
    }
)
_SCHEMA_TYPES = frozenset({"STRING", "NUMBER", "INTEGER", "BOOLEAN", "ARRAY", "OBJECT"})
_PART_FIELDS = ("text", "functionCall", "functionResponse", "inlineData", "fileData")


class FakeGeminiServer(_GoogleFrontEnd, ScriptedLlmServer):
    """`POST /v1beta1/projects/{p}/locations/{l}/publishers/google/models/{model}:generateContent`,
    or `:streamGenerateContent`: with `?alt=sse` server-sent events, each a partial response
    (text a few words at a time, a function call whole), the last one with the finish
    reason and the usage; without, the same responses as one JSON array.

    Like Gemini, it gives function calls no `id` unless `call_ids` is set, and for
    `gemini-3*` models signs the first call of a turn and refuses a history whose calls
    are not signed.
    """

    def __init__(
        self,
        *,
        access_token: str = "ya29.test-gemini-token",
        project: str = "test-project",
        region: str = "us-central1",
        models: Iterable[str] | None = None,
        call_ids: bool = False,
    ) -> None:
        super().__init__(api_key=access_token, models=models)
        self.access_token = access_token
        self.project = project
        # Vertex calls it the location.
        self.region = region
        self.call_ids = call_ids

    @property
    def base_url(self) -> str:
        """`HttpOptions(base_url=...)` for google-genai (it appends `/v1beta1/projects/...`)."""
        return self.url

    def validate(self, request: RecordedRequest) -> str:
        found = _GENERATE_CONTENT.fullmatch(request.path)
        if request.method != "POST" or found is None:
            raise Refused(google_error(404, f"The requested URL {request.path} was not found."))
        _, project, location, model, _method = found.groups()
        self.check_token(request)
        self.check_resource(
            project,
            location,
            f"projects/{project}/locations/{location}/publishers/google/models/{model}",
        )
        body = request.body
        if not isinstance(body, dict):
            _invalid("Invalid JSON payload received. Unexpected token.")
        unknown = sorted(
            set(body) - {"contents", "systemInstruction", "tools", "toolConfig", "generationConfig"}
        )
        if unknown:
            _invalid(
                f'Invalid JSON payload received. Unknown name "{unknown[0]}": Cannot find field.'
            )
        _check_generation_config(body.get("generationConfig", {}))
        _check_gemini_tools(body.get("tools", []))
        _check_contents(body.get("contents"), signed=model.startswith("gemini-3"))
        if self.models is not None and model not in self.models:
            raise Refused(self.render_error(ErrorReply(404, "model_not_found"), model))
        return model

    def render_reply(self, reply: Reply, request: RecordedRequest, model: str) -> HttpResponse:
        parts: list[dict[str, Any]] = []
        if reply.text:
            parts.append({"text": reply.text})
        for position, call in enumerate(reply.tool_calls):
            function_call: dict[str, Any] = {"name": call.name, "args": call.arguments}
            if self.call_ids:
                function_call["id"] = f"fc-{self.next_id():08d}"
            part: dict[str, Any] = {"functionCall": function_call}
            if position == 0 and model.startswith("gemini-3"):
                part["thoughtSignature"] = "c2lnbmVkLWJ5LXRoZS1mYWtl"
            parts.append(part)
        body = request.body if isinstance(request.body, dict) else {}
        prompt = reply.input_tokens
        if prompt is None:
            prompt = _words(body.get("contents")) + _words(body.get("systemInstruction", ""))
        output = reply.output_tokens
        if output is None:
            output = len(reply.text.split()) + sum(_words(c.arguments) for c in reply.tool_calls)
        output = max(1, output)
        response = {
            "candidates": [
                {
                    "content": {"role": "model", "parts": parts},
                    "finishReason": reply.stop_reason or "STOP",
                    "avgLogprobs": -0.25,
                }
            ],
            "usageMetadata": {
                "promptTokenCount": prompt,
                "candidatesTokenCount": output,
                "totalTokenCount": prompt + output,
                "trafficType": "ON_DEMAND",
            },
            "modelVersion": model,
            "createTime": "2026-11-26T12:00:00.000000Z",
            "responseId": f"resp-{self.next_id():08d}",
        }
        if request.path.endswith(":streamGenerateContent"):
            chunks = _partial_responses(response)
            if request.query.get("alt") == "sse":
                return HttpResponse(200, None, chunks=[sse(c, end=b"\r\n\r\n") for c in chunks])
            return HttpResponse(200, chunks)
        return HttpResponse(200, response)

    def render_error(self, error: ErrorReply, model: str) -> HttpResponse:
        if error.body is not None:
            return HttpResponse(error.status, error.body, error.headers)
        resource = (
            f"projects/{self.project}/locations/{self.region}/publishers/google/models/{model}"
        )
        response = _front_end_error(error, resource)
        return HttpResponse(response.status, response.body, error.headers)


def _words(value: Any) -> int:
    return len(json.dumps(value).split())


def _partial_responses(response: dict[str, Any]) -> list[dict[str, Any]]:
    """`response` as `streamGenerateContent` sends it."""
    candidate = response["candidates"][0]
    parts = candidate["content"]["parts"]
    head = {k: response[k] for k in ("modelVersion", "createTime", "responseId")}
    texts = [p["text"] for p in parts if "text" in p]
    calls = [p for p in parts if "text" not in p]
    pieces: list[list[dict[str, Any]]] = [[{"text": t}] for t in text_pieces("".join(texts))]
    if calls or not pieces:
        pieces.append(calls)
    out: list[dict[str, Any]] = [
        {"candidates": [{"content": {"role": "model", "parts": piece}}], **head} for piece in pieces
    ]
    last = out[-1]["candidates"][0]
    last["finishReason"] = candidate["finishReason"]
    last["avgLogprobs"] = candidate["avgLogprobs"]
    out[-1]["usageMetadata"] = response["usageMetadata"]
    return out


def _invalid(message: str) -> NoReturn:
    raise Refused(google_error(400, message))


def _check_generation_config(config: Any) -> None:
    temperature = config.get("temperature")
    if temperature is not None and not 0 <= temperature <= 2:
        _invalid(
            f"Unable to submit request because it has a temperature value of {temperature} but "
            "the supported range is from 0 (inclusive) to 2.0001 (exclusive). Update the value "
            "and try again."
        )
    max_tokens = config.get("maxOutputTokens")
    if max_tokens is not None and max_tokens < 1:
        _invalid("Unable to submit request because maxOutputTokens must be at least 1.")


def _check_gemini_tools(tools: Any) -> None:
    for i, tool in enumerate(tools):
        for j, declaration in enumerate(tool.get("functionDeclarations", [])):
            at = f"tools[{i}].function_declarations[{j}]"
            name = declaration.get("name")
            if not isinstance(name, str) or not re.fullmatch(GEMINI_FUNCTION_NAME, name):
                _invalid(
                    f"* GenerateContentRequest.{at}.name: Invalid function name. Must start "
                    "with a letter or an underscore. Must be a-z, A-Z, 0-9, or contain "
                    "underscores, dots, colons and dashes, with a maximum length of 64."
                )
            if "parameters" in declaration:
                _check_schema(declaration["parameters"], f"{at}.parameters")


def _check_schema(schema: Any, at: str) -> None:
    unknown = sorted(set(schema) - _SCHEMA_FIELDS)
    if unknown:
        _invalid(
            f"Invalid JSON payload received. Unknown name \"{unknown[0]}\" at '{at}': "
            "Cannot find field."
        )
    kind = schema.get("type")
    if kind is not None and kind not in _SCHEMA_TYPES:
        _invalid(
            f"Invalid value at '{at}.type' (type.googleapis.com/google.cloud.aiplatform.v1beta1"
            f'.Type), "{kind}"'
        )
    if kind == "OBJECT" and not schema.get("properties"):
        _invalid(f"* GenerateContentRequest.{at}.properties: should be non-empty for OBJECT type")
    for name, value in schema.get("properties", {}).items():
        _check_schema(value, f"{at}.properties[{name}]")
    if "items" in schema:
        _check_schema(schema["items"], f"{at}.items")
    for n, variant in enumerate(schema.get("anyOf", [])):
        _check_schema(variant, f"{at}.any_of[{n}]")
    if "enum" in schema and not all(isinstance(v, str) for v in schema["enum"]):
        _invalid(f"Invalid value at '{at}.enum': expected strings")


def _check_contents(contents: Any, *, signed: bool) -> None:
    """Roles, non-empty parts, and each call turn answered by the very next content."""
    if not contents:
        _invalid("Unable to submit request because it must include at least one parts field.")
    open_calls: list[str] = []
    for i, content in enumerate(contents):
        role, parts = content.get("role"), content.get("parts")
        if role not in ("user", "model"):
            _invalid(f"Please use a valid role: user, model. (contents[{i}].role: {role})")
        if not parts:
            _invalid(
                "Unable to submit request because it must include at least one parts field, "
                "which describes the prompt input."
            )
        for part in parts:
            if not any(field in part for field in _PART_FIELDS):
                _invalid(f"contents[{i}].parts: a part must hold data (text, functionCall, …)")
            if "text" in part and not part["text"]:
                _invalid(
                    "Unable to submit request because it has an empty text parameter. Add a "
                    "value to the parameter and try again."
                )
        calls = [p["functionCall"] for p in parts if "functionCall" in p]
        responses = [p["functionResponse"] for p in parts if "functionResponse" in p]
        if responses and not open_calls:
            _invalid(
                "Please ensure that function response turn comes immediately after a function "
                "call turn."
            )
        if open_calls and len(responses) != len(open_calls):
            _invalid(
                "Please ensure that the number of function response parts is equal to the "
                "number of function call parts of the function call turn."
            )
        if sorted(r.get("name", "") for r in responses) != sorted(open_calls):
            _invalid("Please ensure that the function response names match the function calls.")
        if (
            calls
            and role == "model"
            and signed
            and "thoughtSignature"
            not in parts[next(n for n, p in enumerate(parts) if "functionCall" in p)]
        ):
            _invalid(
                f"Function call is missing a thought_signature in functionCall parts. This is "
                f"required for tools to work correctly, and missing thought_signature may lead "
                f"to degraded model performance. Additional data, function call `default_api:"
                f"{calls[0].get('name')}` , position {i + 1}. Please refer to "
                "https://ai.google.dev/gemini-api/docs/thought-signatures for more details."
            )
        open_calls = [c.get("name", "") for c in calls] if role == "model" else []
    if open_calls:
        _invalid(
            "Please ensure that the number of function response parts is equal to the number "
            "of function call parts of the function call turn."
        )


# -- Google's OAuth token endpoint, for Application Default Credentials ------------------------


class FakeGoogleTokenServer(JsonHttpServer):
    """`POST /token`: swaps a service account's signed JWT for an access token, as
    oauth2.googleapis.com does. `credentials_file` writes the service account key file
    (with a fresh RSA key, and this server as its `token_uri`) for
    GOOGLE_APPLICATION_CREDENTIALS; the JWT's signature is checked against that key."""

    def __init__(self, *, access_token: str, project: str = "test-project") -> None:
        super().__init__()
        self.access_token = access_token
        self.project = project
        self.client_email = f"agent@{project}.iam.gserviceaccount.com"
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def handle(self, request: RecordedRequest) -> HttpResponse:
        form = dict(parse_qsl(request.raw.decode()))
        if request.path != "/token" or form.get("grant_type") != _JWT_BEARER:
            return HttpResponse(400, {"error": "unsupported_grant_type"})
        claims = self._verified_claims(form.get("assertion", ""))
        if claims is None or claims.get("iss") != self.client_email:
            refused = {"error": "invalid_grant", "error_description": "Invalid JWT Signature."}
            return HttpResponse(400, refused)
        body: dict[str, Any] = {
            "access_token": self.access_token,
            "expires_in": 3599,
            "token_type": "Bearer",
        }
        return HttpResponse(200, body)

    def credentials_file(self, path: Path) -> Path:
        pem = self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        info = {
            "type": "service_account",
            "project_id": self.project,
            "private_key_id": "test-key-1",
            "private_key": pem.decode(),
            "client_email": self.client_email,
            "client_id": "100000000000000000001",
            "token_uri": f"{self.url}/token",
        }
        path.write_text(json.dumps(info), encoding="utf-8")
        return path

    def _verified_claims(self, assertion: str) -> dict[str, Any] | None:
        try:
            header, claims, signature = assertion.split(".")
            self._key.public_key().verify(
                _unb64(signature),
                f"{header}.{claims}".encode(),
                padding.PKCS1v15(),
                hashes.SHA256(),
            )
        except (ValueError, InvalidSignature):
            return None
        decoded: dict[str, Any] = json.loads(_unb64(claims))
        return decoded


_JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"


def _unb64(value: str) -> bytes:
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
