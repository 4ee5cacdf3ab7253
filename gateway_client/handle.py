"""``JobHandle``: a submitted job, to wait on, stream, inspect or cancel; ``EmbeddingJob``: an
embeddings job, to wait on, inspect or cancel.

Waiting never hangs: past the job's deadline (plus a short grace for the worker's own report)
the handle ends the job itself with E4404 (never started) or E4205 (started, never finished),
atomically, so that whichever of worker and caller reports first is the only report.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

from gateway_client.job_store import JobStore
from gateway_client.listener import FEED_ENDED, EventListener, Subscription
from gateway_core import metrics
from gateway_core.embeddings import EmbeddingResponse
from gateway_core.errors import InvalidRequest, JobCancelled, error_from_payload, unknown_job
from gateway_core.job_records import JobEvent, JobKind
from gateway_core.job_states import FinishOutcome, JobState
from gateway_core.job_timeline import JobTrace, read_trace
from gateway_core.response import InferenceResponse, StreamChunk
from gateway_core.store_errors import job_store_errors


class JobStatus(BaseModel):
    model_config = ConfigDict(frozen=True)

    job_id: str
    state: JobState  # a StrEnum: compares equal to "queued", "running", ...
    kind: JobKind = JobKind.CHAT
    attempt: int = 0
    provider: str = ""
    model_id: str = ""
    priority: str = ""
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    deadline: datetime | None = None


def _time(ms: str | None) -> datetime | None:
    return datetime.fromtimestamp(int(ms) / 1000, tz=UTC) if ms else None


class JobHandle:
    def __init__(
        self,
        job_id: str,
        deadline: float,
        store: JobStore,
        listener: EventListener,
        deadline_grace: float,
        kind: JobKind = JobKind.CHAT,
    ) -> None:
        self.job_id = job_id
        self.deadline = deadline
        self.kind = kind
        self._store = store
        self._listener = listener
        self._grace = deadline_grace

    def __repr__(self) -> str:
        return f"JobHandle(job_id={self.job_id!r})"

    async def result(self, timeout: float | None = None) -> InferenceResponse:
        """The job's response, or its typed error. ``timeout`` bounds this wait only."""
        return InferenceResponse.model_validate(await self.result_payload(timeout))

    async def result_payload(
        self, timeout: float | None = None, kind: JobKind = JobKind.CHAT
    ) -> dict[str, Any]:
        """The job's response as its result event holds it, or its typed error; E4500 if the
        job is not of ``kind`` (an embeddings job read as a chat job, or the other way)."""
        # aclosing: the feed's subscription is released here and now, not by the garbage
        # collector at some later point on a connection that may be gone by then.
        async with contextlib.aclosing(self._events(timeout)) as events:
            async for event in events:
                if event.type == "result":
                    _check_kind(self.job_id, event, kind)
                    metrics.JOB_RESULTS.labels("success").inc()
                    response: dict[str, Any] = event.data["response"]
                    return response
                if event.type == "error":
                    metrics.JOB_RESULTS.labels("error").inc()
                    raise error_from_payload(event.data["error"])
        raise AssertionError("unreachable: event feed ended without a terminal event")

    async def stream(
        self, after_sequence: int = -1, timeout: float | None = None
    ) -> AsyncGenerator[StreamChunk, None]:
        """The job's chunks after ``after_sequence``, in order, once each, then a final chunk.

        Resume a broken stream by passing the last ``sequence`` you received. On a job that has
        ended, an ``after_sequence`` at or past its last event returns at once, with nothing.
        """
        sequence = after_sequence
        async with contextlib.aclosing(self._events(timeout, after_n=after_sequence)) as events:
            async for event in events:
                if event.type == "chunk":
                    sequence = int(event.data["seq"])
                    yield StreamChunk(
                        job_id=self.job_id,
                        sequence=sequence,
                        content_delta=event.data.get("delta", ""),
                    )
                elif event.type == "result":
                    _check_kind(self.job_id, event, JobKind.CHAT)
                    response = InferenceResponse.model_validate(event.data["response"])
                    yield StreamChunk(
                        job_id=self.job_id,
                        sequence=sequence + 1,
                        # A job answered without chunks (not streamed, or cached) still streams.
                        content_delta="" if sequence >= 0 else response.content,
                        is_final=True,
                        token_usage=response.token_usage,
                        finish_reason=response.finish_reason,
                        response=response,
                    )
                elif event.type == "error":
                    raise error_from_payload(event.data["error"])

    async def status(self) -> JobStatus:
        with job_store_errors():
            info = await self._store.status(self.job_id)
        if not info:
            raise unknown_job(self.job_id)
        return JobStatus(
            job_id=self.job_id,
            state=JobState(info["state"]),
            kind=JobKind(info.get("kind") or JobKind.CHAT),
            attempt=int(info.get("attempt") or 0),
            provider=info.get("provider", ""),
            model_id=info.get("model", ""),
            priority=info.get("priority", ""),
            created_at=_time(info.get("created_ms")),
            started_at=_time(info.get("started_ms")),
            finished_at=_time(info.get("finished_ms")),
            deadline=datetime.fromtimestamp(float(info["deadline"]), tz=UTC)
            if info.get("deadline")
            else None,
        )

    async def timeline(self) -> JobTrace:
        """The job's steps so far (created, claimed, deferred, failed over, first chunk, ended),
        from Redis alone: what ``l04 trace`` prints. E4406 once its record expired."""
        with job_store_errors():
            trace = await read_trace(self._store.redis, self.job_id)
        if trace is None:
            raise unknown_job(self.job_id)
        return trace

    async def cancel(self) -> bool:
        """Cancel the job unless it already ended. True if this call cancelled it.

        A queued job never reaches a provider; a running one has its call stopped.
        """
        error = JobCancelled("job cancelled by the caller")
        with job_store_errors():
            written = await self._store.cancel(
                self.job_id, {"type": "error", "error": error.to_payload()}
            )
        return written is FinishOutcome.WRITTEN

    async def _events(
        self, timeout: float | None, after_n: int = -1
    ) -> AsyncGenerator[JobEvent, None]:
        give_up_at = None if timeout is None else time.monotonic() + timeout
        subscription: Subscription = await self._listener.open(self.job_id, after_n)
        try:
            while True:
                wait = self.deadline + self._grace - time.time()
                if give_up_at is not None:
                    wait = min(wait, give_up_at - time.monotonic())
                try:
                    event = await subscription.next(max(0.05, wait))
                except TimeoutError:
                    if give_up_at is not None and time.monotonic() >= give_up_at:
                        raise TimeoutError(
                            f"job {self.job_id} has not ended after {timeout}s; it keeps running"
                        ) from None
                    await self._expire()
                    continue
                if event is FEED_ENDED:
                    return  # the job ended before the point this caller resumes from
                yield event
                if event.is_terminal:
                    return
        finally:
            await subscription.close()

    async def _expire(self) -> None:
        """The deadline passed and the worker did not report: end the job ourselves.

        With Redis unreachable past the deadline, the caller gets E4407 (retryable: the job's
        record, and maybe its answer, are back with Redis) instead of waiting on.
        """
        with job_store_errors():
            outcome = await self._store.expire(self.job_id, grace=self._grace)
            if outcome is FinishOutcome.ENDED and not await self._store.status(self.job_id):
                raise unknown_job(self.job_id)
        if outcome is FinishOutcome.NOT_YET:
            # Our clock runs ahead of the Redis server's: give it a moment.
            await asyncio.sleep(0.2)


