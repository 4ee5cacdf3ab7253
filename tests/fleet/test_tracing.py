"""One trace per request (README "Tracing"): the real OTLP exporters of real worker and server
processes send to a real OTLP/HTTP receiver in the test; the caller's trace continues across the
queue, a redelivery after a SIGKILL, a failover, and the HTTP front door."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import redis
from opentelemetry.sdk.trace import TracerProvider

from gateway_client import GatewayError, ModelGateway
from gateway_core import keys
from l04.mock_upstream import REPLY
from l04.redis_server import LocalRedis
from tests.conftest import FAST_RECOVERY, make_request
from tests.fleet.test_providers_end_to_end import fleet_env
from tests.otlp_receiver import OtlpReceiver, ReceivedSpan
from tests.processes import MockUpstreamProcess, ServerProcess, WorkerProcess

CHAT = "/v1/chat/completions"
CALL = "chat gpt-4o-mini"

# The caller's own SDK, not the global one: a producer whose application traces (the test
# process's global provider stays the API's no-op, as for every other test).
caller_tracer = TracerProvider().get_tracer("the caller")


@pytest.fixture(scope="module")
def receiver() -> Iterator[OtlpReceiver]:
    server = OtlpReceiver().start()
    yield server
    server.stop()


def tracing_env(receiver: OtlpReceiver) -> dict[str, str]:
    return {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "50"}


@pytest.fixture(scope="module")
def fleet(
    redis_server: LocalRedis, upstream: MockUpstreamProcess, receiver: OtlpReceiver
) -> Iterator[tuple[WorkerProcess, ServerProcess]]:
    """One traced worker (OpenAI and Anthropic, on the mock upstream) and one traced
    ``l04 serve --no-auth`` for the module; the ``mock`` queue is left to the redelivery test."""
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    env = {**FAST_RECOVERY, **fleet_env(upstream), **tracing_env(receiver)}
    worker = WorkerProcess(redis_server.url, "openai,anthropic", 20, env).start()
    # The door exports only every 10 minutes: its spans arrive when SIGTERM's drain exports them.
    door_env = {**tracing_env(receiver), "OTEL_SERVICE_NAME": "door"}
    door_env["OTEL_BSP_SCHEDULE_DELAY"] = "600000"
    server = ServerProcess(redis_server.url, no_auth=True, env=door_env).start()
    yield worker, server
    server.stop(timeout=10)
    worker.stop(timeout=10)


@pytest.fixture
async def producer(redis_server: LocalRedis) -> AsyncIterator[ModelGateway]:
    gateway = ModelGateway(redis_url=redis_server.url)
    yield gateway
    await gateway.close()


def trace_id_of(span: Any) -> str:
    return format(span.get_span_context().trace_id, "032x")


def named(spans: list[ReceivedSpan], name: str) -> list[ReceivedSpan]:
    return [s for s in spans if s.name == name]


async def test_a_job_is_one_trace_from_the_caller_through_the_queue_to_the_provider(
    fleet: tuple[WorkerProcess, ServerProcess],
    producer: ModelGateway,
    receiver: OtlpReceiver,
    upstream: MockUpstreamProcess,
) -> None:
    upstream.reset()
    secret = "the caller's private prompt 5b1e"
    with caller_tracer.start_as_current_span("caller") as caller:
        handle = await producer.submit(make_request(secret, model_id="gpt-4o-mini"), stream=True)
        chunks = [chunk.content_delta async for chunk in handle.stream()]
    assert "".join(chunks) == REPLY
    trace_id = format(caller.get_span_context().trace_id, "032x")
    names = {"l04.job", "l04.queue", "l04.claim", "l04.cache.lookup", "l04.admission", CALL}
    spans = receiver.wait_for(trace_id, names)

    (job,) = named(spans, "l04.job")
    # The caller's span is the job's parent (the submit span is the API's no-op here: this
    # process set no global provider), every other span is the job's child.
    assert job.parent_span_id == format(caller.get_span_context().span_id, "016x")
    assert job.service == "l04-worker"
    assert job.attributes["l04.job_id"] == handle.job_id
    assert job.attributes["l04.outcome"] == "succeeded"
    assert job.status_code == 0
    for name in names - {"l04.job"}:
        assert all(s.parent_span_id == job.span_id for s in named(spans, name)), name
    (queued,) = named(spans, "l04.queue")
    assert queued.end_ns >= queued.start_ns and queued.attributes["l04.queue_ms"] >= 0
    (lookup,) = named(spans, "l04.cache.lookup")
    assert lookup.attributes["l04.cache.hit"] is False
    assert named(spans, "l04.admission")[0].attributes["l04.admission.deferred"] is False

    (call,) = named(spans, CALL)
    assert call.kind == 3  # CLIENT
    assert {k: v for k, v in call.attributes.items() if k.startswith("gen_ai.")} == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.response.model": "gpt-4o-mini",
        "gen_ai.usage.input_tokens": call.attributes["gen_ai.usage.input_tokens"],
        "gen_ai.usage.output_tokens": call.attributes["gen_ai.usage.output_tokens"],
        "gen_ai.response.finish_reasons": ("stop",),
    }
    assert call.attributes["gen_ai.usage.input_tokens"] > 0
    assert call.attributes["gen_ai.usage.output_tokens"] > 0
    ((event, fields),) = call.events
    assert event == "gen_ai.first_token" and fields["l04.time_to_first_token_ms"] >= 0
    # No prompt, no answer and no key anywhere in what was exported.
    exported = b"".join(receiver.bodies)
    for text in (secret, REPLY, "sk-"):
        assert text.encode() not in exported


async def test_a_cached_answer_and_a_failed_job_say_so_in_their_spans(
    fleet: tuple[WorkerProcess, ServerProcess],
    producer: ModelGateway,
    receiver: OtlpReceiver,
    upstream: MockUpstreamProcess,
) -> None:
    upstream.reset()
    request = make_request("asked twice", model_id="gpt-4o-mini")
    await producer.execute(request)
    with caller_tracer.start_as_current_span("caller") as caller:
        assert (await producer.execute(request)).cached
    spans = receiver.wait_for(trace_id_of(caller), {"l04.job", "l04.cache.lookup"})
    (lookup,) = named(spans, "l04.cache.lookup")
    assert (lookup.attributes["l04.cache.hit"], lookup.attributes["l04.cache.kind"]) == (
        True,
        "exact",
    )
    assert named(spans, "l04.job")[0].attributes["l04.outcome"] == "cached"
    assert named(spans, CALL) == []  # no provider call

    upstream.faults({"status": 400, "count": 1, "path": CHAT})  # rejected: E4201, no retry
    rejected = make_request("rejected", model_id="gpt-4o-mini")
    with (
        caller_tracer.start_as_current_span("caller") as caller,
        pytest.raises(GatewayError) as caught,
    ):
        await producer.execute(rejected)
    assert caught.value.code == "E4201"
    spans = receiver.wait_for(trace_id_of(caller), {"l04.job", CALL})
    for span in (named(spans, "l04.job")[0], named(spans, CALL)[0]):
        assert (span.status_code, span.status_message) == (2, "E4201")  # ERROR
        assert span.attributes["error.type"] == "E4201"
    assert named(spans, "l04.job")[0].attributes["l04.outcome"] == "failed"


async def test_a_failover_shows_both_attempts_in_the_trace(
    fleet: tuple[WorkerProcess, ServerProcess],
    producer: ModelGateway,
    receiver: OtlpReceiver,
    upstream: MockUpstreamProcess,
) -> None:
    upstream.reset()
    upstream.faults({"status": 503, "count": 3, "path": CHAT})  # OpenAI fails three calls
    request = make_request(
        "fail me over",
        model_id="gpt-4o-mini",
        routing={"fallback_models": ["claude-3-5-sonnet-20241022"]},
    )
    with caller_tracer.start_as_current_span("caller") as caller:
        response = await producer.execute(request)
    assert response.provider == "anthropic"
    trace_id = format(caller.get_span_context().trace_id, "032x")
    answer = f"chat {response.model_id}"
    spans = receiver.wait_for(trace_id, {"l04.job", CALL, answer})
    jobs = sorted(named(spans, "l04.job"), key=lambda s: s.start_ns)
    assert [j.attributes["l04.outcome"] for j in jobs] == ["failed-over", "succeeded"]
    # Both deliveries are children of the caller's span: siblings in one trace.
    assert {j.parent_span_id for j in jobs} == {format(caller.get_span_context().span_id, "016x")}
    failed = named(spans, CALL)
    assert len(failed) == 3  # the call and its two retries, siblings under the first delivery
    assert {s.parent_span_id for s in failed} == {jobs[0].span_id}
    assert all((s.status_code, s.attributes["error.type"]) == (2, "E4200") for s in failed)
    (answered,) = named(spans, answer)
    assert answered.parent_span_id == jobs[1].span_id
    assert answered.attributes["gen_ai.provider.name"] == "anthropic"
    # The worker's log lines about the job carry its trace.
    lines = [json.loads(line) for line in fleet[0].log().splitlines() if line.startswith("{")]
    over = [line for line in lines if "failing over" in line["message"]]
    assert over and over[0]["trace_id"] == trace_id and len(over[0]["span_id"]) == 16
    assert over[0]["job_id"] == response.job_id


def test_the_front_door_continues_an_incoming_traceparent(
    fleet: tuple[WorkerProcess, ServerProcess], receiver: OtlpReceiver
) -> None:
    _, server = fleet
    trace_id, parent = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    reply = httpx.post(
        f"{server.url}/v1/chat/completions",
        json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "via the door"}]},
        headers={"traceparent": f"00-{trace_id}-{parent}-01", "tracestate": "vendor=1"},
        timeout=30,
    )
    assert reply.status_code == 200, reply.text
    receiver.wait_for(trace_id, {"l04.job"})  # the worker's, at once
    assert {s.service for s in receiver.trace(trace_id)} == {"l04-worker"}
    server.stop(timeout=10)  # the door's, when it stops (this module's last use of it)
    spans = receiver.wait_for(trace_id, {"POST /v1/chat/completions", "l04.submit", "l04.job"})
    (submit,) = named(spans, "l04.submit")
    # FastAPI's own server span (a child of the incoming context) is above the submit.
    by_id = {s.span_id: s for s in spans}
    above = by_id[submit.parent_span_id]
    while above.parent_span_id in by_id:
        above = by_id[above.parent_span_id]
    assert (above.name, above.service, above.parent_span_id, above.kind) == (
        "POST /v1/chat/completions",
        "door",
        parent,
        2,  # SERVER
    )
    assert submit.attributes["gen_ai.request.model"] == "gpt-4o-mini"
    (job,) = named(spans, "l04.job")
    assert job.parent_span_id == submit.span_id and job.service == "l04-worker"
    assert job.attributes["l04.job_id"] == submit.attributes["l04.job_id"]
    # The door's access log line carries the caller's trace beside the job.
    lines = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
    (access,) = [line for line in lines if line.get("job_id") == job.attributes["l04.job_id"]]
    assert access["trace_id"] == trace_id


async def test_off_exports_nothing_and_a_redelivered_job_keeps_its_trace(
    fleet: tuple[WorkerProcess, ServerProcess],
    redis_server: LocalRedis,
    producer: ModelGateway,
    receiver: OtlpReceiver,
) -> None:
    """A worker with OTEL_SDK_DISABLED=true exports nothing (though an endpoint is set) yet
    keeps the caller's context in the record; killed with a job, the job's next delivery, on
    a traced worker, is in the caller's trace."""
    off = {**FAST_RECOVERY, **tracing_env(receiver), "OTEL_SDK_DISABLED": "true"}
    doomed = WorkerProcess(redis_server.url, "mock", 10, off).start()
    try:
        with caller_tracer.start_as_current_span("caller") as caller:
            first = await producer.execute(make_request("untraced"))
            slow = make_request("slow", metadata={"mock": {"latency_ms": 5_000}})
            handle = await producer.submit(slow)
        client = redis.Redis.from_url(redis_server.url)
        deadline = time.monotonic() + 10
        while client.hget(keys.job(handle.job_id), "state") != b"running":
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        record = client.hgetall(keys.job(handle.job_id))
        client.close()
        trace_id = format(caller.get_span_context().trace_id, "032x")
        assert record[b"traceparent"].decode().split("-")[1] == trace_id
        await asyncio.sleep(0.5)  # five export periods: a traced worker would have sent by now
        assert receiver.trace(trace_id) == [], "a worker with tracing off exported spans"
        assert "tracing on" not in doomed.log()
        assert first.attempt == 1
        doomed.kill()
    finally:
        doomed.stop()
    # No worker serves mock now: this job's deadline passes in the queue (nobody waits on it).
    with caller_tracer.start_as_current_span("late caller") as late_caller:
        late = await producer.submit(make_request("late", timeout=1.0))
    await asyncio.sleep(1.1)
    # Traced, two processes (each sets itself up), exporting only every 10 minutes: what it
    # recorded arrives because SIGTERM's drain exports it.
    on = {**off, "OTEL_SDK_DISABLED": "", "OTEL_BSP_SCHEDULE_DELAY": "600000"}
    traced = WorkerProcess(redis_server.url, "mock", 10, on, processes=2).start()
    try:
        # The lease lapses, the message comes back (visibility timeout), the traced worker runs it.
        response = await handle.result(timeout=30)
        assert response.attempt == 2
        await asyncio.sleep(0.3)
        assert receiver.trace(trace_id) == []  # still in the worker's buffer
    finally:
        traced.stop(timeout=10)
    spans = receiver.wait_for(trace_id, {"l04.job", "l04.queue", "l04.claim", "chat mock"}, 5)
    (delivery,) = named(spans, "l04.job")
    assert delivery.attributes["l04.attempt"] == 2
    assert delivery.attributes["l04.job_id"] == handle.job_id
    assert delivery.parent_span_id == format(caller.get_span_context().span_id, "016x")
    assert named(spans, "chat mock")[0].parent_span_id == delivery.span_id
    # The traced worker took the late job's message and its claim ended it: one span says so.
    (ended,) = receiver.wait_for(trace_id_of(late_caller), {"l04.job"}, 5)
    assert ended.parent_span_id == format(late_caller.get_span_context().span_id, "016x")
    assert ended.attributes["l04.job_id"] == late.job_id
    assert ended.attributes["l04.outcome"] == "expired"
    assert (ended.status_code, ended.attributes["error.type"]) == (2, "E4404")
