"""A job's timeline, read from Redis alone: what ``l04 trace`` prints and ``JobHandle.timeline``
returns, for when no tracing backend runs.

The transitions' scripts append one entry per step to the job's timeline list
(``gateway_core/lua/timeline.lua``), on the Redis server's clock: ``created`` (provider, model,
queue, priority), ``claimed`` (worker, attempt; ``redelivered`` and ``previous_worker`` when the
previous worker's lease lapsed), ``deferred`` (limit, wait_ms), ``released``, ``failover``
(from, to, queue, code), ``retry`` (code, call, delay_ms), ``first_chunk`` (worker, attempt),
``requeued`` (why), and ``ended`` (state, code, worker). A record older than the timeline gets
its steps from the record's timestamps (``created_ms``, ``started_ms``, ``finished_ms``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from gateway_core import keys
from gateway_core.job_records import text


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    """One step: its server time (ms since the epoch), its name, and what it names."""

    t_ms: int
    event: str
    details: dict[str, Any]


@dataclass(frozen=True, slots=True)
class JobTrace:
    """A job's record (state, model) and its timeline, with the durations people ask about."""

    job_id: str
    state: str
    provider: str
    model: str
    created_ms: int
    entries: tuple[TimelineEntry, ...]
    dropped: int = 0  # entries dropped past the timeline's cap (a job redelivered many times)

    def _first(self, event: str) -> TimelineEntry | None:
        return next((e for e in self.entries if e.event == event), None)

    def _since_created(self, event: str) -> int | None:
        entry = self._first(event)
        return None if entry is None or not self.created_ms else entry.t_ms - self.created_ms

    @property
    def queue_wait_ms(self) -> int | None:
        """From creation to the first claim."""
        return self._since_created("claimed")

    @property
    def first_chunk_ms(self) -> int | None:
        """From creation to the first streamed chunk."""
        return self._since_created("first_chunk")

    @property
    def total_ms(self) -> int | None:
        """From creation to the end (None while the job runs)."""
        return self._since_created("ended")

    @property
    def code(self) -> str | None:
        """The E4xxx code it ended with, if it ended in an error."""
        ended = self._first("ended")
        return None if ended is None else ended.details.get("code")

    def to_json(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "state": self.state,
            "code": self.code,
            "provider": self.provider,
            "model": self.model,
            "created_ms": self.created_ms,
            "queue_wait_ms": self.queue_wait_ms,
            "first_chunk_ms": self.first_chunk_ms,
            "total_ms": self.total_ms,
            "dropped": self.dropped,
            "timeline": [
                {
                    "t": e.t_ms,
                    "since_created_ms": e.t_ms - self.created_ms if self.created_ms else None,
                    "event": e.event,
                    **e.details,
                }
                for e in self.entries
            ],
        }

    def render(self) -> str:
        """The timeline for people: one line per step, time since creation and since the step
        before, then the durations."""
        title = f"job {self.job_id}: {self.state}"
        if self.code:
            title += f" ({self.code})"
        lines = [f"{title}, now on {self.provider}:{self.model}"]
        previous: int | None = None
        base = self.created_ms or (self.entries[0].t_ms if self.entries else 0)
        for index, entry in enumerate(self.entries):
            gap = "" if previous is None else f"(+{_duration(entry.t_ms - previous)})"
            details = " ".join(_detail(k, v) for k, v in sorted(entry.details.items()))
            lines.append(
                f"  {'+' + _duration(entry.t_ms - base):>10}  {gap:>11}  {entry.event:<11} "
                f"{details}".rstrip()
            )
            previous = entry.t_ms
            if index == _HEAD - 1 and self.dropped:
                lines.append(f"  ... {self.dropped} steps dropped (the timeline keeps 64)")
        summary = [
            f"{name} {_duration(value)}"
            for name, value in (
                ("queue wait", self.queue_wait_ms),
                ("first chunk", self.first_chunk_ms),
                ("total", self.total_ms),
            )
            if value is not None
        ]
        if summary:
            lines.append(", ".join(summary))
        return "\n".join(lines)


# The first entries a capped timeline keeps (TIMELINE_HEAD in gateway_core/lua/timeline.lua).
_HEAD = 8


def _duration(ms: int) -> str:
    return f"{ms} ms" if abs(ms) < 10_000 else f"{ms / 1000:.1f} s"


def _detail(name: str, value: Any) -> str:
    if value is True:
        return name
    return f"{name}={value}"


def parse_entry(raw: Any) -> TimelineEntry | None:
    """An entry as the scripts write it; None for one that is not (never written by us)."""
    try:
        data = json.loads(text(raw))
        t_ms = int(data.pop("t"))
        event = str(data.pop("event"))
    except (ValueError, TypeError, KeyError, AttributeError, OverflowError):  # inf: Overflow
        return None
    return TimelineEntry(t_ms, event, data)


def from_record(record: dict[str, str]) -> list[TimelineEntry]:
    """The steps a record without a timeline still tells: created, started, finished."""
    steps = [("created_ms", "created"), ("started_ms", "claimed"), ("finished_ms", "ended")]
    entries = []
    for field, event in steps:
        if record.get(field):
            details = {"state": record.get("state", "")} if event == "ended" else {}
            entries.append(TimelineEntry(int(record[field]), event, details))
    return entries


async def read_trace(redis: Redis, job_id: str) -> JobTrace | None:
    """The job's trace from its record and timeline, in one round trip; None when it has no
    record (never created, or expired)."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.hmget(
            keys.job(job_id),
            ["state", "provider", "model", "created_ms", "started_ms", "finished_ms"],
        )
        pipe.hget(keys.job(job_id), "timeline_dropped")
        pipe.lrange(keys.job_timeline(job_id), 0, -1)
        fields, dropped, raw_entries = await pipe.execute()
    names = ["state", "provider", "model", "created_ms", "started_ms", "finished_ms"]
    record = {name: text(value) for name, value in zip(names, fields, strict=True) if value}
    if "state" not in record:
        return None
    parsed = [parse_entry(raw) for raw in raw_entries]
    entries = [e for e in parsed if e is not None] or from_record(record)
    return JobTrace(
        job_id=job_id,
        state=record["state"],
        provider=record.get("provider", ""),
        model=record.get("model", ""),
        created_ms=int(record.get("created_ms") or 0),
        entries=tuple(entries),
        dropped=int(text(dropped) or 0),
    )
