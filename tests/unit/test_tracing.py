"""Tracing's pieces without a fleet: the W3C context kept with a job, the GenAI attributes, the
switches (README "Tracing")."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    StatusCode,
    TraceFlags,
    TraceState,
    set_span_in_context,
)

from config import tracing
from gateway_client import gateway as gateway_module
from gateway_client.gateway import ModelGateway
from gateway_core import genai_attributes as genai
from gateway_core.errors import InvalidRequest
from gateway_core.trace_context import context_from, current_fields
from gateway_http.tracing import TraceContextMiddleware
from tests.conftest import make_request

TRACE_ID = 0x4BF92F3577B34DA6A3CE929D0E0E4736
SPAN_ID = 0x00F067AA0BA902B7
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_no_current_span_stores_nothing() -> None:
    assert current_fields() == {}


def test_the_current_span_is_stored_as_w3c_fields_and_read_back() -> None:
    state = TraceState([("vendor", "1")])
    span = NonRecordingSpan(SpanContext(TRACE_ID, SPAN_ID, True, TraceFlags(1), state))
    fields = current_fields(set_span_in_context(span))
    assert fields == {"traceparent": TRACEPARENT, "tracestate": "vendor=1"}
    context = context_from(fields)
    assert context is not None
    from opentelemetry.trace import get_current_span

    read = get_current_span(context).get_span_context()
    assert (read.trace_id, read.span_id, read.is_remote) == (TRACE_ID, SPAN_ID, True)
    assert read.trace_state.get("vendor") == "1"


def test_a_recording_span_of_the_callers_own_sdk_is_stored() -> None:
    tracer = TracerProvider().get_tracer("caller")
    with tracer.start_as_current_span("caller") as span:
        fields = current_fields()
    ids = span.get_span_context()
    flags = int(ids.trace_flags)
    assert fields["traceparent"] == f"00-{ids.trace_id:032x}-{ids.span_id:016x}-{flags:02x}"


def test_missing_or_malformed_context_is_none() -> None:
    assert context_from({}) is None
    assert context_from({"traceparent": ""}) is None
    assert context_from({"traceparent": "00-not-a-trace-01"}) is None
    assert context_from({"traceparent": "00-" + "0" * 32 + "-" + "0" * 16 + "-01"}) is None


def test_the_sdk_is_requested_by_the_standard_variables_only() -> None:
    assert not tracing.requested({})
    assert tracing.requested({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"})
    assert tracing.requested({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"})
    assert not tracing.requested(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "TRUE"}
    )
    assert tracing.requested(
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "false"}
    )
    assert not tracing.enabled()  # this test process never set the SDK up


def test_traces_exporter_none_keeps_tracing_off() -> None:
    """OTEL_TRACES_EXPORTER=none: no traces, even with the endpoint set for metrics or logs."""
    endpoint = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}
    assert not tracing.requested({**endpoint, "OTEL_TRACES_EXPORTER": "none"})
    assert not tracing.requested({**endpoint, "OTEL_TRACES_EXPORTER": " None "})
    assert tracing.requested({**endpoint, "OTEL_TRACES_EXPORTER": "otlp"})


def test_genai_attributes_name_the_call_and_its_answer() -> None:
    op = genai.operation("chat")
    assert genai.span_name(op, "gpt-4o-mini") == "chat gpt-4o-mini"
    assert genai.operation("embed") == "embeddings"
    assert genai.request_attributes(op, "openai", "gpt-4o-mini") == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o-mini",
    }
    assert genai.request_attributes(op, "google", "gemini-2.0-flash")["gen_ai.provider.name"] == (
        "gcp.gemini"
    )
    assert genai.response_attributes("gpt-4o-mini", 12, 7, "length") == {
        "gen_ai.response.model": "gpt-4o-mini",
        "gen_ai.usage.input_tokens": 12,
        "gen_ai.usage.output_tokens": 7,
        "gen_ai.response.finish_reasons": ("length",),
    }
    # Embeddings: no output tokens, no finish reason.
    assert genai.response_attributes("text-embedding-3-small", 5, None, None) == {
        "gen_ai.response.model": "text-embedding-3-small",
        "gen_ai.usage.input_tokens": 5,
    }


def test_content_is_captured_only_when_asked_and_then_redacted() -> None:
    assert not genai.capture_content({})
    assert not genai.capture_content({genai.CAPTURE_CONTENT_ENV: "false"})
    assert genai.capture_content({genai.CAPTURE_CONTENT_ENV: "True"})
    key = "sk-proj-abcdefghijklmnop"
    (value,) = genai.input_messages([("user", f"my key is {key}, hello")]).values()
    assert json.loads(str(value)) == [
        {"role": "user", "parts": [{"type": "text", "content": "my key is [REDACTED], hello"}]}
    ]
    (value,) = genai.output_messages(f"echo {key}", "stop").values()
    assert key not in str(value) and "[REDACTED]" in str(value)


async def test_the_door_makes_an_incoming_traceparent_current_for_the_submit() -> None:
    seen: list[dict[str, str]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(current_fields())

    door = TraceContextMiddleware(app)
    headers = [(b"traceparent", TRACEPARENT.encode()), (b"tracestate", b"vendor=1")]
    await door({"type": "http", "headers": headers}, None, None)
    await door({"type": "http", "headers": [(b"traceparent", b"garbage")]}, None, None)
    await door({"type": "http", "headers": []}, None, None)
    assert seen == [{"traceparent": TRACEPARENT, "tracestate": "vendor=1"}, {}, {}]
    assert current_fields() == {}  # detached after the request


def _in_a_process(env: dict[str, str], code: str) -> str:
    """Run ``code`` in a fresh interpreter (the SDK is set up once per process) with ``env``."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run(
        [sys.executable, "-c", code],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return done.stdout.strip()


