"""The worker's spans of a job, in the caller's trace (README "Tracing").

One delivery of a job is the span ``l04.job`` (kind CONSUMER), a child of the context the caller
stored in the job's record (:mod:`gateway_core.trace_context`): the same on every delivery, after
a redelivery (the worker died) and after a failover (another provider's worker), so every
delivery of one job is a sibling under the caller's span. Under it:

* ``l04.queue``: from the job's creation to this claim (from the record's timestamps);
* ``l04.claim``: the claim's round trip;
* ``l04.cache.lookup``: ``l04.cache.hit``, ``l04.cache.kind`` (exact / semantic),
  ``l04.cache.similarity`` for a semantic hit;
* ``l04.admission``: each admission by the rate limits; deferred: ``l04.admission.deferred``,
  ``l04.admission.wait_ms``, ``l04.admission.limit``;
* ``{operation} {model}`` (kind CLIENT): each provider call, retries as siblings, with the GenAI
  attributes (:mod:`gateway_core.genai_attributes`); ``gen_ai.first_token`` is an event on it.

The job's outcome is ``l04.outcome`` on ``l04.job``; an error ends it with status ERROR, its
E4xxx code as the description and as ``error.type``. A delivery whose claim ended the job
(expired, lost) is an ``l04.job`` alone with that outcome and code (:func:`not_run`).

Off (:func:`config.tracing.enabled` false), every function here returns before it builds
anything: the API's no-op tracer is not even asked.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from config import tracing
from gateway_core import genai_attributes as genai
from gateway_core.errors import GatewayError
from gateway_core.trace_context import context_from
from workers.control.admission import Deferred
from workers.job_store import Claim

_tracer = trace.get_tracer("l04.worker")
_OFF: contextlib.nullcontext[None] = contextlib.nullcontext()


@dataclass(slots=True)
class JobSpan:
    """The delivery's span, current (attached) until :meth:`end`."""

    span: Span
    token: object

    def end(self, outcome: str | None) -> None:
        if outcome is not None:
            self.span.set_attribute("l04.outcome", outcome)
        otel_context.detach(self.token)  # type: ignore[arg-type]
        self.span.end()


def start_job(job_id: str, claim: Claim, claim_started_ns: int) -> JobSpan | None:
    """The span of this delivery, with its queue and claim spans; None when tracing is off."""
    if not tracing.enabled():
        return None
    parent = context_from({"traceparent": claim.traceparent, "tracestate": claim.tracestate})
    claimed_ns = time.time_ns()
    span = _tracer.start_span(
        "l04.job",
        context=parent,
        kind=SpanKind.CONSUMER,
        start_time=claim_started_ns,
        attributes={
            "l04.job_id": job_id,
            "l04.attempt": claim.attempt,
            "l04.priority": claim.priority,
            **genai.request_attributes(
                genai.operation(claim.kind.value), claim.provider, claim.model
            ),
        },
    )
    inside = trace.set_span_in_context(span)
    if claim.created_ms and claim.started_ms >= claim.created_ms:
        queued = _tracer.start_span(
            "l04.queue",
            context=inside,
            start_time=claim.created_ms * 1_000_000,
            attributes={"l04.queue_ms": claim.started_ms - claim.created_ms},
        )
        queued.end(end_time=claim.started_ms * 1_000_000)
    _tracer.start_span("l04.claim", context=inside, start_time=claim_started_ns).end(claimed_ns)
    return JobSpan(span, otel_context.attach(inside))


def not_run(
    job_id: str, traceparent: str, tracestate: str, outcome: str, code: str | None, claimed_ns: int
) -> None:
    """A delivery whose claim ended the job instead of running it (its deadline passed:
    E4404, E4401 or E4205; started too often: E4206): an ``l04.job`` span of the claim, in the
    caller's trace, with the code as its status, so that the trace shows how the job ended."""
    if not tracing.enabled():
        return
    parent = context_from({"traceparent": traceparent, "tracestate": tracestate})
    span = _tracer.start_span(
        "l04.job",
        context=parent,
        kind=SpanKind.CONSUMER,
        start_time=claimed_ns,
        attributes={"l04.job_id": job_id, "l04.outcome": outcome},
    )
    if code:
        _error(span, code)
    span.end()


