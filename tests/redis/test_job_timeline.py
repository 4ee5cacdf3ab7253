"""A job's timeline through the two job stores' Python methods and its reader
(:mod:`gateway_core.job_timeline`), against a real redis-server with no worker: the ended entry
of every way a job ends, the cap, a record older than the timeline, the durations, and
``JobHandle.timeline`` (tests/redis/test_lua_scripts.py checks each script's own entry)."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from gateway_client.gateway import ModelGateway
from gateway_client.job_store import JobStore
from gateway_client.sync import SyncModelGateway
from gateway_core import keys
from gateway_core.errors import UnknownJob
from gateway_core.job_states import ClaimOutcome, FinishOutcome, JobState
from gateway_core.job_timeline import JobTrace, TimelineEntry, read_trace
from gateway_core.redis_pool import make_redis
from tests.conftest import make_request
from workers.job_store import WorkerJobStore

LEASE_MS = 5_000
ERROR = {"type": "error", "error": {"code": "E4201", "message": "rejected"}}


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = make_redis(redis_url)
    yield client
    await client.aclose()


async def create(redis: Redis, job_id: str, deadline_in: float = 60.0) -> None:
    await JobStore(redis).create(
        job_id,
        int((time.time() + 600) * 1000),
        {
            "request": "{}",
            "provider": "mock",
            "model": "mock-1",
            "queue": "l04.mock",
            "priority": "normal",
            "deadline": repr(time.time() + deadline_in),
        },
        queue_lists=[],
        max_depth=10,
    )


async def trace_of(redis: Redis, job_id: str) -> JobTrace:
    trace = await read_trace(redis, job_id)
    assert trace is not None
    return trace


async def test_a_job_run_to_its_end_has_every_step_and_its_durations(redis: Redis) -> None:
    worker = WorkerJobStore(redis)
    await create(redis, "j")
    assert (await worker.claim("j", "w1", LEASE_MS)).outcome is ClaimOutcome.RUN
    assert await worker.defer("j", "w1", 0, limit="tpm")
    assert await worker.release_due() == [("j", "mock", "normal")]
    assert (await worker.claim("j", "w1", LEASE_MS)).outcome is ClaimOutcome.RUN
    assert await worker.note("j", "w1", {"event": "retry", "code": "E4200", "call": 1})
    assert await worker.append("j", "w1", {"type": "chunk", "seq": 0, "delta": "a"}) == 0
    written = await worker.finish("j", "w1", JobState.FAILED, ERROR)
    assert written is FinishOutcome.WRITTEN

    trace = await trace_of(redis, "j")
    steps = [(e.event, e.details) for e in trace.entries]
    assert steps == [
        ("created", {"provider": "mock", "model": "mock-1", "queue": "l04.mock",
                     "priority": "normal"}),
        ("claimed", {"worker": "w1", "attempt": 1}),
        ("deferred", {"worker": "w1", "wait_ms": 0, "limit": "tpm"}),
        ("released", {}),
        ("claimed", {"worker": "w1", "attempt": 1}),  # a deferral gives its attempt back
        ("retry", {"worker": "w1", "code": "E4200", "call": 1}),
        ("first_chunk", {"worker": "w1", "attempt": 1}),
        ("ended", {"state": "failed", "code": "E4201", "worker": "w1"}),
    ]  # fmt: skip
    times = [e.t_ms for e in trace.entries]
    assert times == sorted(times) and times[0] == trace.created_ms
    assert (trace.state, trace.code) == ("failed", "E4201")
    assert trace.queue_wait_ms == times[1] - times[0]
    assert trace.first_chunk_ms == times[6] - times[0]
    assert trace.total_ms == times[7] - times[0]

    as_json = trace.to_json()
    assert json.loads(json.dumps(as_json)) == as_json
    assert as_json["total_ms"] == trace.total_ms and as_json["code"] == "E4201"
    assert [e["event"] for e in as_json["timeline"]][-1] == "ended"
    assert as_json["timeline"][0]["since_created_ms"] == 0

    text = trace.render().splitlines()
    assert text[0] == "job j: failed (E4201), now on mock:mock-1"
    assert "deferred" in text[3] and "limit=tpm" in text[3] and "wait_ms=0" in text[3]
    assert text[-1].startswith("queue wait ") and ", total " in text[-1]


async def test_every_way_to_end_writes_the_ended_step(redis: Redis) -> None:
    producer, worker = JobStore(redis), WorkerJobStore(redis, max_deliveries=1)
    await create(redis, "cancelled")
    await producer.cancel("cancelled", {"type": "error", "error": {"code": "E4405"}})
    await create(redis, "expired", deadline_in=-1)
    assert await producer.expire("expired") is FinishOutcome.WRITTEN
    await create(redis, "lost")
    assert (await worker.claim("lost", "w1", LEASE_MS)).outcome is ClaimOutcome.RUN
    await redis.delete(keys.job_lease("lost"))  # w1 died
    assert (await worker.claim("lost", "w2", LEASE_MS)).outcome is ClaimOutcome.LOST
    await create(redis, "answered")
    assert (await worker.claim("answered", "w1", LEASE_MS)).outcome is ClaimOutcome.RUN
    await worker.finish("answered", "w1", JobState.SUCCEEDED, {"type": "result", "response": {}})

    ended = {
        job_id: (await trace_of(redis, job_id)).entries[-1]
        for job_id in ("cancelled", "expired", "lost", "answered")
    }
    assert {job_id: e.details for job_id, e in ended.items()} == {
        "cancelled": {"state": "cancelled", "code": "E4405"},
        "expired": {"state": "expired", "code": "E4404"},
        "lost": {"state": "failed", "code": "E4206"},
        "answered": {"state": "succeeded", "worker": "w1"},
    }
    assert {e.event for e in ended.values()} == {"ended"}
    # Ended, the timeline expires with the record (the result TTL), not at the deadline's.
    assert 0 < await redis.ttl(keys.job_timeline("answered")) <= 3600


async def test_the_timeline_is_capped_keeping_its_first_and_latest_steps(redis: Redis) -> None:
    worker = WorkerJobStore(redis)
    await create(redis, "busy")
    assert (await worker.claim("busy", "w1", LEASE_MS)).outcome is ClaimOutcome.RUN
    for call in range(100):
        assert await worker.note("busy", "w1", {"event": "retry", "call": call})
    assert await redis.llen(keys.job_timeline("busy")) == 64
    trace = await trace_of(redis, "busy")
    assert trace.dropped == 102 - 64
    assert [e.event for e in trace.entries[:2]] == ["created", "claimed"]
    calls = [e.details["call"] for e in trace.entries[2:]]
    assert calls == [*range(6), *range(100 - 56, 100)]
    assert "38 steps dropped" in trace.render()


async def test_a_record_without_a_timeline_still_tells_its_times(redis: Redis) -> None:
    now = int(time.time() * 1000)
    times = {"created_ms": now, "started_ms": now + 5, "finished_ms": now + 9}
    fields = {"state": "succeeded", "provider": "mock", "model": "m"}
    await redis.hset(keys.job("old"), mapping={**times, **fields})
    trace = await trace_of(redis, "old")
    assert trace.entries == (
        TimelineEntry(now, "created", {}),
        TimelineEntry(now + 5, "claimed", {}),
        TimelineEntry(now + 9, "ended", {"state": "succeeded"}),
    )
    assert (trace.queue_wait_ms, trace.total_ms, trace.first_chunk_ms) == (5, 9, None)


async def test_no_record_no_trace(redis: Redis) -> None:
    await redis.rpush(keys.job_timeline("gone"), json.dumps({"t": 1, "event": "created"}))
    assert await read_trace(redis, "gone") is None


async def test_a_handle_gives_its_timeline_until_its_record_expires(
    gateway: ModelGateway, redis: Redis
) -> None:
    handle = await gateway.submit(make_request(), job_id="handled")
    trace = await handle.timeline()
    assert [e.event for e in trace.entries] == ["created"]
    assert trace.entries[0].details["model"] == trace.model
    await redis.delete(keys.job("handled"))
    with pytest.raises(UnknownJob):
        await handle.timeline()


def test_a_sync_handle_gives_its_timeline_too(redis_url: str) -> None:
    with SyncModelGateway(redis_url=redis_url) as gateway:
        handle = gateway.submit(make_request(), job_id="synced")
        assert [e.event for e in handle.timeline().entries] == ["created"]
        assert handle.cancel()
        ended = handle.timeline().entries[-1]
        assert (ended.event, ended.details) == ("ended", {"state": "cancelled", "code": "E4405"})


async def test_a_garbled_entry_is_left_out(redis: Redis) -> None:
    """Entries no script writes (JSON's Infinity, a number past a float, not JSON, not an
    object) are skipped; the others are read."""
    await create(redis, "garbled")
    for raw in ['{"t": Infinity, "event": "x"}', '{"t": 1e400, "event": "x"}', "{", "[1]"]:
        await redis.rpush(keys.job_timeline("garbled"), raw)
    trace = await trace_of(redis, "garbled")
    assert [e.event for e in trace.entries] == ["created"]
    assert "created" in trace.render()


async def test_a_job_its_claim_ended_gives_its_trace_context_and_code(redis: Redis) -> None:
    """What the worker traces of a delivery its claim ended (workers/pipeline.py)."""
    worker = WorkerJobStore(redis)
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    await create(redis, "late", deadline_in=-1)
    await redis.hset(keys.job("late"), mapping={"traceparent": traceparent, "tracestate": "v=1"})
    assert (await worker.claim("late", "w1", LEASE_MS)).outcome is ClaimOutcome.EXPIRED
    assert await worker.ended_trace("late") == (traceparent, "v=1", "E4404")
    await create(redis, "untraced")  # no context, not ended: nothing to say
    assert await worker.ended_trace("untraced") == ("", "", None)