SETUP = """
import sys
from config import tracing
on = tracing.setup_tracing("l04-worker")
import gateway_client, gateway_http.app, workers.pipeline
print(on, tracing.enabled(), "opentelemetry.sdk.trace" in sys.modules)
if on:
    from opentelemetry import trace
    provider = trace.get_tracer_provider()
    print(provider.sampler.get_description(), provider.resource.attributes["service.name"])
    tracing.shutdown_tracing()
"""


def test_off_the_sdks_tracing_is_not_even_imported() -> None:
    assert _in_a_process({}, SETUP) == "False False False"
    disabled = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9", "OTEL_SDK_DISABLED": "true"}
    assert _in_a_process(disabled, SETUP) == "False False False"


def test_on_the_sdk_reads_the_sampler_and_the_service_name_from_the_environment() -> None:
    endpoint = {"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:9/v1/traces"}
    assert _in_a_process(endpoint, SETUP).splitlines() == [
        "True True True",
        "ParentBased{root:AlwaysOnSampler,remoteParentSampled:AlwaysOnSampler,"
        "remoteParentNotSampled:AlwaysOffSampler,localParentSampled:AlwaysOnSampler,"
        "localParentNotSampled:AlwaysOffSampler} l04-worker",
    ]
    chosen = {
        **endpoint,
        "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": "0.01",
        "OTEL_SERVICE_NAME": "gateway-eu",
    }
    description, service = _in_a_process(chosen, SETUP).splitlines()[1].rsplit(" ", 1)
    assert description.startswith("ParentBased{root:TraceIdRatioBased{0.01}")
    assert service == "gateway-eu"
    named = {**endpoint, "OTEL_RESOURCE_ATTRIBUTES": "service.name=from-resource"}
    assert _in_a_process(named, SETUP).splitlines()[1].endswith(" from-resource")


def test_a_malformed_sdk_setting_leaves_tracing_off_and_says_why() -> None:
    """The process runs on (tracing is a view of the fleet, not its work), with one error line
    naming the cause; a resource attribute that merely contains ``service.name`` in its key
    does not count as naming the service."""
    code = SETUP.replace(
        "import sys\n", "import logging, sys\nlogging.basicConfig(stream=sys.stdout)\n", 1
    )
    endpoint = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"}
    bad = {**endpoint, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "0"}
    printed = _in_a_process(bad, code).splitlines()
    assert printed[-1] == "False False True"
    assert "tracing off: the OTEL_* settings are refused by the SDK" in printed[0]
    other = {**endpoint, "OTEL_RESOURCE_ATTRIBUTES": "foo.service.name=x"}
    assert _in_a_process(other, SETUP).splitlines()[1].endswith(" l04-worker")


SHUTDOWN = """
import time
from opentelemetry import trace
from config import tracing
tracing.setup_tracing("l04-worker")
with trace.get_tracer("test").start_as_current_span("last job"):
    pass
started = time.monotonic()
tracing.shutdown_tracing()
print(round(time.monotonic() - started, 1))
"""


def test_a_hung_collector_holds_the_exit_for_a_bounded_time() -> None:
    """A collector that takes the connection and never answers (down behind a proxy, or hung):
    the SDK alone would wait for the exporter's timeout per batch, up to 30 s; a stopping
    process waits SHUTDOWN_WAIT_S at most and exits without the last spans."""
    with socket.socket() as hung:
        hung.bind(("127.0.0.1", 0))
        hung.listen(8)  # the kernel completes the connection; nobody ever reads or answers
        endpoint = f"http://127.0.0.1:{hung.getsockname()[1]}"
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_EXPORTER_OTLP_TIMEOUT": "20"}
        waited = float(_in_a_process(env, SHUTDOWN))
    assert waited <= tracing.SHUTDOWN_WAIT_S + 1


async def test_a_refused_submit_has_its_code_as_the_status(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Refused before anything reaches Redis (a job id out of the pattern): E4500, as the
    README's spans say, not the exception's type and message (a message is for people)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(gateway_module, "_tracer", provider.get_tracer("test"))
    client = ModelGateway(redis_url="redis://127.0.0.1:9/0")
    try:
        with pytest.raises(InvalidRequest):
            await client.submit(make_request(), job_id="not a job id!")
    finally:
        await client.close()
    (span,) = exporter.get_finished_spans()
    assert span.name == "l04.submit"
    assert span.status.status_code is StatusCode.ERROR
    assert (span.status.description, span.attributes["error.type"]) == ("E4500", "E4500")
