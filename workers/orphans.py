"""The orphan sweeper: a queued job whose message the Redis broker lost goes back on its queue.

Submit writes a job's record and pushes its message in one script, and so does every transition
that puts a job back on a queue, so a job whose record says ``queued`` has its message on a
queue list or in kombu's ``unacked`` hash (where kombu records each message it hands a worker).
Only the broker's own failures break that: a Redis restart without fsync, an operator's ``DEL``
of a list, a bug, a worker on kombu's stock transport killed between its ``BRPOP`` and recording
the message (the fleet's intake takes one in a script). Such a job would wait, unserved, for its
deadline.

Every worker process runs :meth:`OrphanSweeper.run_forever`; one sweep at a time runs across the
fleet, under a lease in Redis (``keys.ORPHAN_SWEEPER``) that lasts one period,
``L04_ORPHAN_AFTER / 4``: whichever worker takes it sweeps, and none sweeps again until it
lapses. A sweep:

1. reads the index of queued jobs (``keys.QUEUED_JOBS``, kept by the scripts that queue a job
   and the claim that takes it) for the jobs queued at least one period ago
   (``orphan_candidates.lua``);
2. puts them in a scratch set on the broker's Redis and strikes off each job whose message it
   finds, chunk by chunk, on every queue list and then in ``unacked`` (``orphan_scan.lua``),
   stopping as soon as none is left: in a healthy fleet it reads until it has found them all;
3. judges the rest (``orphan_check.lua``): a job the last sweep missed too is an orphan; missed
   for the first time, a suspect; no longer queued, out of the index;
4. puts each orphan back on its queue with a fresh message (its list's bell rung, so an idle
   worker wakes for it), or fails it with ``E4206`` if its message was lost once before or none
   can be built for it (``orphan_requeue.lua``, which writes the terminal event as every other
   transition does, so its caller is told at once).

Why two sweeps: the lists are read one after the other while workers take messages (into
``unacked``, ``intake_take.lua``) and kombu restores a dead worker's (back onto a list), so one
sweep can miss a message in passing; a period later it finds it. Reading the lists before
``unacked`` makes the common move (a take) safe within one sweep; only a restore can slip past.
Should a message be put back that was not lost after all, the duplicate is harmless: a job's
claim lets one delivery run it, and any other finds it running or ended and is acknowledged
(``job_claim.lua``).

The bound: a job whose message goes missing is put back within ``L04_ORPHAN_AFTER``. A sweep
starts at most a period and a poll (a quarter of a period) after the previous one ended; the
first that counts the job missing comes at most that long after its message went missing or
after it had been queued a period, whichever is later, and the second that long after the
first: 3.5 periods at most, 7/8 of ``L04_ORPHAN_AFTER``, plus the two sweeps' own time.

With a Redis broker other than the job-state Redis, the scan runs on the broker and the message
is published through Celery after the script (as a deferred job's is); the sweeper does not run
with RabbitMQ (README, "A message the broker lost").
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from dataclasses import dataclass, field

from redis.asyncio import Redis

from gateway_core import keys, metrics
from gateway_core.job_records import text
from gateway_core.job_states import OrphanOutcome
from gateway_core.lua_scripts import register
from gateway_core.queues import PROVIDERS, REDIS_UNACKED, all_redis_priority_lists, queue_name
from gateway_core.request import Priority
from workers.job_store import WorkerJobStore
from workers.requeue import Requeue

log = logging.getLogger(__name__)

#: Values one scan call reads (a list chunk, or an HSCAN count), about 1 KB each: ~2 ms a call.
SCAN_CHUNK = 500
#: Job ids per index page, per SADD into the scratch set and per SSCAN.
ID_CHUNK = 1000
#: Job ids per judging call (a few commands each: about 2 ms of Redis a call).
JUDGE_CHUNK = 250
#: Times a job whose message was lost is put back before the next loss fails it (E4206).
REQUEUES_ALLOWED = 1
#: After a failure (Redis away), wait this long, doubling up to the cap, and log once per outage.
FAILURE_BACKOFF_S = 0.5
FAILURE_BACKOFF_MAX_S = 5.0


@dataclass
class SweepReport:
    """What one sweep saw and did."""

    looked_for: int = 0  # queued jobs old enough to be looked for
    missing: int = 0  # of which this sweep found no message
    requeued: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    fenced: bool = False  # another sweeper took the lease meanwhile: nothing acted on


class OrphanSweeper:
    def __init__(
        self,
        store: WorkerJobStore,
        broker_redis: Redis,
        requeue: Requeue,
        orphan_after: float,
    ) -> None:
        self._store = store
        self._redis = store.redis
        self._broker = broker_redis
        self._requeue = requeue
        self.period = orphan_after / 4
        self._period_ms = max(1, int(self.period * 1000))
        self._candidates_page = register(self._redis, "workers", "orphan_candidates")
        self._scan = register(broker_redis, "workers", "orphan_scan")

    async def try_sweep(self) -> SweepReport | None:
        """Sweep if no other worker has within a period (takes the lease); None if not."""
        token = uuid.uuid4().hex
        taken = await self._redis.set(keys.ORPHAN_SWEEPER, token, nx=True, px=self._period_ms)
        return await self.sweep(token) if taken else None

    async def sweep(self, token: str) -> SweepReport:
        started = time.monotonic()
        report = SweepReport()
        candidates = await self._candidates()
        report.looked_for = len(candidates)
        missing = await self._unseen(candidates, token) if candidates else []
        report.missing = len(missing)
        orphans = await self._judge(missing, token)
        if orphans is None:
            report.fenced = True
        else:
            for job_id, provider, priority in orphans:
                outcome = await self._act(job_id, provider, priority, token)
                if outcome is OrphanOutcome.FENCED:
                    report.fenced = True
                    break
                if outcome is OrphanOutcome.REQUEUED:
                    report.requeued.append(job_id)
                elif outcome is OrphanOutcome.FAILED:
                    report.failed.append(job_id)
        elapsed = time.monotonic() - started
        if report.missing or report.fenced:
            log.info(
                "orphan sweep: %d queued jobs looked for, %d without a message, %d requeued, "
                "%d failed%s, %.3f s",
                report.looked_for,
                report.missing,
                len(report.requeued),
                len(report.failed),
                " (fenced: another sweeper took over)" if report.fenced else "",
                elapsed,
            )
        if elapsed > self.period / 2:
            log.warning(
                "orphan sweep over %d queued jobs took %.1f s, more than half its period (%.1f s):"
                " raise L04_ORPHAN_AFTER",
                report.looked_for,
                elapsed,
                self.period,
            )
        return report

    async def _candidates(self) -> list[str]:
        """The jobs of the index queued at least one period ago (``orphan_candidates.lua``)."""
        found: list[str] = []
        last, score = "", ""
        while True:
            page = [
                text(v)
                for v in await self._candidates_page(
                    keys=[keys.QUEUED_JOBS], args=[self._period_ms, last, score, ID_CHUNK]
                )
            ]
            score, ids = page[0], page[1:]
            found += ids
            if len(ids) < ID_CHUNK:
                return list(dict.fromkeys(found))  # a page after a claim may read some again
            last = ids[-1]

    async def _unseen(self, candidates: list[str], token: str) -> list[str]:
        """The candidates whose message is on no queue list and not in ``unacked``."""
        scratch = f"{keys.orphan_sweep(token)}:unseen"
        ttl_ms = max(60_000, 10 * self._period_ms)
        try:
            async with self._broker.pipeline(transaction=False) as pipe:
                for i in range(0, len(candidates), ID_CHUNK):
                    pipe.sadd(scratch, *candidates[i : i + ID_CHUNK])
                pipe.pexpire(scratch, ttl_ms)
                await pipe.execute()
            left = len(candidates)
            # Lists first, then unacked: a message popped meanwhile is found in unacked.
            places = [("list", name) for name in all_redis_priority_lists()]
            for kind, key in [*places, ("hash", REDIS_UNACKED)]:
                where = "0"
                while where and left:
                    where, _, left = await self._scan(
                        keys=[scratch, key], args=[kind, where, SCAN_CHUNK]
                    )
                    where, left = text(where), int(left)
                if not left:
                    return []
            unseen: list[str] = []
            cursor = 0
            while True:
                cursor, members = await self._broker.sscan(scratch, cursor, count=ID_CHUNK)
                unseen += [text(m) for m in members]
                if cursor == 0:
                    return sorted(set(unseen))
        finally:
            await self._broker.delete(scratch)

    async def _judge(self, missing: list[str], token: str) -> list[tuple[str, str, str]] | None:
        """The orphans among ``missing`` (missed by the last sweep too); None when fenced."""
        orphans: list[tuple[str, str, str]] = []
        chunks = [missing[i : i + JUDGE_CHUNK] for i in range(0, len(missing), JUDGE_CHUNK)]
        chunks = chunks or [[]]
        for n, chunk in enumerate(chunks):
            judged = await self._store.check_orphans(
                token,
                chunk,
                min_age_ms=self._period_ms,
                suspects_ttl_ms=3 * self._period_ms + 60_000,
                last=n == len(chunks) - 1,
            )
            if judged is None:
                return None
            orphans += judged
        return orphans

    async def _act(self, job_id: str, provider: str, priority: str, token: str) -> OrphanOutcome:
        """Put the orphan back on its queue, or fail it (E4206) where it cannot be."""
        buildable = provider in PROVIDERS and priority in {p.value for p in Priority}
        message, push_to = (
            self._requeue.message(job_id, provider, priority) if buildable else ("", "")
        )
        outcome = await self._store.requeue_orphan(
            job_id,
            token,
            min_age_ms=self._period_ms,
            requeues_allowed=REQUEUES_ALLOWED if buildable else 0,
            message=message,
            push_to=push_to,
        )
        if outcome is OrphanOutcome.REQUEUED:
            if not self._requeue.in_script:
                await self._requeue.publish(job_id, provider, priority)
            log.warning(
                "job %s: its queue message was lost; put back on %s", job_id, queue_name(provider)
            )
        elif outcome is OrphanOutcome.FAILED:
            log.error("job %s: its queue message was lost again; failed with E4206", job_id)
        if outcome in (OrphanOutcome.REQUEUED, OrphanOutcome.FAILED):
            metrics.ORPHANED_JOBS.labels(outcome.value).inc()
        return outcome

    async def run_forever(self) -> None:
        """Every worker: try for the lease four times a period; sweep when it is had."""
        backoff = 0.0
        while True:
            await asyncio.sleep(backoff or self.period / 4)
            try:
                await self.try_sweep()
            except Exception as exc:
                if backoff == 0.0:
                    log.warning("orphan sweep failed: %s; retrying", type(exc).__name__)
                backoff = min(FAILURE_BACKOFF_MAX_S, max(FAILURE_BACKOFF_S, backoff * 2))
                continue
            if backoff:
                log.info("orphan sweeps work again")
                backoff = 0.0
