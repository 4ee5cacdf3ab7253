"""A worker never dies of broker trouble (fault tier).

Redis, which is the broker and the job store, is restarted while the worker is idle and while it
holds jobs, twice in a row, for 1 s and for 30 s, and the worker's connections are reset. Each
time the worker process must still be alive, every job it held must be answered exactly once
(one terminal event in its record), and a job submitted afterwards must be served.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from gateway_client import GatewayError, InferenceResponse, ModelGateway
from gateway_client.handle import JobHandle
from gateway_core.keys import job_events
from l04.redis_server import LocalRedis
from tests.conftest import FAST_RECOVERY, make_request
from tests.processes import WorkerProcess

pytestmark = [
    pytest.mark.faults,
    pytest.mark.filterwarnings(
        # redis-py drops the stream writers of connections the server killed without closing them.
        "ignore::pytest.PytestUnraisableExceptionWarning"
    ),
]

SLOW = {"mock": {"latency_ms": 2500}}


def terminal_events(server: LocalRedis, job_id: str) -> int:
    client = redis.Redis.from_url(server.url)
    try:
        entries = client.xrange(job_events(job_id))
    finally:
        client.close()
    kinds = [json.loads(fields[b"e"])["type"] for _id, fields in entries]
    return sum(kind in ("result", "error") for kind in kinds)


def attempts(server: LocalRedis, handles: list[JobHandle]) -> list[int]:
    """How many times each job was claimed to run (a second claim: a second provider call)."""
    client = redis.Redis.from_url(server.url)
    try:
        return [int(client.hget(f"l04:job:{{{h.job_id}}}", "attempt") or 0) for h in handles]
    finally:
        client.close()


def kill_connections(server: LocalRedis) -> int:
    """Every client connection but this one is reset by the server (CLIENT KILL)."""
    client = redis.Redis.from_url(server.url)
    try:
        return int(client.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"))
    finally:
        client.close()


async def outage(server: LocalRedis, seconds: float) -> None:
    server.stop()  # SHUTDOWN: the append-only file keeps what was written
    await asyncio.sleep(seconds)
    server.start()


async def serve_next_job(gateway: ModelGateway, timeout: float) -> InferenceResponse:
    """A job submitted now is answered (the producer may itself retry while Redis comes back)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            handle = await gateway.submit(make_request("after the trouble", timeout=timeout))
            return await handle.result(timeout=max(1.0, deadline - time.monotonic()))
        except GatewayError as error:
            if not error.retryable or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


@pytest.mark.timeout(180)
@pytest.mark.parametrize(
    "trouble",
    [
        "idle restart",
        "busy restart",
        "busy restart twice",
        "connection reset",
        pytest.param("30 s outage", marks=pytest.mark.slow),  # 40 s: CI runs the slow tier too
    ],
)
async def test_the_worker_outlives_broker_trouble(trouble: str, tmp_path: Path) -> None:
    server = LocalRedis(appendonly=True, data_dir=str(tmp_path)).start()
    worker = WorkerProcess(server.url, "mock", 20, {**FAST_RECOVERY}).start()
    gateway = ModelGateway(redis_url=server.url)
    handles = []
    try:
        if trouble != "idle restart":
            handles = [
                await gateway.submit(make_request(f"{trouble} {i}", metadata=SLOW, timeout=90))
                for i in range(10)
            ]
            await asyncio.sleep(1.2)  # all ten running; appendfsync everysec has written them
        if trouble == "connection reset":
            assert kill_connections(server) > 0
        elif trouble == "busy restart twice":
            await outage(server, 1.0)
            await asyncio.sleep(1.0)
            await outage(server, 1.0)
        else:
            await outage(server, 30.0 if trouble == "30 s outage" else 1.0)
        answers = await asyncio.gather(*(h.result(timeout=80) for h in handles))
        assert all(a.content for a in answers)
        after = await serve_next_job(gateway, timeout=30)
        assert after.content
        assert worker.process is not None and worker.process.poll() is None, worker.log()[-3000:]
        assert "Unrecoverable error" not in worker.log()
        # One answer in each job's record, and each job run once: no provider call repeated.
        # Past a 30 s outage a finished call's answer is not kept (a worker holds it for
        # REPORT_RETRY_S, 15 s): those jobs run a second time, and still answer once.
        assert [terminal_events(server, h.job_id) for h in handles] == [1] * len(handles)
        most = 2 if trouble == "30 s outage" else 1
        assert all(1 <= n <= most for n in attempts(server, handles)), attempts(server, handles)
    finally:
        await gateway.close()
        worker.stop()
        server.stop()


