"""Deploys: a worker told to stop (SIGTERM) finishes what it runs; a rolling restart of every
worker under traffic loses nothing and answers nothing twice."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import redis

from gateway_client import ModelGateway
from tests.conftest import make_request
from tests.processes import WorkerProcess


async def test_sigterm_lets_the_jobs_in_flight_finish(
    gateway: ModelGateway, start_worker: Callable[..., WorkerProcess]
) -> None:
    worker = start_worker("mock")
    handles = [
        await gateway.submit(make_request(f"long {i}", metadata={"mock": {"latency_ms": 1500}}))
        for i in range(10)
    ]
    deadline = time.monotonic() + 10
    for handle in handles:  # all ten taken by the worker (a job still queued has no worker left)
        while (await handle.status()).state == "queued":
            assert time.monotonic() < deadline, f"{handle.job_id} not taken in 10 s"
            await asyncio.sleep(0.05)
    stopping = asyncio.create_task(asyncio.to_thread(worker.stop, 30))
    results = await asyncio.gather(*(h.result(timeout=20) for h in handles))
    await stopping
    assert all(r.attempt == 1 for r in results)  # finished by the stopping worker itself
    assert worker.process is not None and worker.process.returncode == 0


async def test_a_rolling_restart_under_traffic_loses_nothing(
    broker_url: str,
    gateway: ModelGateway,
    start_worker: Callable[..., WorkerProcess],
    redis_client: redis.Redis,
) -> None:
    fleet = [start_worker("mock"), start_worker("mock")]
    handles = []

    async def traffic(seconds: float) -> None:
        end = time.monotonic() + seconds
        i = 0
        while time.monotonic() < end:
            request = make_request(f"rolling {i}", metadata={"mock": {"latency_ms": 400}})
            handles.append(await gateway.submit(request))
            i += 1
            await asyncio.sleep(0.02)

    load = asyncio.create_task(traffic(8.0))
    for old in list(fleet):
        await asyncio.sleep(1.0)
        fleet.append(await asyncio.to_thread(start_worker, "mock"))  # the new one first
        await asyncio.to_thread(old.stop, 30)  # then the old one drains and exits
        assert old.process is not None and old.process.returncode == 0
    await load
    results = await asyncio.gather(*(h.result(timeout=60) for h in handles))
    assert len(results) == len(handles) > 100
    assert {r.job_id for r in results} == {h.job_id for h in handles}
    for handle in handles:  # exactly one terminal event each
        events = redis_client.xrange(f"l04:job:{{{handle.job_id}}}:events")
        terminal = [e for e in events if b'"type":"result"' in e[1][b"e"]]
        assert len(terminal) == 1
