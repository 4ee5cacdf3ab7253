"""Moves deferred jobs back onto their queues when their rate-limit wait is over.

A job over a limit is parked in a sorted set by the time its wait ends (see
``WorkerJobStore.defer``), held by no worker and by no unacknowledged message. Every worker process
runs this mover; the release script takes each due job exactly once, whichever worker runs it.
"""

from __future__ import annotations

import asyncio
import logging

from workers.job_store import WorkerJobStore
from workers.requeue import Requeue

log = logging.getLogger(__name__)

POLL_INTERVAL_S = 0.05
#: After a failure (Redis away), wait this long, doubling up to the cap, and log once per outage.
FAILURE_BACKOFF_S = 0.5
FAILURE_BACKOFF_MAX_S = 5.0


class DeferredMover:
    def __init__(self, store: WorkerJobStore, requeue: Requeue) -> None:
        self._store = store
        self._requeue = requeue

    async def move_due(self) -> int:
        released = await self._store.release_due()
        if not self._requeue.in_script:
            for job_id, provider, priority in released:
                await self._requeue.publish(job_id, provider, priority)
        return len(released)

    async def run_forever(self) -> None:
        backoff = 0.0
        while True:
            try:
                moved = await self.move_due()
            except Exception as exc:
                if backoff == 0.0:
                    log.warning("moving deferred jobs failed: %s; retrying", type(exc).__name__)
                backoff = min(FAILURE_BACKOFF_MAX_S, max(FAILURE_BACKOFF_S, backoff * 2))
                await asyncio.sleep(backoff)
                continue
            if backoff:
                log.info("moving deferred jobs works again")
                backoff = 0.0
            if moved == 0:
                await asyncio.sleep(POLL_INTERVAL_S)
