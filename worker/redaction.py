"""Credentials the worker holds, kept out of everything that leaves the process.

Provider keys and tokens, MCP header values and the variables passed on to MCP servers
are remembered when they are read (`remember`). `redact` replaces them, and anything
shaped like a credential (a bearer token, an `sk-` key, a Google access token or API
key, a JWT), in error messages that quote a provider's response and in every log line;
`redact_known` replaces only the remembered values, in tool results (where a token-shaped
string may be the point of the tool, but the worker's own credentials never are).
"""

import re
from typing import Any

REDACTED = "[redacted]"
# Shorter values are too likely to be ordinary words ("test", a user name).
MIN_SECRET_CHARS = 8
_SCHEMES = ("Bearer ", "Basic ")
_SHAPES = re.compile(
    r"(?P<scheme>\b(?:Bearer|Basic)\s+)[A-Za-z0-9._~+/=-]{8,}"
    r"|\bsk-[A-Za-z0-9_-]{16,}"
    r"|\bya29\.[A-Za-z0-9._-]{10,}"
    r"|\bAIza[0-9A-Za-z_-]{35}"
    r"|\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"
)
_known: set[str] = set()


def remember(secret: str) -> str:
    """Note a credential this process holds; returns it, for use in an expression."""
    for value in (secret, *(secret[len(s) :] for s in _SCHEMES if secret.startswith(s))):
        if len(value.strip()) >= MIN_SECRET_CHARS:
            _known.add(value.strip())
    return secret


def redact(text: str) -> str:
    return _SHAPES.sub(lambda m: (m.group("scheme") or "") + REDACTED, redact_known(text))


def redact_known(text: str) -> str:
    # Longest first: a header value goes whole, not as "Bearer " plus its token.
    for secret in sorted(_known, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def redact_known_in(value: Any) -> Any:
    """`redact_known` on every string of a JSON-like value."""
    if isinstance(value, str):
        return redact_known(value)
    if isinstance(value, list):
        return [redact_known_in(item) for item in value]
    if isinstance(value, dict):
        return {key: redact_known_in(item) for key, item in value.items()}
    return value
