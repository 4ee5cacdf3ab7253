"""Proof of life for the jobs a worker holds.

Two things expire unless a live worker refreshes them:

* each job's lease (``l04:job:{id}:lease``), so a redelivered copy of a job that is still
  running waits instead of running twice, and takes over once the lease lapses;
* each held message's entry in kombu's ``unacked_index``: kombu's Redis transport puts a message
  back on its queue once its delivery time is older than ``visibility_timeout``. Refreshing the
  time keeps a live worker's long jobs from being handed out again; a dead worker stops
  refreshing, and its messages return to the queue within about one visibility timeout.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from redis.asyncio import Redis

from gateway_core.queues import REDIS_UNACKED_INDEX
from workers.job_store import WorkerJobStore

log = logging.getLogger(__name__)


class Heartbeat:
    def __init__(
        self,
        store: WorkerJobStore,
        broker_redis: Redis | None,
        worker_id: str,
        held_tags: Callable[[], list[str]],
        claimed: Callable[[], list[str]],
        on_lost: Callable[[list[str]], None],
        interval: float,
        lease_ms: int,
    ) -> None:
        self._store = store
        self._broker = broker_redis
        self._worker_id = worker_id
        self._held_tags = held_tags  # delivery tags of the messages this process holds
        self._claimed = claimed  # the jobs this process has claimed and runs now
        self._on_lost = on_lost  # told of jobs that ended or moved elsewhere: stop their calls
        self._interval = interval
        self._lease_ms = lease_ms

    async def beat(self) -> None:
        tags, claimed = self._held_tags(), self._claimed()
        if tags and self._broker is not None:
            await self._broker.zadd(REDIS_UNACKED_INDEX, dict.fromkeys(tags, time.time()), xx=True)
        if claimed:
            lost = await self._store.renew_leases(claimed, self._worker_id, self._lease_ms)
            # A job that ended here while the renewal was on its way is not lost: its lease is
            # gone because it is answered, and what it still does (the usage record) must run.
            still_claimed = set(self._claimed())
            lost = [job_id for job_id in lost if job_id in still_claimed]
            if lost:
                self._on_lost(lost)

    async def run_forever(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.beat()
            except Exception as exc:
                log.warning("heartbeat failed: %s", type(exc).__name__)