def failed(code: str) -> None:
    """The job ends in the error ``code`` (the current span is the job's)."""
    if not tracing.enabled():
        return
    _error(trace.get_current_span(), code)


def _error(span: Span, code: str) -> None:
    span.set_attribute("error.type", code)
    span.set_status(Status(StatusCode.ERROR, code))


def cache_lookup() -> contextlib.AbstractContextManager[Span | None]:
    """The span of a cache lookup (annotate it with :func:`cache_result`)."""
    if not tracing.enabled():
        return _OFF
    return _tracer.start_as_current_span("l04.cache.lookup")


def cache_result(span: Span | None, kind: str | None, similarity: float | None) -> None:
    """A hit of ``kind`` (exact / semantic), or a miss (None)."""
    if span is None:
        return
    span.set_attribute("l04.cache.hit", kind is not None)
    if kind is not None:
        span.set_attribute("l04.cache.kind", kind)
        if kind == "semantic" and similarity is not None:
            span.set_attribute("l04.cache.similarity", similarity)


@contextlib.contextmanager
def _admission() -> Iterator[None]:
    with _tracer.start_as_current_span(
        "l04.admission", record_exception=False, set_status_on_exception=False
    ) as span:
        try:
            yield
        except Deferred as deferred:
            span.set_attributes(
                {
                    "l04.admission.deferred": True,
                    "l04.admission.wait_ms": deferred.wait_ms,
                    "l04.admission.limit": deferred.limit,
                }
            )
            raise
        except GatewayError as error:
            _error(span, error.code)
            raise
        span.set_attribute("l04.admission.deferred", False)


def admission() -> contextlib.AbstractContextManager[None]:
    """The span of one admission by the rate limits and quotas (deferred: for how long, by
    which limit; refused: its code)."""
    if not tracing.enabled():
        return _OFF
    return _admission()


@contextlib.contextmanager
def _provider_call(kind: str, provider: str, model: str, request: Any) -> Iterator[Span]:
    op = genai.operation(kind)
    with _tracer.start_as_current_span(
        genai.span_name(op, model),
        kind=SpanKind.CLIENT,
        attributes=genai.request_attributes(op, provider, model),
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        if genai.capture_content():
            span.set_attributes(genai.input_messages(_messages(request)))
        try:
            yield span
        except GatewayError as error:
            _error(span, error.code)
            raise
        except BaseException as exc:
            span.set_attribute("error.type", type(exc).__name__)
            span.set_status(Status(StatusCode.ERROR, type(exc).__name__))
            raise


def provider_call(
    kind: str, provider: str, model: str, request: Any
) -> contextlib.AbstractContextManager[Span | None]:
    """The span of one provider call (annotate it with :func:`answered`)."""
    if not tracing.enabled():
        return _OFF
    return _provider_call(kind, provider, model, request)


def answered(span: Span | None, model: str, result: Any) -> None:
    """A provider call's answer: usage, finish reason (and, captured, its text)."""
    if span is None:
        return
    finish = getattr(result, "finish_reason", None)
    content = getattr(result, "content", None)
    span.set_attributes(
        genai.response_attributes(
            model,
            result.usage.prompt_tokens,
            None if content is None else result.usage.completion_tokens,
            finish,
        )
    )
    if content is not None and genai.capture_content():
        span.set_attributes(genai.output_messages(content, finish))


def first_token(seconds: float) -> None:
    """The stream's first token, as an event on the current provider call's span."""
    if not tracing.enabled():
        return
    trace.get_current_span().add_event(
        "gen_ai.first_token", {"l04.time_to_first_token_ms": round(seconds * 1000, 3)}
    )


def _messages(request: Any) -> list[tuple[str, str]]:
    messages = getattr(request, "messages", None)
    if messages is not None:
        return [(str(m.role.value), m.text) for m in messages]
    return [("user", text) for text in getattr(request, "input", [])]
