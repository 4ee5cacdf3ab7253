"""The job store's transitions, driven directly against a real redis-server (no worker)."""

from __future__ import annotations

import time

from gateway_client.job_store import JobStore
from gateway_core.job_states import ClaimOutcome, FinishOutcome, JobState
from gateway_core.redis_pool import make_redis
from workers.job_store import WorkerJobStore


async def test_a_worker_repeating_its_finish_is_told_it_wrote_the_answer(redis_url: str) -> None:
    """A finish whose reply was lost is sent again by the same worker (workers/events.py): it
    must learn that its answer is the job's, or it skips the job's usage record."""
    redis = make_redis(redis_url)
    store = JobStore(redis)
    worker = WorkerJobStore(redis)
    try:
        expire_at_ms = int((time.time() + 60) * 1000)
        fields = {"request": "{}", "deadline": repr(time.time() + 60), "provider": "mock"}
        assert await store.create("j1", expire_at_ms, fields, queue_lists=[], max_depth=10) == (
            "created"
        )
        claim = await worker.claim("j1", "worker-a", 5000)
        assert claim.outcome is ClaimOutcome.RUN
        event = {"type": "result", "response": {}}
        first = await worker.finish("j1", "worker-a", JobState.SUCCEEDED, event)
        again = await worker.finish("j1", "worker-a", JobState.SUCCEEDED, event)
        other = await worker.finish("j1", "worker-b", JobState.SUCCEEDED, event)
        assert (first, again, other) == (
            FinishOutcome.WRITTEN,
            FinishOutcome.WRITTEN,
            FinishOutcome.ENDED,
        )
        events = await store.events_after("j1")
        assert [e.type for e in events] == ["result"]  # one answer, however often it was sent
    finally:
        await redis.aclose()
