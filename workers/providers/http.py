"""What the HTTP adapters share: the pooled client, SSE reading, and the one error boundary.

Every HTTP failure becomes a gateway error here, and nowhere else:

    401, 403                       -> ProviderAuthFailed E4203 (not retryable)
    429                            -> RateLimited E4401 with retry_after from Retry-After
    400, 404, 409, 413, 422        -> ProviderRejected E4201 (this request; not retryable)
    408, 5xx, 529, connect errors  -> ProviderFailed E4200 (retryable)
    timeouts                       -> ProviderTimeout E4202 (retryable)
    a body that is not JSON        -> MalformedResponse E4600
    a stream cut or stalled        -> StreamInterrupted E4604 (retryable)

Messages are scrubbed of credentials before they leave.
"""

from __future__ import annotations

import contextlib
import email.utils
import itertools
import json
import time
from collections.abc import AsyncIterator, Iterable
from typing import Any

import httpx

from config.settings import GatewaySettings
from gateway_core.errors import (
    GatewayError,
    MalformedResponse,
    ProviderAuthFailed,
    ProviderFailed,
    ProviderRejected,
    ProviderTimeout,
    RateLimited,
    StreamInterrupted,
)
from gateway_core.redact import redact

POOL_SHARD_SIZE = 32


class ShardedHttpClient:
    """Several small ``httpx.AsyncClient`` pools used round-robin, behind one client's API.

    httpcore's pool bookkeeping (``_assign_requests_to_connections``) scans every connection and
    every queued request on each request and each close: O(N² + N·M). With 500 calls in flight
    on one pool it took about two thirds of a worker's CPU (profiled with py-spy). Pools of
    ``POOL_SHARD_SIZE`` connections keep each scan short. Upstream: encode/httpcore#1035.
    The total connection limit is ``L04_HTTP_MAX_CONNECTIONS`` (httpx's default of 100 would
    otherwise silently cap a worker's in-flight calls).
    """

    def __init__(self, settings: GatewaySettings, base_url: str, headers: dict[str, str]) -> None:
        total = settings.http_max_connections
        count = max(1, -(-total // POOL_SHARD_SIZE))
        per_shard = -(-total // count)
        # One TLS context for all shards: building one loads the CA bundle (~30 ms each).
        tls = httpx.create_ssl_context()
        self._shards = [
            httpx.AsyncClient(
                verify=tls,
                base_url=base_url.rstrip("/") + "/",
                headers=headers,
                timeout=httpx.Timeout(settings.provider_timeout, connect=10.0),
                limits=httpx.Limits(max_connections=per_shard, max_keepalive_connections=per_shard),
            )
            for _ in range(count)
        ]
        self._next = itertools.cycle(self._shards)

    def pick(self) -> httpx.AsyncClient:
        return next(self._next)

    async def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return await self.pick().post(url, **kwargs)

    async def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return await self.pick().get(url, **kwargs)

    def stream(self, method: str, url: str, **kwargs: Any) -> Any:
        return self.pick().stream(method, url, **kwargs)

    async def aclose(self) -> None:
        for shard in self._shards:
            await shard.aclose()


def http_client(
    settings: GatewaySettings, base_url: str, headers: dict[str, str]
) -> ShardedHttpClient:
    """The pooled client an adapter uses for its provider."""
    return ShardedHttpClient(settings, base_url, headers)


def parse_retry_after(value: str | None) -> float | None:
    """Retry-After as seconds (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class HttpErrorMapper:
    def __init__(self, provider: str, secrets: Iterable[str] = ()) -> None:
        self.provider = provider
        self._secrets = [s for s in secrets if s]

    def _clean(self, text: str) -> str:
        return redact(text, self._secrets)[:500]

    def from_status(
        self, status: int, body_text: str, headers: httpx.Headers | dict[str, str]
    ) -> GatewayError:
        detail = self._clean(_error_message(body_text))
        message = f"{self.provider} returned HTTP {status}: {detail}"
        details: dict[str, Any] = {"provider": self.provider, "status": status}
        if status in (401, 403):
            return ProviderAuthFailed(message, details=details)
        if status == 429:
            retry_after = parse_retry_after(headers.get("retry-after"))
            if retry_after is not None:
                details["retry_after"] = retry_after
            details["source"] = "provider"
            return RateLimited(message, details=details)
        if status == 408 or status >= 500:
            retry_after = parse_retry_after(headers.get("retry-after"))
            if retry_after is not None:
                details["retry_after"] = retry_after
            return ProviderFailed(message, details=details)
        return ProviderRejected(message, details=details)

    def from_error_body(self, error: Any, streaming: bool = False) -> GatewayError:
        """An error reported inside a 200 response (an SSE ``error`` event)."""
        text = json.dumps(error) if not isinstance(error, str) else error
        kind = error.get("type", "") if isinstance(error, dict) else ""
        if kind in ("overloaded_error", "api_error", "server_error"):
            failed = StreamInterrupted if streaming else ProviderFailed
            return failed(
                f"{self.provider} stream error: {self._clean(text)}",
                retryable=True,
                details={"provider": self.provider, "type": kind},
            )
        if kind == "rate_limit_error":
            return RateLimited(
                f"{self.provider} rate limited the stream",
                details={"provider": self.provider, "source": "provider"},
            )
        return StreamInterrupted(
            f"{self.provider} stream error: {self._clean(text)}",
            details={"provider": self.provider, "type": kind},
        )

    def raise_for_status(self, response: httpx.Response) -> None:
        if response.status_code >= 400:
            raise self.from_status(response.status_code, response.text, response.headers)

    async def raise_for_stream_status(self, response: httpx.Response) -> None:
        if response.status_code >= 400:
            body = (await response.aread()).decode(errors="replace")
            raise self.from_status(response.status_code, body, response.headers)

    def loads(self, text: str) -> Any:
        try:
            return json.loads(text)
        except ValueError:
            raise MalformedResponse(
                f"{self.provider} sent a body that is not JSON",
                details={"provider": self.provider},
            ) from None

    def json(self, response: httpx.Response) -> Any:
        return self.loads(response.text)

    @contextlib.asynccontextmanager
    async def boundary(self, streaming: bool = False) -> AsyncIterator[None]:
        """Translate transport failures inside the block into gateway errors."""
        details = {"provider": self.provider}
        try:
            yield
        except GatewayError:
            raise
        except httpx.TimeoutException as exc:
            if streaming and isinstance(exc, httpx.ReadTimeout):
                raise StreamInterrupted(
                    f"{self.provider}: stream stalled ({type(exc).__name__})",
                    retryable=True,
                    details=details,
                ) from None
            raise ProviderTimeout(
                f"{self.provider}: request timed out ({type(exc).__name__})",
                retryable=True,
                details=details,
            ) from None
        except (httpx.RemoteProtocolError, httpx.ReadError) as exc:
            broke = StreamInterrupted if streaming else ProviderFailed
            raise broke(
                f"{self.provider}: connection broke ({type(exc).__name__})",
                retryable=True,
                details=details,
            ) from None
        except httpx.TransportError as exc:
            raise ProviderFailed(
                f"{self.provider}: cannot reach the provider ({type(exc).__name__})",
                details=details,
            ) from None


def _error_message(body: str) -> str:
    try:
        data = json.loads(body)
    except ValueError:
        return body.strip() or "(empty body)"
    if isinstance(data, dict):
        error = data.get("error", data)
        if isinstance(error, dict):
            return str(error.get("message") or error.get("type") or error)
        return str(error)
    return str(data)


async def iter_sse_data(
    response: httpx.Response, done_marker: str | None = None
) -> AsyncIterator[str]:
    """The ``data:`` payloads of a server-sent-event stream, one per event.

    Ends at ``done_marker``; a stream that closes without it (when one is expected) was cut,
    which is E4604.
    """
    data_lines: list[str] = []
    async for line in response.aiter_lines():
        if line == "":
            if data_lines:
                payload = "\n".join(data_lines)
                data_lines = []
                if done_marker is not None and payload == done_marker:
                    return
                yield payload
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        if field == "data":
            data_lines.append(value[1:] if value.startswith(" ") else value)
    if data_lines:
        payload = "\n".join(data_lines)
        if done_marker is None or payload != done_marker:
            yield payload
        if payload == done_marker:
            return
    if done_marker is not None:
        raise StreamInterrupted("stream ended before its end marker", retryable=True)
