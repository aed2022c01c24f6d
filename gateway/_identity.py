"""Who is calling: a bearer credential resolved to an identity, offline.

Three kinds of credential, each from config: the one shared token (`auth_token_env`:
authorised, but it names nobody), tokens that name their sender (`tokens`), and JWTs from
an identity provider (`jwt`: signature against configured public keys or a JWKS file,
issuer, audience and expiry checked; the identity is `identity_claim`). The identity is
the approver of every approval the caller sends, whatever the body says.
"""

import hmac
from dataclasses import dataclass
from typing import Any

import jwt
from jwt.exceptions import InvalidKeyError, InvalidSignatureError, InvalidTokenError

from temporal_executor.schemas.config import GatewaySettings, JwtAuthSettings
from temporal_executor.tasks.keys import jwks_keys, public_key, read_source


@dataclass(frozen=True)
class Caller:
    """An authenticated caller; `identity` None for the shared token, which names nobody."""

    identity: str | None


class Unauthenticated(Exception):
    """The credential proves nothing (unknown token, bad or expired JWT): answer 401."""


class JwtVerifier:
    def __init__(self, settings: JwtAuthSettings) -> None:
        self._settings = settings
        self._keys = [public_key(source) for source in settings.public_keys]
        self._by_kid = jwks_keys(settings.jwks_file) if settings.jwks_file else {}

    def identity(self, token: str) -> str:
        settings = self._settings
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except InvalidTokenError as exc:
            msg = f"not a JWT: {exc}"
            raise Unauthenticated(msg) from None
        keys = [self._by_kid[kid]] if kid in self._by_kid else [*self._keys, *self._by_kid.values()]
        for key in keys:
            try:
                claims: dict[str, Any] = jwt.decode(
                    token,
                    key,
                    algorithms=list(settings.algorithms),
                    audience=settings.audience,
                    issuer=settings.issuer,
                    leeway=settings.leeway_seconds,
                    options={"require": ["exp", "iss", "aud", settings.identity_claim]},
                )
            except (InvalidSignatureError, InvalidKeyError):
                continue  # signed with another of the configured keys, maybe
            except InvalidTokenError as exc:
                msg = f"JWT refused: {exc}"
                raise Unauthenticated(msg) from None
            identity = claims[settings.identity_claim]
            if not isinstance(identity, str) or not identity:
                msg = f"the JWT's {settings.identity_claim} claim names nobody"
                raise Unauthenticated(msg)
            return identity
        msg = "the JWT is not signed by any configured key"
        raise Unauthenticated(msg)


class Authenticator:
    """Resolves `Authorization: Bearer` credentials; built once, at gateway start (a key or
    token config names but cannot be read fails the start)."""

    def __init__(self, settings: GatewaySettings, shared_token: str | None) -> None:
        self._shared = shared_token.encode() if shared_token else None
        self._tokens = [(read_source(entry.token), entry.identity) for entry in settings.tokens]
        self._jwt = JwtVerifier(settings.jwt) if settings.jwt is not None else None

    @property
    def enabled(self) -> bool:
        return self._shared is not None or bool(self._tokens) or self._jwt is not None

    def caller(self, credential: bytes) -> Caller:
        """The caller the credential proves; `Unauthenticated` if it proves none."""
        # Every configured token is compared, in constant time, whatever matches.
        identities = [who for token, who in self._tokens if hmac.compare_digest(credential, token)]
        if identities:
            return Caller(identities[0])
        if self._shared is not None and hmac.compare_digest(credential, self._shared):
            return Caller(None)
        if self._jwt is not None and credential.count(b".") == 2:
            return Caller(self._jwt.identity(credential.decode(errors="replace")))
        msg = "unknown bearer token"
        raise Unauthenticated(msg)
