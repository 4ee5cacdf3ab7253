"""Writing one attempt's events to the job's stream.

A job whose worker died mid-stream is run again by another worker. The caller has already seen
the first attempt's chunks, so the new attempt continues the numbering and skips as many
characters of its own output as were already delivered: the caller never sees a piece twice, and
the final content is exactly the concatenation of the chunks it received. (With a deterministic
model the resumed text is seamless; with a sampling model the continuation comes from the new
attempt.)
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from gateway_core.embeddings import WIRE, EmbeddingResponse
from gateway_core.errors import GatewayError
from gateway_core.job_records import JobKind
from gateway_core.job_states import FinishOutcome, JobState
from gateway_core.response import InferenceResponse
from gateway_core.store_errors import STORE_ERRORS
from workers.job_store import WorkerJobStore

log = logging.getLogger(__name__)

#: How long an answer waits for Redis to come back before its message is handed back (and the
#: provider called again by whoever takes it). A restart with append-only persistence takes a
#: second or two; a Sentinel failover two to three.
REPORT_RETRY_S = 15.0
REPORT_BACKOFF_S = 0.25


class JobFenced(Exception):
    """The job ended or moved to another worker while this attempt ran: stop quietly."""


class EventWriter:
    def __init__(
        self,
        store: WorkerJobStore,
        job_id: str,
        worker_id: str,
        attempt: int,
        on_ended: Callable[[], None] | None = None,
    ) -> None:
        self._store = store
        # Told once this attempt's terminal event is the job's: from then on the job has ended
        # here, and what remains (the usage record, metrics) must not be taken for a job that
        # ended elsewhere and be cancelled by the heartbeat.
        self._on_ended = on_ended
        self._job_id = job_id
        self.job_id = job_id
        self._worker_id = worker_id
        self._attempt = attempt
        self._seq = 0
        self._skip = 0
        self.streamed: list[str] = []
        self.emitted = False  # whether this attempt has sent a chunk of its own

    async def resume(self, events_so_far: int) -> None:
        """Pick up numbering and the delivered prefix from an earlier attempt's chunks."""
        if events_so_far == 0:
            return
        delivered = [
            e.data.get("delta", "")
            for e in await self._store.events_after(self._job_id)
            if e.type == "chunk"
        ]
        self._seq = len(delivered)
        self.streamed = list(delivered)
        self.begin_call()

    def begin_call(self) -> None:
        """A provider call starts its answer from the beginning: skip what was delivered.

        Called before every call of a streamed job, so that a retry after a cut or stalled
        stream, like a resumed attempt, continues the caller's text instead of repeating it.
        """
        self._skip = len(self.streamed_text)

    @property
    def streamed_text(self) -> str:
        return "".join(self.streamed)

    async def chunk(self, text: str) -> None:
        if self._skip:
            dropped = min(self._skip, len(text))
            self._skip -= dropped
            text = text[dropped:]
        if not text:
            return
        event = {"type": "chunk", "seq": self._seq, "delta": text, "attempt": self._attempt}
        if await self._store.append(self._job_id, self._worker_id, event) < 0:
            raise JobFenced(self._job_id)
        self._seq += 1
        self.streamed.append(text)
        self.emitted = True

    async def result(self, response: InferenceResponse | EmbeddingResponse) -> bool:
        """The job's answer; an embeddings job's says so (``"kind": "embed"``), its vectors
        packed (see :mod:`gateway_core.embeddings`)."""
        event: dict[str, Any] = {
            "type": "result",
            "response": response.model_dump(mode="json", context=WIRE),
        }
        if isinstance(response, EmbeddingResponse):
            event["kind"] = JobKind.EMBED.value
        return await self._finish(JobState.SUCCEEDED, event)

    async def error(self, error: GatewayError) -> bool:
        return await self._finish(JobState.FAILED, {"type": "error", "error": error.to_payload()})

    async def _finish(self, state: JobState, event: dict[str, Any]) -> bool:
        """Write the terminal event; while Redis is away, keep trying for ``REPORT_RETRY_S``.

        The answer is in hand: losing it to a short outage would cost another provider call.
        Trying again is safe: the script refuses a job that ended meanwhile or whose lease this
        worker no longer holds (it then returns False, and the job's one answer is another's).
        """
        give_up_at = time.monotonic() + REPORT_RETRY_S
        pause = REPORT_BACKOFF_S
        while True:
            try:
                written = await self._store.finish(self._job_id, self._worker_id, state, event)
                if written is FinishOutcome.WRITTEN and self._on_ended is not None:
                    self._on_ended()
                return written is FinishOutcome.WRITTEN
            except STORE_ERRORS as exc:
                if time.monotonic() + pause > give_up_at:
                    raise
                log.warning(
                    "job %s: answer not recorded yet (%s); trying again",
                    self._job_id,
                    type(exc).__name__,
                )
                await asyncio.sleep(pause)
                pause = min(pause * 2, 2.0)
