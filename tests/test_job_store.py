"""The job store's transitions, driven directly against a real redis-server (no worker)."""

from __future__ import annotations

import time

from gateway_client.job_store import JobStore
from gateway_client.redis_pool import make_redis


async def test_a_worker_repeating_its_finish_is_told_it_wrote_the_answer(redis_url: str) -> None:
    """A finish whose reply was lost is sent again by the same worker (workers/events.py): it
    must learn that its answer is the job's, or it skips the job's usage record."""
    redis = make_redis(redis_url)
    store = JobStore(redis)
    try:
        expire_at_ms = int((time.time() + 60) * 1000)
        fields = {"request": "{}", "deadline": repr(time.time() + 60), "provider": "mock"}
        assert await store.create("j1", expire_at_ms, fields, queue_lists=[], max_depth=10) == (
            "created"
        )
        claim = await store.claim("j1", "worker-a", 5000)
        assert claim.outcome == "run"
        event = {"type": "result", "response": {}}
        first = await store.finish(
            "j1", mode="worker", state="succeeded", event=event, owner="worker-a"
        )
        again = await store.finish(
            "j1", mode="worker", state="succeeded", event=event, owner="worker-a"
        )
        other = await store.finish(
            "j1", mode="worker", state="succeeded", event=event, owner="worker-b"
        )
        assert (first, again, other) == (1, 1, 0)
        events = await store.events_after("j1")
        assert [e.type for e in events] == ["result"]  # one answer, however often it was sent
    finally:
        await redis.aclose()
