"""A queued job whose message vanished from its queue is answered within L04_ORPHAN_AFTER, not
at its deadline: a real worker's orphan sweeper puts the message back (workers/orphans.py)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable

import redis

from gateway_client import ModelGateway
from gateway_core.queues import redis_priority_lists
from tests.conftest import make_request
from tests.processes import WorkerProcess

ORPHAN_AFTER = 4.0


async def test_a_job_whose_message_was_removed_by_hand_is_answered_within_the_bound(
    gateway: ModelGateway,
    start_worker: Callable[..., WorkerProcess],
    redis_client: redis.Redis,
) -> None:
    # No worker yet: the jobs wait on their queue, and one's message is removed by hand.
    lost = await gateway.submit(make_request("my message is lost", timeout=30))
    kept = await gateway.submit(make_request("mine is not", timeout=30))
    removed = 0
    for name in redis_priority_lists("l04.mock"):
        for raw in redis_client.lrange(name, 0, -1):
            if json.loads(raw)["headers"]["id"] == lost.job_id:
                removed += redis_client.lrem(name, 1, raw)
    assert removed == 1
    assert (await lost.status()).state == "queued"

    worker = start_worker("mock", env={"L04_ORPHAN_AFTER": str(ORPHAN_AFTER)})
    ready = time.monotonic()
    answer = await asyncio.wait_for(lost.result(), ORPHAN_AFTER + 2)  # the deadline is 30 s
    waited = time.monotonic() - ready
    assert answer.content and waited < ORPHAN_AFTER, waited
    assert (await kept.result(timeout=5)).content
    status = await lost.status()
    assert status.state == "succeeded" and status.attempt == 1
    assert redis_client.hget(f"l04:job:{{{lost.job_id}}}", "orphaned") == b"1"
    assert f"job {lost.job_id}: its queue message was lost; put back on l04.mock" in worker.log()
