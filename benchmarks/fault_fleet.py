"""The processes of one kill-loop run (:mod:`benchmarks.kill_loop`), and what they hold.

A private redis-server, the mock upstream (``l04 mock-provider``, called through the worker's
OpenAI adapter so that every provider call is counted there) and ``l04 worker`` processes,
started as users start them; the jobs, submitted through the producer library; and, after each
fault, what the broker's Redis holds: the messages delivered and not acknowledged, and kombu's
restore mutex.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import redis

from benchmarks.job_census import UNACKED, UNACKED_MUTEX, unended
from gateway_client import InferenceRequest, Message, MessageRole, ModelGateway
from l04.redis_server import LocalRedis
from tests.processes import MockUpstreamProcess, WorkerProcess

MODEL = "gpt-4o-mini"  # served by the OpenAI adapter, pointed at the mock upstream
UPSTREAM_PATH = "/v1/chat/completions"


@dataclass(frozen=True)
class LoopSetup:
    """One kill loop: what fails, how often, under how much work."""

    faults: str  # "worker" (SIGKILL the worker) or "redis" (SIGKILL and restart Redis)
    jobs: int
    kills: int
    interval_s: float  # worker: how long each worker works before its kill, on average
    concurrency: int
    latency_ms: float
    deadline_s: float = 240.0
    visibility_timeout_s: float = 5.0
    settle_s: float = 60.0  # after the last fault, how long every job has to end


@dataclass
class FaultNote:
    """What the broker's Redis held just after one fault."""

    at: float  # epoch seconds
    unacked: int  # messages delivered and not acknowledged
    mutex_ttl_s: float | None  # kombu's restore mutex, if held
    mutex_token: bytes | None  # the holder's token (redis-py's lock value)
    leaked: bool = False  # the mutex was left held by a sweep that will never release it


def _request(index: int, setup: LoopSetup) -> InferenceRequest:
    return InferenceRequest.create(
        agent_did="did:key:kill-loop",
        messages=[Message(role=MessageRole.USER, content=f"job {index}")],
        model_id=MODEL,
        enable_cache=False,
        max_tokens=16,
        timeout=setup.deadline_s,
    )


def submit_all(url: str, setup: LoopSetup) -> list[str]:
    """Queue ``setup.jobs`` jobs (a few hundred submits at a time); their ids."""

    async def submit() -> list[str]:
        gateway = ModelGateway(redis_url=url)
        ids: list[str] = []
        try:
            for start in range(0, setup.jobs, 250):
                batch = range(start, min(setup.jobs, start + 250))
                handles = await asyncio.gather(*(gateway.submit(_request(i, setup)) for i in batch))
                ids += [h.job_id for h in handles]
        finally:
            await gateway.close()
        return ids

    return asyncio.run(submit())


def kill_with_children(worker: WorkerProcess) -> None:
    """SIGKILL the worker and any process it started (``l04 worker`` starts none today)."""
    process = worker.process
    if process is None or process.poll() is not None:
        return
    children: list[int] = []
    for task in Path(f"/proc/{process.pid}/task").glob("*/children"):
        children += [int(pid) for pid in task.read_text().split()]
    process.kill()
    for pid in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    process.wait()


class Fleet:
    """The run's processes; :meth:`close` kills whatever is still alive."""

    def __init__(self, setup: LoopSetup, workdir: Path) -> None:
        self.setup = setup
        self.server = LocalRedis(
            appendonly=setup.faults == "redis",
            appendfsync="always",
            data_dir=str(workdir),
        )
        self.upstream = MockUpstreamProcess(latency_ms=setup.latency_ms)
        self.workers: list[WorkerProcess] = []

    def start(self) -> Fleet:
        """Redis and the mock upstream (the workers start one by one, in the loops)."""
        self.server.start()
        self.upstream.start()
        return self

    def start_worker(self) -> WorkerProcess:
        env = {
            "L04_VISIBILITY_TIMEOUT": str(self.setup.visibility_timeout_s),
            "OPENAI_BASE_URL": f"{self.upstream.url}/v1",
            "OPENAI_API_KEY": "sk-kill-loop",
            "CACHE_ENABLED": "false",
        }
        worker = WorkerProcess(self.server.url, "openai", self.setup.concurrency, env)
        self.workers.append(worker)
        return worker.start()

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.server.url, socket_timeout=10)

    def note(self) -> FaultNote:
        """What Redis holds now: delivered messages, and kombu's restore mutex."""
        client = self.client()
        try:
            pipe = client.pipeline(transaction=True)
            pipe.hlen(UNACKED)
            pipe.pttl(UNACKED_MUTEX)
            pipe.get(UNACKED_MUTEX)
            unacked, pttl, token = pipe.execute()
            ttl = pttl / 1000 if pttl > 0 else None
            return FaultNote(time.time(), int(unacked), ttl, token)
        finally:
            client.close()

    def received(self, job_ids: list[str]) -> dict[str, list[int]]:
        """For each job, the workers (from 1, in start order) that logged receiving it."""
        logs = [worker.log() for worker in self.workers]
        return {
            job_id: [n for n, log in enumerate(logs, 1) if f"l04.infer[{job_id}] received" in log]
            for job_id in job_ids
        }

    def close(self) -> None:
        for worker in self.workers:
            kill_with_children(worker)
        self.upstream.stop()
        self.server.stop(kill=True)


def held_messages(fleet: Fleet) -> int:
    """Messages delivered to workers and not acknowledged (0 while Redis is away)."""
    client = fleet.client()
    try:
        return int(client.hlen(UNACKED))
    except redis.RedisError:
        return 0
    finally:
        client.close()


def wait_for(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def wait_until_ended(fleet: Fleet, job_ids: list[str], until: float) -> None:
    """Until every job is in a terminal state, or ``until`` (monotonic) has passed."""
    pending = job_ids
    while pending and time.monotonic() < until:
        client = fleet.client()
        try:
            pending = unended(client, pending)
        except redis.RedisError:
            pass
        finally:
            client.close()
        if pending:
            time.sleep(0.25)
