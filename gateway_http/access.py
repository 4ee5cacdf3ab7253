"""Around every request: the access log line, the request metrics, and draining.

An ASGI middleware of its own (not Starlette's ``BaseHTTPMiddleware``, which buffers and costs
a task per request). The log line is JSON in the workers' format, with ids and codes only:
never a prompt, a response or a key (the path is logged without its query string).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Iterator
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway_core import metrics
from gateway_http.errors import Dialect, HttpError

log = logging.getLogger("l04.http.access")

DRAINING_MESSAGE = "the server is shutting down; retry on another server"


class Drain:
    """Set when the server got SIGTERM: new requests get 503 while open ones finish.

    It also knows the requests in flight, for :meth:`settle`: when the drain's grace runs out,
    uvicorn cancels what still runs and goes straight on to the application's shutdown, which
    closes the gateway. A cancelled request still has work to do with it (a cut stream writes
    its last event and cancels its job, which nobody will read): the shutdown waits for that.
    """

    def __init__(self) -> None:
        self.draining = False
        self._in_flight: set[asyncio.Task[Any]] = set()

    def start(self) -> None:
        self.draining = True

    @contextlib.contextmanager
    def in_flight(self) -> Iterator[None]:
        """Around a request: the task serving it is in flight until the block ends."""
        task = asyncio.current_task()
        if task is not None:
            self._in_flight.add(task)
        try:
            yield
        finally:
            if task is not None:
                self._in_flight.discard(task)

    async def settle(self, timeout: float) -> None:
        """Until every request in flight has ended, for at most ``timeout`` seconds."""
        current = asyncio.current_task()
        pending = {t for t in self._in_flight if t is not current and not t.done()}
        if pending:
            _, still = await asyncio.wait(pending, timeout=timeout)
            if still:
                log.warning(
                    "%d request(s) still running %.0f s into the shutdown", len(still), timeout
                )


class AccessMiddleware:
    def __init__(self, app: ASGIApp, drain: Drain) -> None:
        self.app = app
        self.drain = drain

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self.drain.draining:
            await _refuse(scope, send)
            _account(scope, 503, time.monotonic(), None)
            return
        started = time.monotonic()
        seen: dict[str, Any] = {"status": 500, "first_byte": None}

        async def watched(message: Message) -> None:
            if message["type"] == "http.response.start":
                seen["status"] = message["status"]
            elif message["type"] == "http.response.body" and seen["first_byte"] is None:
                seen["first_byte"] = time.monotonic()
            await send(message)

        try:
            with self.drain.in_flight():
                await self.app(scope, receive, watched)
        finally:
            _account(scope, seen["status"], started, seen["first_byte"])


async def _refuse(scope: Scope, send: Send) -> None:
    dialect: Dialect = (
        "anthropic" if str(scope.get("path", "")).startswith("/v1/messages") else "openai"
    )
    body = json.dumps(HttpError(503, "E4400", DRAINING_MESSAGE).body(dialect)).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 503,
            "headers": [
                (b"content-type", b"application/json"),
                (b"retry-after", b"1"),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _account(scope: Scope, status: int, started: float, first_byte: float | None) -> None:
    endpoint = scope.get("l04.endpoint", "other")
    key_id = scope.get("l04.key_id", "none")
    now = time.monotonic()
    metrics.HTTP_REQUESTS.labels(endpoint, str(status), key_id).inc()
    metrics.HTTP_DURATION.labels(endpoint).observe(now - started)
    if first_byte is not None:
        metrics.HTTP_FIRST_BYTE.labels(endpoint).observe(first_byte - started)
    if endpoint in ("/health", "/metrics", "/ready") and status < 400:
        return  # probes and scrapes: counted, not logged
    log.info(
        "%s %s %d",
        scope.get("method", ""),
        scope.get("path", ""),
        status,
        extra={
            "fields": {
                "http_status": status,
                "endpoint": endpoint,
                "key_id": key_id,
                "job_id": scope.get("l04.job_id"),
                "duration_ms": round((now - started) * 1000, 3),
                "client": (scope.get("client") or ("", 0))[0],
            }
        },
    )
