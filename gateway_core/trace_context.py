"""The caller's W3C trace context (``traceparent``, ``tracestate``), kept with a job.

A producer submits inside its own span (or an HTTP request's, at ``l04 serve``); the job's
record keeps that span's context in two fields named as the W3C headers, and the worker that
claims the job, whichever and however often, continues the same trace from them. Only the
OpenTelemetry API is used here: a producer's application decides whether anything is recorded
(its own TracerProvider, or none: then there is no valid context and nothing is stored).

The W3C propagator is used whatever ``OTEL_PROPAGATORS`` says: the record is our own format,
not a header a third party reads.
"""

from __future__ import annotations

from collections.abc import Mapping

from opentelemetry.context import Context
from opentelemetry.trace import get_current_span
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
FIELDS = (TRACEPARENT, TRACESTATE)

_W3C = TraceContextTextMapPropagator()


def current_fields(context: Context | None = None) -> dict[str, str]:
    """The current span's context as record fields; {} when there is no valid span."""
    if not get_current_span(context).get_span_context().is_valid:
        return {}
    carrier: dict[str, str] = {}
    _W3C.inject(carrier, context=context)
    return {name: carrier[name] for name in FIELDS if carrier.get(name)}


def context_from(fields: Mapping[str, str]) -> Context | None:
    """The context the fields (a record's, or HTTP headers with lower-case names) carry; None
    when they carry none or an invalid one (a malformed header is ignored, as the spec says)."""
    if not fields.get(TRACEPARENT):
        return None
    context = _W3C.extract({name: fields[name] for name in FIELDS if fields.get(name)})
    if not get_current_span(context).get_span_context().is_valid:
        return None
    return context
