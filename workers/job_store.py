"""The worker's transitions of a job: claim, append, finish, renew, defer, release, hand off,
and the orphan sweeper's requeue.

Each is one script in ``workers/lua/``; the state machine is drawn in
:mod:`gateway_core.job_states`. A worker holds a job only under its lease: every transition but
the claim checks that the lease is still this worker's, so a worker that lost a job (its lease
lapsed and another took it) can no longer write to it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from gateway_core import keys
from gateway_core.job_records import JobKind, JobRecords, compact_json, finish_outcome, text
from gateway_core.job_states import ClaimOutcome, FinishOutcome, JobState, OrphanOutcome
from gateway_core.job_timeline import parse_entry
from gateway_core.lua_scripts import register

# Claims of one job past which it fails with E4206 (L04_MAX_DELIVERIES).
DEFAULT_MAX_DELIVERIES = 10


@dataclass(frozen=True, slots=True)
class Claim:
    """What a worker learns when it claims a job (all but ``outcome`` only when it is RUN)."""

    outcome: ClaimOutcome
    attempt: int = 0
    request_json: str = ""
    provider: str = ""
    model: str = ""
    stream: bool = False
    deadline: float = 0.0
    created_ms: int = 0
    events_so_far: int = 0
    started_ms: int = 0
    detail: str = ""
    chain: tuple[str, ...] = ()  # the models that may answer, in order
    priority: str = "normal"
    kind: JobKind = JobKind.CHAT
    key_id: str | None = None  # the virtual key it was submitted with (its limits apply)
    traceparent: str = ""  # the caller's W3C trace context ('' for none)
    tracestate: str = ""


class WorkerJobStore(JobRecords):
    """The worker's side of the job store, bound to one Redis client."""

    def __init__(
        self,
        redis: Redis,
        *,
        max_deliveries: int = DEFAULT_MAX_DELIVERIES,
        index_queued: bool = False,
        **options: Any,
    ) -> None:
        """``index_queued``: record the jobs put back on a queue (release, hand-off) in the index
        of queued jobs that the orphan sweeper reads: for a Redis broker, where it runs."""
        super().__init__(redis, **options)
        self.max_deliveries = max_deliveries
        self.index_queued = index_queued
        self._claim = register(redis, "workers", "job_claim")
        self._append = register(redis, "workers", "job_append")
        self._finish = register(redis, "workers", "job_finish")
        self._renew = register(redis, "workers", "job_renew")
        self._defer = register(redis, "workers", "job_defer")
        self._release = register(redis, "workers", "job_release")
        self._hand_off = register(redis, "workers", "job_hand_off")
        self._note = register(redis, "workers", "job_note")
        self._orphan_check = register(redis, "workers", "orphan_check")
        self._orphan_requeue = register(redis, "workers", "orphan_requeue")

    async def claim(self, job_id: str, worker_id: str, lease_ms: int) -> Claim:
        raw = await self._transition(
            self._claim,
            [*self.job_keys(job_id), keys.QUEUED_JOBS],
            [
                worker_id,
                lease_ms,
                keys.job_channel(job_id),
                self.result_ttl,
                self.max_deliveries,
                job_id,
            ],
        )
        parts = [text(p) for p in raw]
        outcome = ClaimOutcome(parts[0])
        if outcome is not ClaimOutcome.RUN:
            return Claim(outcome=outcome, detail=parts[1] if len(parts) > 1 else "")
        return Claim(
            outcome=outcome,
            attempt=int(parts[1]),
            request_json=parts[2],
            provider=parts[3],
            model=parts[4],
            stream=parts[5] == "1",
            deadline=float(parts[6]),
            created_ms=int(parts[7] or 0),
            events_so_far=int(parts[8]),
            started_ms=int(parts[9]),
            chain=tuple(json.loads(parts[10])),
            priority=parts[11],
            kind=JobKind(parts[12]),
            key_id=parts[13] or None,
            traceparent=parts[14] if len(parts) > 14 else "",
            tracestate=parts[15] if len(parts) > 15 else "",
        )

    async def append(self, job_id: str, worker_id: str, event: dict[str, Any]) -> int:
        """The event's n; -1 if the job is no longer running, -2 if another worker holds it."""
        result = await self._append(
            keys=self.job_keys(job_id),
            args=[worker_id, keys.job_channel(job_id), compact_json(event)],
        )
        return int(result)

    async def finish(
        self, job_id: str, owner: str, state: JobState, event: dict[str, Any]
    ) -> FinishOutcome:
        """Write the job's terminal event: WRITTEN (also when this worker wrote it already),
        ENDED (it ended otherwise), or FENCED (another worker holds it)."""
        return finish_outcome(
            await self._transition(
                self._finish,
                self.job_keys(job_id),
                [owner, keys.job_channel(job_id), state, compact_json(event), self.result_ttl],
            )
        )

    async def hand_off(
        self,
        job_id: str,
        owner: str,
        provider: str,
        model: str,
        queue: str,
        message: str = "",
        push_to: str = "",
        reason: str = "",
    ) -> bool:
        """Move a running job to another model's queue (failover); False if no longer ours.
        ``reason``: the error code that made it fail over, for the job's timeline."""
        result = await self._transition(
            self._hand_off,
            [
                keys.job(job_id),
                keys.job_lease(job_id),
                push_to or keys.job(job_id),
                keys.QUEUED_JOBS,
            ],
            [owner, provider, model, queue, message, job_id if self.index_queued else "", reason],
        )
        return int(result) == 1

    async def defer(
        self,
        job_id: str,
        owner: str,
        wait_ms: int,
        message: str = "",
        push_to: str = "",
        limit: str = "",
    ) -> bool:
        """Park a running job for ``wait_ms`` (see ``job_defer.lua``); False if no longer ours.
        ``limit``: the name of the limit it is over, for the job's timeline."""
        result = await self._transition(
            self._defer,
            [keys.job(job_id), keys.job_lease(job_id), keys.DEFERRED],
            [owner, wait_ms, message, push_to, job_id, limit],
        )
        return int(result) == 1

    async def note(self, job_id: str, owner: str, entry: dict[str, Any]) -> bool:
        """Add a step no transition makes (a retried call) to the job's timeline, while this
        worker runs it (``job_note.lua``); False if it no longer does."""
        result = await self._note(
            keys=[keys.job(job_id), keys.job_lease(job_id)], args=[owner, compact_json(entry)]
        )
        return int(result) == 1

    async def ended_trace(self, job_id: str) -> tuple[str, str, str | None]:
        """Of a job its claim just ended without running it (deadline passed, started too
        often): the caller's trace context (traceparent, tracestate; '' for none) and the code
        it ended with (its timeline's last step), for the trace of that delivery."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hmget(keys.job(job_id), ["traceparent", "tracestate"])
            pipe.lindex(keys.job_timeline(job_id), -1)
            (traceparent, tracestate), last = await pipe.execute()
        entry = parse_entry(last) if last is not None else None
        code = entry.details.get("code") if entry is not None and entry.event == "ended" else None
        return text(traceparent or ""), text(tracestate or ""), code

    async def release_due(self, limit: int = 200) -> list[tuple[str, str, str]]:
        """Requeue the deferred jobs whose wait is over: (job id, provider, priority) each."""
        flat = [
            text(v)
            for v in await self._transition(
                self._release,
                [keys.DEFERRED, keys.QUEUED_JOBS],
                [limit, f"{keys.PREFIX}:job:", "1" if self.index_queued else ""],
            )
        ]
        return [(flat[i], flat[i + 1], flat[i + 2]) for i in range(0, len(flat), 3)]

    async def renew_leases(self, job_ids: list[str], worker_id: str, lease_ms: int) -> list[str]:
        """Renew the leases; returns the job ids this worker no longer owns."""
        if not job_ids:
            return []
        job_keys: list[str] = []
        for job_id in job_ids:
            job_keys += [keys.job(job_id), keys.job_lease(job_id)]
        lost = await self._renew(keys=job_keys, args=[worker_id, lease_ms])
        return [job_ids[int(index)] for index in lost]

    async def check_orphans(
        self,
        token: str,
        missing: list[str],
        *,
        min_age_ms: int,
        suspects_ttl_ms: int,
        last: bool,
    ) -> list[tuple[str, str, str]] | None:
        """Judge jobs whose message one sweep found nowhere (``orphan_check.lua``): (job id,
        provider, priority) of each missed by the last sweep too; None when another sweeper
        holds the lease. ``last`` on the sweep's final call: its suspects replace the last's."""
        reply = [
            text(v)
            for v in await self._orphan_check(
                keys=[
                    keys.QUEUED_JOBS,
                    keys.ORPHAN_SUSPECTS,
                    f"{keys.orphan_sweep(token)}:suspects",
                    keys.ORPHAN_SWEEPER,
                ],
                args=[
                    token,
                    suspects_ttl_ms,
                    "1" if last else "",
                    f"{keys.PREFIX}:job:",
                    min_age_ms,
                    *missing,
                ],
            )
        ]
        if reply[0] != "ok":
            return None
        flat = reply[1:]
        return [(flat[i], flat[i + 1], flat[i + 2]) for i in range(0, len(flat), 3)]

    async def requeue_orphan(
        self,
        job_id: str,
        token: str,
        *,
        min_age_ms: int,
        requeues_allowed: int = 1,
        message: str = "",
        push_to: str = "",
    ) -> OrphanOutcome:
        """Put a queued job whose message was lost back on its queue, or fail it with E4206 if
        it was put back ``requeues_allowed`` times already (``orphan_requeue.lua``)."""
        result = await self._transition(
            self._orphan_requeue,
            [
                *self.job_keys(job_id),
                keys.QUEUED_JOBS,
                keys.ORPHAN_SWEEPER,
                push_to or keys.job(job_id),
            ],
            [
                job_id,
                token,
                keys.job_channel(job_id),
                self.result_ttl,
                message,
                requeues_allowed,
                min_age_ms,
            ],
        )
        return OrphanOutcome(text(result))
