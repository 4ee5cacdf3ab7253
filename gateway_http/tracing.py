"""An incoming W3C ``traceparent`` makes the request, and the job it submits, part of the
caller's trace (README "Tracing").

The incoming context (``traceparent``, ``tracestate``) is made current for the request, so the
submit inside it stores it with the job and the workers' spans join the caller's trace, whether
this server traces or not (the API passes a context through without recording anything). With
tracing on, FastAPI's own telemetry adds the HTTP server span (``{method} {route}``, a child of
the incoming context) and the submit's span ``l04.submit`` is under it. A request without the
header costs a scan of its header names, nothing more.

A plain ASGI middleware, as :mod:`gateway_http.access` is (Starlette's ``BaseHTTPMiddleware``
buffers and costs a task per request).
"""

from __future__ import annotations

from opentelemetry import context as otel_context
from opentelemetry.trace import get_current_span
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway_core.trace_context import FIELDS, context_from


class TraceContextMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        parent = context_from(_trace_headers(scope)) if scope["type"] == "http" else None
        if parent is None or get_current_span().get_span_context().is_valid:
            # No incoming context, or a span already current (FastAPI's own, if it runs first).
            await self.app(scope, receive, send)
            return
        token = otel_context.attach(parent)
        try:
            await self.app(scope, receive, send)
        finally:
            otel_context.detach(token)


def _trace_headers(scope: Scope) -> dict[str, str]:
    """The request's ``traceparent`` and ``tracestate`` headers (names are lower-case in ASGI)."""
    found: dict[str, str] = {}
    for name, value in scope.get("headers", ()):
        key = name.decode("latin-1")
        if key in FIELDS:
            found[key] = value.decode("latin-1")
    return found
