"""Who is asking: the virtual key in ``Authorization: Bearer`` (OpenAI) or ``x-api-key``
(Anthropic), checked against the key store on every request (a revoked key is refused at once,
by every server). The key decides the agent; a body can never choose another.
"""

from __future__ import annotations

from typing import Protocol

from starlette.requests import Request

from gateway_core.errors import KeyRefused
from gateway_http.door import Caller

#: The one agent that ``l04 serve --no-auth`` serves everything as.
LOCAL_AGENT = "did:l04:local"


class KeyRecord(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def agent_did(self) -> str: ...
    @property
    def models(self) -> list[str]: ...


class KeyStore(Protocol):
    async def authenticate(self, secret: str) -> KeyRecord: ...


def presented_key(request: Request) -> str | None:
    """The key the request carries, from either API's header."""
    authorization = request.headers.get("authorization")
    if authorization is not None:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    api_key = request.headers.get("x-api-key")
    return api_key.strip() if api_key and api_key.strip() else None


class Authenticator:
    """``store`` None: no authentication (``--no-auth``), every request is the local agent."""

    def __init__(self, store: KeyStore | None) -> None:
        self._store = store

    @property
    def enabled(self) -> bool:
        return self._store is not None

    async def caller(self, request: Request) -> Caller:
        if self._store is None:
            return Caller(agent_did=LOCAL_AGENT)
        secret = presented_key(request)
        if secret is None:
            raise KeyRefused("no API key: send Authorization: Bearer <key> (or x-api-key: <key>)")
        key = await self._store.authenticate(secret)
        return Caller(agent_did=key.agent_did, key_id=key.id, models=tuple(key.models))
