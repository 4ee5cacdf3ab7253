"""The orphan sweeper's cost in Redis time, over 100,000 queued jobs with their messages queued.

The jobs are created as submit creates them (``job_create.lua`` with the message Celery's own
builder makes, ``tasks/message.py``), spread over every provider's queue and its three priority
lists; a few hundred are held "unacknowledged" in kombu's ``unacked`` hash, as workers hold
them. Then, as the worst case of a healthy fleet (a backlog that has waited a period), every
job is aged past one sweep period, so a sweep looks for all 100,000 and reads every list before
it has found them all. Ten messages are removed to give it orphans. Two sweeps run (the first
makes the ten suspects, the second puts them back). First of all, the common case: the same
jobs, none queued a period ago (jobs are taken soon after they are queued).

Redis time is the sum of the durations Redis itself counts for the commands a sweep sends
(``INFO commandstats``; a script counts once, with all it runs inside), with the longest single
call (``SLOWLOG``: how long a sweep holds Redis at a time) and the server's CPU (``INFO cpu``,
which adds reading and writing the sockets). A second case: lists holding 20,000 messages
deleted at once (an operator's DEL), and the two sweeps that put them all back.

    python -m benchmarks.orphan_sweep [--jobs 100000] [--deleted 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import time
import uuid
from typing import Any

from redis.asyncio import Redis

from config.settings import load_settings
from gateway_client.job_store import JobStore
from gateway_core import keys
from gateway_core.queues import (
    PROVIDERS,
    REDIS_UNACKED,
    queue_name,
    redis_priority_lists,
)
from gateway_core.redis_pool import make_redis
from gateway_core.wire import make_envelope
from l04.redis_server import LocalRedis
from tasks.app_config import create_app
from tasks.message import build_task_message, redis_list_for
from workers.job_store import WorkerJobStore
from workers.orphans import OrphanSweeper
from workers.requeue import Requeue

ORPHAN_AFTER = 60.0  # the default: a period of 15 s
# The commands a sweep sends itself: their durations as Redis counts them (INFO commandstats,
# reset before each sweep). A script's count includes all it runs inside, which Redis counts
# under those commands' names as well; those are left out, except SADD, PEXPIRE and DEL, which
# a sweep both sends and runs inside orphan_check (about one each per missing job): counted
# twice there, the figure is an upper bound.
SENT = {"EVALSHA", "SCRIPT", "SET", "SADD", "PEXPIRE", "SSCAN", "DEL"}
# Calls that held Redis at least this long are logged (SLOWLOG), to find the longest.
LONG_CALL_US = 500
PRIORITIES = (("high", 0), ("normal", 5), ("low", 9))
REQUEST = json.dumps(
    {
        "agent_did": "did:key:bench",
        "model_id": "mock",
        "messages": [{"role": "user", "content": "Summarise the quarterly report. " * 8}],
        "max_tokens": 256,
    }
)


async def fill(redis: Redis, url: str, jobs: int, held: int) -> list[str]:
    """``jobs`` queued jobs as submit makes them; ``held`` of them delivered, unacknowledged."""
    app = create_app(load_settings(REDIS_URL=url))
    store = JobStore(redis, index_queued=True)
    expire_at_ms = int((time.time() + 3 * 3600) * 1000)
    ids = [f"bench-{n}-{uuid.uuid4().hex[:8]}" for n in range(jobs)]

    async def create(n: int, job_id: str) -> None:
        provider = PROVIDERS[n % len(PROVIDERS)]
        priority, value = PRIORITIES[n % len(PRIORITIES)]
        queue = queue_name(provider)
        fields = {
            "request": REQUEST,
            "provider": provider,
            "model": provider,
            "queue": queue,
            "priority": priority,
            "stream": "0",
            "deadline": repr(time.time() + 3600),
            "agent_did": "did:key:bench",
            "chain": json.dumps([provider]),
        }
        message = build_task_message(app, job_id, make_envelope(job_id), queue, value)
        await store.create(
            job_id,
            expire_at_ms,
            fields,
            queue_lists=redis_priority_lists(queue),
            max_depth=10 * jobs,
            message=message,
            push_to=redis_list_for(queue, value),
        )

    for start in range(0, jobs, 1000):
        await asyncio.gather(*(create(n, ids[n]) for n in range(start, min(jobs, start + 1000))))
    # Workers hold some: kombu moved their messages from the lists into unacked.
    moved = 0
    for provider in PROVIDERS:
        for name in redis_priority_lists(queue_name(provider)):
            while moved < held and (raw := await redis.rpop(name)) is not None:
                value = json.dumps([json.loads(raw), "", queue_name(provider)])
                await redis.hset(REDIS_UNACKED, str(uuid.uuid4()), value)
                moved += 1
    return ids


async def age(redis: Redis, seconds: float) -> None:
    """Every job in the index as if queued ``seconds`` earlier (a healthy fleet's backlog)."""
    cursor = 0
    while True:
        cursor, entries = await redis.zscan(keys.QUEUED_JOBS, cursor, count=5000)
        if entries:
            await redis.zadd(keys.QUEUED_JOBS, {m: s - seconds * 1000 for m, s in entries})
        if cursor == 0:
            return


async def remove(redis: Redis, job_ids: set[str]) -> int:
    removed = 0
    for provider in PROVIDERS:
        for name in redis_priority_lists(queue_name(provider)):
            for raw in await redis.lrange(name, 0, -1):
                if json.loads(raw)["headers"]["id"] in job_ids:
                    removed += await redis.lrem(name, 1, raw)
    return removed


async def measured_sweep(redis: Redis, sweeper: OrphanSweeper) -> dict[str, Any]:
    """One sweep (the lease released first, as the end of a period would), measured."""
    await redis.delete(keys.ORPHAN_SWEEPER)
    await redis.config_set("slowlog-log-slower-than", LONG_CALL_US)
    await redis.slowlog_reset()
    await redis.config_resetstat()
    cpu_before = await redis.info("cpu")
    started = time.perf_counter()
    report = await sweeper.try_sweep()
    wall = time.perf_counter() - started
    cpu_after = await redis.info("cpu")
    stats = await redis.info("commandstats")
    slow = [e for e in await redis.slowlog_get(10_000) if _name(e) in SENT]
    await redis.config_set("slowlog-log-slower-than", 10_000)
    assert report is not None
    sent = {
        name.removeprefix("cmdstat_").upper(): value
        for name, value in stats.items()
        if name.removeprefix("cmdstat_").upper() in SENT
    }
    return {
        "looked_for": report.looked_for,
        "missing": report.missing,
        "requeued": len(report.requeued),
        "calls": sum(v["calls"] for v in sent.values()),
        "redis_s": sum(v["usec"] for v in sent.values()) / 1e6,
        "by_command": {k: v["usec"] / 1000 for k, v in sent.items()},
        "longest_ms": max((e["duration"] for e in slow), default=LONG_CALL_US) / 1000,
        # INFO's own microseconds are in it too, which is nothing beside a sweep
        "cpu_s": sum(cpu_after[k] - cpu_before[k] for k in ("used_cpu_user", "used_cpu_sys")),
        "wall_s": wall,
    }


def _name(entry: dict[str, Any]) -> str:
    command = entry["command"]
    return (command.decode() if isinstance(command, bytes) else str(command)).split(" ", 1)[0]


def _breakdown(m: dict[str, Any]) -> str:
    return ", ".join(
        f"{k} {v:.1f}" for k, v in sorted(m["by_command"].items(), key=lambda kv: -kv[1])
    )


def line(label: str, m: dict[str, Any]) -> str:
    return (
        f"{label}: {m['looked_for']:>6} looked for, {m['missing']:>5} missing, "
        f"{m['requeued']:>5} put back | Redis {m['redis_s'] * 1000:7.1f} ms in {m['calls']:>6} "
        f"calls, longest {m['longest_ms']:5.1f} ms | server CPU {m['cpu_s'] * 1000:7.1f} ms | "
        f"wall {m['wall_s'] * 1000:7.1f} ms"
    )


async def run(url: str, jobs: int, deleted: int) -> None:
    redis = make_redis(url)
    await redis.flushall()
    app = create_app(load_settings(REDIS_URL=url))
    store = WorkerJobStore(redis, index_queued=True)
    sweeper = OrphanSweeper(store, redis, Requeue(app, url, True), ORPHAN_AFTER)
    started = time.perf_counter()
    ids = await fill(redis, url, jobs, held=500)
    print(f"# filled {jobs} queued jobs in {time.perf_counter() - started:.0f} s", flush=True)
    # The common case: jobs are taken soon after they are queued, none is a period old.
    patient = OrphanSweeper(store, redis, Requeue(app, url, True), 100 * ORPHAN_AFTER)
    young = await measured_sweep(redis, patient)
    print(line("all queued less than a period ago ", young), flush=True)
    await age(redis, ORPHAN_AFTER)
    assert await remove(redis, set(ids[-10:])) == 10  # the newest: at the lists' heads
    first = await measured_sweep(redis, sweeper)
    second = await measured_sweep(redis, sweeper)
    print(line("all looked for, 10 lost, sweep 1  ", first))
    print(line("all looked for, 10 lost, sweep 2  ", second), flush=True)
    print("  by command, sweep 2 (ms):", _breakdown(second))

    # An operator deletes lists holding `deleted` messages.
    await redis.flushall()
    await fill(redis, url, jobs, held=0)
    await age(redis, ORPHAN_AFTER)
    lost = 0
    for name in (n for p in PROVIDERS for n in redis_priority_lists(queue_name(p))):
        if lost >= deleted:
            break
        lost += await redis.llen(name)
        await redis.delete(name)
    first = await measured_sweep(redis, sweeper)
    second = await measured_sweep(redis, sweeper)
    print(line(f"lists of {lost} messages deleted, sweep 1", first))
    print(line(f"lists of {lost} messages deleted, sweep 2", second))
    await redis.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--deleted", type=int, default=20_000)
    args = parser.parse_args()
    logging.getLogger("workers.orphans").setLevel(logging.ERROR)  # a line per job put back
    server = LocalRedis().start()
    try:
        print(
            f"# orphan sweep, {args.jobs} queued jobs, {time.strftime('%Y-%m-%d')}, "
            f"{platform.machine()} {os.cpu_count()} cores, Redis on this host"
        )
        asyncio.run(run(server.url, args.jobs, args.deleted))
    finally:
        server.stop()


if __name__ == "__main__":
    main()