_A_JOB_OF = {JobKind.CHAT: "a chat job", JobKind.EMBED: "an embeddings job"}


def _check_kind(job_id: str, event: JobEvent, kind: JobKind) -> None:
    """E4500 when a result event is of another kind of job than its reader expects."""
    found = str(event.data.get("kind") or JobKind.CHAT)
    if found == kind:
        return
    reader = "gateway.embedding_job()" if found == JobKind.EMBED else "gateway.job()"
    raise InvalidRequest(
        f"job {job_id} is not {_A_JOB_OF[kind]} (its kind is {found!r}): read it with {reader}",
        details={"job_id": job_id, "kind": found},
    )


class EmbeddingJob:
    """A submitted embeddings job: its vectors (or typed error), its status, cancel.

    No stream: an embedding comes whole. Any process can take it up again by its id
    (``gateway.embedding_job(job_id)``), and cancel works as for chat jobs: a queued job never
    reaches its provider, a running one has its call stopped.
    """

    def __init__(self, handle: JobHandle) -> None:
        #: The job's plain handle, for code that treats every kind of job alike (status,
        #: cancel); its ``result()`` and ``stream()`` refuse an embeddings job with E4500.
        self.handle = handle
        self.job_id = handle.job_id
        self.deadline = handle.deadline

    def __repr__(self) -> str:
        return f"EmbeddingJob(job_id={self.job_id!r})"

    async def result(self, timeout: float | None = None) -> EmbeddingResponse:
        """The vectors, or the job's typed error. ``timeout`` bounds this wait only."""
        payload = await self.handle.result_payload(timeout, JobKind.EMBED)
        return EmbeddingResponse.model_validate(payload)

    async def status(self) -> JobStatus:
        return await self.handle.status()

    async def cancel(self) -> bool:
        """Cancel the job unless it already ended. True if this call cancelled it."""
        return await self.handle.cancel()