def test_a_worker_that_must_stop_exits_non_zero_and_says_why(tmp_path: Path) -> None:
    """An operator's ACL takes BRPOP from the worker's user: Celery cannot go on. The process must
    exit non-zero (a supervisor restarting on failure restarts it) with a one-line reason."""
    server = LocalRedis(data_dir=str(tmp_path)).start()
    worker = WorkerProcess(server.url, "mock", 5).start()
    try:
        client = redis.Redis.from_url(server.url)
        client.execute_command("ACL", "SETUSER", "default", "-brpop")
        client.close()
        assert worker.process is not None
        code = worker.process.wait(timeout=30)
    finally:
        worker.stop()
        server.stop()
    assert code == 1, worker.log()[-2000:]
    reason = [line for line in worker.log().splitlines() if line.startswith("l04 worker: stopped")]
    assert reason == [
        "l04 worker: stopped with status 1: Unrecoverable error: auth:NoPermissionError"
    ]


async def test_submit_while_redis_is_down_is_a_retryable_E4407(tmp_path: Path) -> None:
    server = LocalRedis(appendonly=True, data_dir=str(tmp_path)).start()
    gateway = ModelGateway(redis_url=server.url)
    try:
        handle = await gateway.submit(make_request("before", timeout=60))
        server.stop()
        for call in (
            lambda: gateway.submit(make_request("during", timeout=60)),
            lambda: gateway.job(handle.job_id),
            handle.status,
            handle.cancel,
        ):
            with pytest.raises(GatewayError) as caught:
                await asyncio.wait_for(call(), timeout=15)
            assert caught.value.code == "E4407" and caught.value.retryable
            assert caught.value.retry_after == 1.0
        server.start()
        again = await serve_next_job_submitted(gateway)
        assert again == "queued"
    finally:
        await gateway.close()
        server.stop()


async def serve_next_job_submitted(gateway: ModelGateway) -> str:
    """Once Redis is back, submit works again (no worker: the job waits in its queue)."""
    for _ in range(50):
        try:
            handle = await gateway.submit(make_request("after", timeout=60))
            return (await handle.status()).state
        except GatewayError as error:
            assert error.code == "E4407"
            await asyncio.sleep(0.2)
    raise AssertionError("submit never worked again")


@pytest.mark.timeout(120)
async def test_answers_ready_during_an_outage_are_recorded_not_recomputed(tmp_path: Path) -> None:
    """Jobs whose provider call ends while Redis is down keep their answer and record it when
    Redis is back: each job ran once (attempt 1), no provider call repeated."""
    server = LocalRedis(appendonly=True, data_dir=str(tmp_path)).start()
    worker = WorkerProcess(server.url, "mock", 20, {**FAST_RECOVERY}).start()
    gateway = ModelGateway(redis_url=server.url)
    try:
        quick = {"mock": {"latency_ms": 1500}}
        handles = [
            await gateway.submit(make_request(f"ready in the dark {i}", metadata=quick, timeout=90))
            for i in range(10)
        ]
        await asyncio.sleep(1.1)  # all running, appendfsync everysec has written them
        await outage(server, 2.5)  # their answers are ready at 1.5 s, while Redis is away
        answers = await asyncio.gather(*(h.result(timeout=60) for h in handles))
        assert all(a.content for a in answers)
        assert attempts(server, handles) == [1] * len(handles), worker.log()[-3000:]
        assert [terminal_events(server, h.job_id) for h in handles] == [1] * len(handles)
    finally:
        await gateway.close()
        worker.stop()
        server.stop()


async def test_a_caller_waiting_past_its_deadline_through_an_outage_gets_E4407(
    tmp_path: Path,
) -> None:
    """No worker, Redis gone: once the deadline (and its grace) has passed, the caller is told
    the job store is unavailable instead of waiting on."""
    server = LocalRedis(data_dir=str(tmp_path)).start()
    gateway = ModelGateway(redis_url=server.url)
    try:
        handle = await gateway.submit(make_request("no worker", timeout=1))
        server.stop()
        with pytest.raises(GatewayError) as caught:
            await asyncio.wait_for(handle.result(), timeout=30)
        assert caught.value.code == "E4407" and caught.value.retryable
    finally:
        await gateway.close()
        server.stop()


async def test_a_worker_whose_broadcast_connection_drops_keeps_taking_jobs(
    redis_client: redis.Redis,
    gateway: ModelGateway,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    """redis-py reconnects a dropped pub/sub connection inside the read that found it dropped,
    and then reads on, blocking: the worker's consumer thread (which reads Celery's broadcasts
    on that connection) stood still for ``socket_timeout`` (30 s), taking no job. Here the
    drop reaches kombu and Celery, which reconnect, and the next job is served at once."""
    start_worker("mock")
    await gateway.execute(make_request("before"))
    for _ in range(3):
        assert redis_client.client_kill_filter(_type="pubsub") >= 1
        await asyncio.sleep(0.5)
        started = time.monotonic()
        answer = await asyncio.wait_for(gateway.execute(make_request("after")), 25)
        assert answer.content == "Mock response to: after"
        assert time.monotonic() - started < 10, "the worker's consumer stood still"
