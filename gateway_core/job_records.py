"""A job's record in Redis as both sides read it, and how a transition is run.

Keys (see :mod:`gateway_core.keys`): a hash with the job's state and request, a stream with its
events, a lease naming the worker that runs it, a timeline of its steps (read by ``l04 trace``,
:mod:`gateway_core.job_timeline`); all of them expire. The states and transitions
are drawn in :mod:`gateway_core.job_states`. The producer's transitions (create, cancel, expire)
are in :mod:`gateway_client.job_store`, the worker's (claim, append, finish, renew, defer,
release, hand off) in :mod:`workers.job_store`; both build on :class:`JobRecords`.

Every event goes to the stream first and is then announced on the job's pub/sub channel as
``"<n>\\n<stream id>\\n<event json>"``, and on its producer's inbox (``reply_to``, if the job has
one) with the job's channel in front; ``n`` counts the job's events from 0 so a listener can
tell a gap from a duplicate.

Redis replicates asynchronously: a master that fails right after a script can take the script's
writes with it, and the replica promoted in its place never saw the job, its claim or its end.
With ``wait_replicas`` > 0 the job's transitions (create, cancel, expire, claim, finish,
hand-off, defer, release) are each followed by ``WAIT wait_replicas wait_timeout_ms`` on the
same connection (a pipeline: WAIT may not run inside a script), so the call returns only once
that many replicas have the write, or the timeout passed (then a warning is logged and the
call returns all the same).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from redis.asyncio import Redis

from gateway_core import keys
from gateway_core.job_states import FINISH_REPLIES, FinishOutcome

log = logging.getLogger(__name__)


class JobKind(StrEnum):
    """What a job asks of its model: the record's ``kind`` field (absent: ``chat``, as every job
    was before embeddings). An embeddings job's result event carries ``"kind": "embed"``."""

    #: A chat completion, streamed or whole (``InferenceRequest``).
    CHAT = "chat"
    #: Vectors for a list of texts (``EmbeddingRequest``), never streamed.
    EMBED = "embed"


@dataclass(frozen=True, slots=True)
class JobEvent:
    n: int
    stream_id: str
    data: dict[str, Any]

    @property
    def type(self) -> str:
        return str(self.data.get("type"))

    @property
    def is_terminal(self) -> bool:
        return self.type in ("result", "error")


def text(value: Any) -> str:
    """A Redis reply as str (the clients here do not decode responses)."""
    if isinstance(value, bytes):
        return value.decode()
    return "" if value is None else str(value)


def parse_entry(stream_id: Any, fields: dict[Any, Any]) -> JobEvent:
    decoded = {text(k): text(v) for k, v in fields.items()}
    return JobEvent(int(decoded["n"]), text(stream_id), json.loads(decoded["e"]))


def parse_announcement(payload: Any) -> JobEvent:
    n, stream_id, body = text(payload).split("\n", 2)
    return JobEvent(int(n), stream_id, json.loads(body))


def parse_inbox_announcement(payload: Any) -> tuple[str, JobEvent]:
    """An announcement repeated on a producer's inbox: the job's channel, then the event."""
    channel, announcement = text(payload).split("\n", 1)
    return channel, parse_announcement(announcement)


def finish_outcome(reply: Any) -> FinishOutcome:
    return FINISH_REPLIES[int(reply)]


def compact_json(event: dict[str, Any]) -> str:
    return json.dumps(event, separators=(",", ":"))


class JobRecords:
    """Reads a job's record and events; runs a transition's script (then WAIT, if asked)."""

    def __init__(
        self,
        redis: Redis,
        *,
        result_ttl: int = 3600,
        wait_replicas: int = 0,
        wait_timeout_ms: int = 1000,
    ) -> None:
        self.redis = redis
        self.result_ttl = result_ttl
        self.wait_replicas = wait_replicas
        self.wait_timeout_ms = wait_timeout_ms

    async def _transition(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        """Run a transition's script; then, if asked to, WAIT for the replicas to have it."""
        if not self.wait_replicas:
            return await script(keys=keys, args=args)
        async with self.redis.pipeline(transaction=False) as pipe:
            await script(keys=keys, args=args, client=pipe)
            pipe.execute_command("WAIT", self.wait_replicas, self.wait_timeout_ms)
            result, acknowledged = await pipe.execute()
        if int(acknowledged) < self.wait_replicas:
            log.warning(
                "WAIT: %s of %s replicas acknowledged a job transition within %s ms",
                acknowledged,
                self.wait_replicas,
                self.wait_timeout_ms,
            )
        return result

    @staticmethod
    def job_keys(job_id: str) -> list[str]:
        """The job's hash, event stream and lease: the KEYS of most of its scripts."""
        return [keys.job(job_id), keys.job_events(job_id), keys.job_lease(job_id)]

    async def events_after(self, job_id: str, after_id: str = "0-0") -> list[JobEvent]:
        return (await self.events_after_many([(job_id, after_id)]))[0]

    async def events_after_many(self, watched: list[tuple[str, str]]) -> list[list[JobEvent]]:
        """For each ``(job_id, after_id)``: the events after that stream id, in one round trip."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id, after_id in watched:
                start = "-" if after_id == "0-0" else f"({after_id}"
                pipe.xrange(keys.job_events(job_id), min=start, max="+")
            replies = await pipe.execute()
        return [
            [parse_entry(stream_id, fields or {}) for stream_id, fields in entries or []]
            for entries in replies
        ]

    async def status(self, job_id: str) -> dict[str, str]:
        """The job's record without its request ({} when there is none)."""
        raw = await self.redis.hgetall(keys.job(job_id))
        info = {text(k): text(v) for k, v in raw.items()}
        info.pop("request", None)
        return info
