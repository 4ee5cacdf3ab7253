"""What became of every job of a run, and where the message of each unfinished one is.

Read from Redis after a fault loop (:mod:`benchmarks.kill_loop`), with a plain synchronous
client, so that the figures do not depend on the producer library under test:

* each job's record (state, attempt, the worker that last claimed it, ``finished_ms``) and its
  event stream: how many terminal events (``result`` or ``error``) it holds, and the error code;
* for a job with no terminal event ("stranded"), where its broker message is: on a queue list,
  in kombu's ``unacked`` hash (with its ``unacked_index`` score: the delivery time the
  visibility timeout counts from), or nowhere;
* kombu's restore mutex (``unacked_mutex``): held or not, and for how long still. kombu takes it
  with a 300 s expiry for each restore sweep; a worker killed inside a sweep leaves it held
  until that expiry, and no worker restores anything meanwhile.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import redis

from gateway_core import keys
from gateway_core.job_records import text
from gateway_core.queues import REDIS_UNACKED_INDEX, redis_priority_lists

UNACKED = "unacked"  # kombu's hash: delivery tag -> [message, exchange, routing key]
UNACKED_MUTEX = "unacked_mutex"  # kombu's lock around a restore sweep
DEADLINE_CODES = frozenset({"E4404", "E4205"})
TERMINAL_STATES = frozenset({"succeeded", "failed", "cancelled", "expired"})


@dataclass(frozen=True)
class JobFate:
    job_id: str
    state: str
    attempt: int
    worker: str
    finished_ms: int | None
    terminal_events: int
    error_code: str | None
    error_message: str | None
    where: str = ""  # stranded jobs only: "queue", "unacked (age N s)", "nowhere"


@dataclass
class Census:
    fates: list[JobFate]
    mutex_ttl_s: float | None  # None: not held
    unacked: int
    unacked_index: int
    queued_messages: int
    dead_letters: int
    notes: list[str] = field(default_factory=list)

    @property
    def answered(self) -> int:
        """Jobs with exactly one terminal event."""
        return sum(f.terminal_events == 1 for f in self.fates)

    @property
    def duplicates(self) -> int:
        """Jobs with more than one terminal event."""
        return sum(f.terminal_events > 1 for f in self.fates)

    @property
    def stranded(self) -> list[JobFate]:
        return [f for f in self.fates if f.terminal_events == 0]

    @property
    def deadline_errors(self) -> int:
        return sum(f.error_code in DEADLINE_CODES for f in self.fates)

    @property
    def errors(self) -> Counter[str]:
        return Counter(f.error_code for f in self.fates if f.error_code)

    @property
    def last_finished_ms(self) -> int | None:
        done = [f.finished_ms for f in self.fates if f.finished_ms is not None]
        return max(done) if done else None

    @property
    def attempts(self) -> int:
        return sum(f.attempt for f in self.fates)

    def error_messages(self) -> Counter[str]:
        return Counter(f"{f.error_code} {f.error_message}" for f in self.fates if f.error_code)

    def stranded_summary(self) -> Counter[str]:
        """Stranded jobs by (where the message is, the record's state)."""
        return Counter(f"{f.where.split(' (')[0]}/{f.state}" for f in self.stranded)


def unended(client: redis.Redis, job_ids: list[str]) -> list[str]:
    """The jobs of ``job_ids`` whose record is not in a terminal state (one round trip)."""
    pipe = client.pipeline(transaction=False)
    for job_id in job_ids:
        pipe.hget(keys.job(job_id), "state")
    states = pipe.execute()
    return [j for j, s in zip(job_ids, states, strict=True) if text(s) not in TERMINAL_STATES]


def take_census(client: redis.Redis, job_ids: list[str], queue: str) -> Census:
    pipe = client.pipeline(transaction=False)
    for job_id in job_ids:
        pipe.hmget(keys.job(job_id), "state", "attempt", "worker", "finished_ms")
        pipe.xrange(keys.job_events(job_id))
    replies = pipe.execute()
    locations = _message_locations(client, queue)
    fates = []
    for index, job_id in enumerate(job_ids):
        (state, attempt, worker, finished), events = replies[2 * index], replies[2 * index + 1]
        terminal = [
            json.loads(fields[b"e"])
            for _id, fields in events
            if json.loads(fields[b"e"])["type"] in ("result", "error")
        ]
        error = next((e["error"] for e in terminal if e["type"] == "error"), None)
        fates.append(
            JobFate(
                job_id=job_id,
                state=text(state) or "no record",
                attempt=int(attempt or 0),
                worker=text(worker),
                finished_ms=int(finished) if finished else None,
                terminal_events=len(terminal),
                error_code=error["code"] if error else None,
                error_message=error["message"] if error else None,
                where=locations.get(job_id, "nowhere") if not terminal else "",
            )
        )
    pttl = int(client.pttl(UNACKED_MUTEX))
    return Census(
        fates=fates,
        mutex_ttl_s=pttl / 1000 if pttl > 0 else None,
        unacked=int(client.hlen(UNACKED)),
        unacked_index=int(client.zcard(REDIS_UNACKED_INDEX)),
        queued_messages=sum(int(client.llen(name)) for name in redis_priority_lists(queue)),
        dead_letters=int(client.llen(keys.DEAD_LETTERS)),
    )


def _message_locations(client: redis.Redis, queue: str) -> dict[str, str]:
    """Job id -> where its broker message is: on a queue list, or unacknowledged."""
    where: dict[str, str] = {}
    for name in redis_priority_lists(queue):
        for raw in client.lrange(name, 0, -1):
            where[_job_id_of(json.loads(raw))] = "queue"
    now = time.time()
    for tag, raw in client.hgetall(UNACKED).items():
        message = json.loads(raw)[0]
        score = client.zscore(REDIS_UNACKED_INDEX, tag)
        age = "not indexed" if score is None else f"age {now - float(score):.0f} s"
        where[_job_id_of(message)] = f"unacked ({age})"
    return where


def _job_id_of(message: dict[str, Any]) -> str:
    """A task message's id: the job id (tasks/message.py names each task after its job)."""
    return str(message.get("headers", {}).get("id", "?"))
