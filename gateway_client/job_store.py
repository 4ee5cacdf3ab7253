"""The producer's transitions of a job: create it, cancel it, end it past its deadline.

Each is one script in ``gateway_client/lua/``; the state machine is drawn in
:mod:`gateway_core.job_states`, the record's layout in :mod:`gateway_core.job_records`.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from gateway_core import keys
from gateway_core.job_records import JobRecords, compact_json, finish_outcome, text
from gateway_core.job_states import CreateOutcome, FinishOutcome, JobState
from gateway_core.lua_scripts import register


class JobStore(JobRecords):
    """The producer's side of the job store, bound to one Redis client."""

    def __init__(self, redis: Redis, *, index_queued: bool = False, **options: Any) -> None:
        """``index_queued``: record created jobs in the index of queued jobs that the orphan
        sweeper reads (``keys.QUEUED_JOBS``): for a Redis broker, where the sweeper runs."""
        super().__init__(redis, **options)
        self.index_queued = index_queued
        self._create = register(redis, "gateway_client", "job_create")
        self._cancel = register(redis, "gateway_client", "job_cancel")
        self._expire = register(redis, "gateway_client", "job_expire")

    async def create(
        self,
        job_id: str,
        expire_at_ms: int,
        fields: dict[str, str],
        *,
        queue_lists: list[str],
        max_depth: int,
        message: str = "",
        push_to: str = "",
    ) -> CreateOutcome | JobState:
        """Create the job unless it exists, and push ``message`` onto ``push_to`` with it (and,
        with ``index_queued``, record it in the orphan sweeper's index of queued jobs).

        Returns CREATED, FULL (``queue_lists`` hold ``max_depth`` messages already), or the
        state of the existing job with this id (nothing is pushed then).
        """
        flat: list[str] = []
        for name, value in fields.items():
            flat += [name, value]
        result = text(
            await self._transition(
                self._create,
                [keys.job(job_id), *queue_lists, push_to or keys.job(job_id), keys.QUEUED_JOBS],
                [expire_at_ms, max_depth, message, job_id if self.index_queued else "", *flat],
            )
        )
        try:
            return CreateOutcome(result)
        except ValueError:
            return JobState(result)

    async def cancel(
        self, job_id: str, event: dict[str, Any], state: JobState = JobState.CANCELLED
    ) -> FinishOutcome:
        """End a job that has not ended with ``event`` (an error): WRITTEN, or ENDED."""
        return finish_outcome(
            await self._transition(
                self._cancel,
                self.job_keys(job_id),
                [keys.job_channel(job_id), state, compact_json(event), self.result_ttl],
            )
        )

    async def expire(self, job_id: str, grace: float = 0.0) -> FinishOutcome:
        """End a job whose deadline plus ``grace`` passed: WRITTEN, ENDED, or NOT_YET."""
        return finish_outcome(
            await self._transition(
                self._expire,
                self.job_keys(job_id),
                [keys.job_channel(job_id), self.result_ttl, grace],
            )
        )
