"""The worker's span helpers (workers/job_trace.py) recording into a real SDK with an in-memory
exporter: what the fleet tests cannot cheaply provoke (a deferral, a semantic hit, content
capture). The fleet's own processes are in tests/fleet/test_tracing.py."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from config import tracing
from gateway_core.errors import ProviderFailed
from gateway_core.genai_attributes import CAPTURE_CONTENT_ENV
from gateway_core.response import TokenUsage
from tests.conftest import make_request
from workers import job_trace
from workers.control.admission import Deferred
from workers.providers import ProviderResult


@pytest.fixture
def exported(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    """Tracing on, into this test's own SDK (the process's global provider is left alone)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(tracing, "_provider", provider)
    monkeypatch.setattr(job_trace, "_tracer", provider.get_tracer("test"))
    yield exporter
    provider.shutdown()


def only(exporter: InMemorySpanExporter) -> ReadableSpan:
    (span,) = exporter.get_finished_spans()
    return span


def test_off_nothing_is_built() -> None:
    assert not tracing.enabled()
    with job_trace.cache_lookup() as span, job_trace.admission():
        assert span is None
    with job_trace.provider_call("chat", "openai", "gpt-4o-mini", None) as call:
        assert call is None


def test_a_deferred_admission_says_for_how_long_and_by_which_limit(
    exported: InMemorySpanExporter,
) -> None:
    with pytest.raises(Deferred), job_trace.admission():
        raise Deferred(1500, "model requests", "did:key:a")
    span = only(exported)
    assert span.name == "l04.admission"
    assert dict(span.attributes or {}) == {
        "l04.admission.deferred": True,
        "l04.admission.wait_ms": 1500,
        "l04.admission.limit": "model requests",
    }
    assert span.status.status_code is StatusCode.UNSET  # a wait, not an error


def test_a_semantic_hit_has_its_similarity(exported: InMemorySpanExporter) -> None:
    with job_trace.cache_lookup() as span:
        job_trace.cache_result(span, "semantic", 0.97)
    assert dict(only(exported).attributes or {}) == {
        "l04.cache.hit": True,
        "l04.cache.kind": "semantic",
        "l04.cache.similarity": 0.97,
    }


def test_a_failed_call_has_its_code(exported: InMemorySpanExporter) -> None:
    with pytest.raises(ProviderFailed), job_trace.provider_call("chat", "openai", "m", None):
        raise ProviderFailed("upstream 503")
    span = only(exported)
    assert (span.status.status_code, span.status.description) == (StatusCode.ERROR, "E4200")
    assert (span.attributes or {})["error.type"] == "E4200"


def test_a_job_its_claim_ended_is_a_span_in_the_callers_trace(
    exported: InMemorySpanExporter,
) -> None:
    """Its deadline passed in the queue: the claim wrote E4404 and ran nothing."""
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    job_trace.not_run("late", traceparent, "", "expired", "E4404", 1_000)
    span = only(exported)
    assert span.name == "l04.job" and span.parent is not None
    assert (span.context.trace_id, span.parent.span_id) == (
        0x4BF92F3577B34DA6A3CE929D0E0E4736,
        0x00F067AA0BA902B7,
    )
    assert (span.status.status_code, span.status.description) == (StatusCode.ERROR, "E4404")
    assert dict(span.attributes or {}) == {
        "l04.job_id": "late",
        "l04.outcome": "expired",
        "error.type": "E4404",
    }


KEY = "sk-proj-0123456789abcdef"


def answer_a_call(request: object) -> ReadableSpan:
    result = ProviderResult(f"the answer, {KEY}", TokenUsage(prompt_tokens=9, completion_tokens=4))
    with job_trace.provider_call("chat", "openai", "gpt-4o-mini", request) as span:
        job_trace.answered(span, "gpt-4o-mini", result)
    return span  # type: ignore[return-value]


def test_no_content_unless_asked(exported: InMemorySpanExporter) -> None:
    answer_a_call(make_request(f"my prompt with {KEY}"))
    attributes = dict(only(exported).attributes or {})
    assert attributes["gen_ai.usage.output_tokens"] == 4
    assert not any("messages" in name for name in attributes)
    assert "my prompt" not in json.dumps(attributes)


def test_content_when_asked_redacted(
    exported: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(CAPTURE_CONTENT_ENV, "true")
    answer_a_call(make_request(f"my prompt with {KEY}"))
    attributes = dict(only(exported).attributes or {})
    sent = json.loads(str(attributes["gen_ai.input.messages"]))
    assert sent[-1]["parts"][0]["content"] == "my prompt with [REDACTED]"
    received = json.loads(str(attributes["gen_ai.output.messages"]))
    assert received[0]["parts"][0]["content"] == "the answer, [REDACTED]"
    assert KEY not in json.dumps(attributes)
