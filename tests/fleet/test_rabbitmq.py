"""RabbitMQ as the broker (``L04_BROKER_URL=amqp://...``): what is particular to it.

The spine, priority, worker-death, rolling-restart and poison-message tests run on both brokers
through the ``broker_url`` fixture; here are the producer's failure on an unreachable broker,
the CLI and Flower on RabbitMQ, and (slow tier) a job that outlives ``consumer_timeout``.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import redis

from config.settings import load_settings
from gateway_client import ModelGateway, RateLimitError
from l04.processes import stop_process
from l04.rabbitmq_server import LocalRabbitMQ
from l04.redis_server import free_port
from tests.brokers import queued
from tests.conftest import make_request
from tests.processes import ARTIFACTS, ROOT, WorkerProcess

AMQP_ONLY = pytest.mark.parametrize("broker_url", ["amqp"], indirect=True)


def l04(redis_url: str, broker_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "l04", *args],
        env={**os.environ, "REDIS_URL": redis_url, "L04_BROKER_URL": broker_url},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_unreachable_broker_is_a_typed_error_that_queues_nothing(
    redis_url: str, redis_client: redis.Redis
) -> None:
    broker = f"amqp://l04:not-this-password@127.0.0.1:{free_port()}//"
    settings = load_settings(REDIS_URL=redis_url, L04_BROKER_URL=broker)
    async with ModelGateway(settings) as gateway:
        started = time.monotonic()
        with pytest.raises(RateLimitError) as caught:
            await gateway.submit(make_request("nowhere to go"), job_id="no-broker")
    assert caught.value.code == "E4400" and caught.value.retryable
    assert "not-this-password" not in str(caught.value)
    assert time.monotonic() - started < 30
    # No job record is left behind: the same id can be submitted once the broker is back.
    assert redis_client.exists("l04:job:{no-broker}") == 0


@AMQP_ONLY
async def test_cli_health_dlq_and_batches_on_rabbitmq(
    broker_url: str,
    redis_url: str,
    gateway: ModelGateway,
    start_worker: Callable[..., WorkerProcess],
    tmp_path: Path,
) -> None:
    metrics_port = free_port()
    worker = start_worker("mock", env={"L04_METRICS_PORT": str(metrics_port)})
    await gateway.submit(make_request("counted"), job_id="counted-1")
    scraped = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text
    assert 'l04_queue_depth{priority="all",queue="l04.mock"}' in scraped
    health = l04(redis_url, broker_url, "health")
    report = json.loads(health.stdout)
    assert report["broker"] == {"ok": True}
    assert report["workers"]["l04.mock"] == [f"{worker.name}@test"]
    assert set(report["queues"]["l04.openai"]) == {"total"}
    assert "guest:guest" not in health.stdout + health.stderr
    listed = l04(redis_url, broker_url, "dlq", "list")
    assert listed.returncode == 0, listed.stderr
    lines = tmp_path / "in.jsonl"
    lines.write_text(
        "".join(
            json.dumps(
                {
                    "custom_id": f"line-{i}",
                    "method": "POST",
                    "url": "/v1/chat/completions",
                    "body": {"model": "mock", "messages": [{"role": "user", "content": f"b{i}"}]},
                }
            )
            + "\n"
            for i in range(5)
        )
    )
    batch = l04(redis_url, broker_url, "batch", "submit", str(lines), "--out", str(tmp_path))
    assert batch.returncode == 0, batch.stdout + batch.stderr
    assert json.loads(batch.stdout)["status"] == "completed"
    batches = l04(redis_url, broker_url, "batch", "list")
    assert batches.returncode == 0 and "completed" in batches.stdout


@AMQP_ONLY
async def test_flower_shows_the_fleet_on_rabbitmq(
    broker_url: str, redis_url: str, start_worker: Callable[..., WorkerProcess]
) -> None:
    worker = start_worker("mock")
    port = free_port()
    with (ARTIFACTS / "flower-amqp.log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "l04", "flower", "--port", str(port)],
            env={
                **os.environ,
                "REDIS_URL": redis_url,
                "L04_BROKER_URL": broker_url,
                "L04_FLOWER_BASIC_AUTH": "admin:flower-pw",
            },
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        workers: dict[str, dict[str, object]] = {}
        while worker.name + "@test" not in workers:
            assert time.monotonic() < deadline, "flower never saw the worker"
            await asyncio.sleep(0.5)
            try:
                reply = httpx.get(f"{url}/api/workers", auth=("admin", "flower-pw"), timeout=5)
                workers = reply.json() if reply.status_code == 200 else {}
            except httpx.HTTPError:
                continue
        queues = workers[worker.name + "@test"]["active_queues"]
        assert isinstance(queues, list)
        assert queues[0]["queue_arguments"] == {"x-max-priority": 9}  # native priorities
        broker_page = httpx.get(f"{url}/broker", auth=("admin", "flower-pw"), timeout=10).text
        assert "amqp://guest:**@" in broker_page and "guest:guest" not in broker_page
    finally:
        stop_process(process)


@pytest.mark.parametrize(
    ("timeout_ms", "tick_ms", "job_ms"),
    [
        # The case, at RabbitMQ's own check interval (a minute): the slow tier.
        pytest.param(
            60_000,
            None,
            150_000,
            marks=[pytest.mark.slow, pytest.mark.timeout(420)],
            id="150s-job-60s-timeout",
        ),
        # The same at a 5 s timeout checked every second: several channel closures in 20 s,
        # short enough for every run of the fault tier.
        pytest.param(
            5_000,
            1_000,
            20_000,
            marks=[pytest.mark.faults, pytest.mark.slow],  # 40 s: CI runs it with the slow tier
            id="20s-job-5s-timeout",
        ),
    ],
)
async def test_a_job_longer_than_consumer_timeout_is_answered_once(
    redis_url: str, redis_client: redis.Redis, timeout_ms: int, tick_ms: int | None, job_ms: int
) -> None:
    """RabbitMQ closes the channel of a delivery unacknowledged past ``consumer_timeout`` (it
    checks periodically: with a 60 s timeout, 60 to 120 s after the delivery in trials) and
    requeues it. The worker must reconnect, not die or hang; the job must run once and be
    answered once; its redelivered copies must be acknowledged, not left to run again."""
    node = LocalRabbitMQ(consumer_timeout_ms=timeout_ms, channel_tick_ms=tick_ms).start()
    # The fleet's default lease (10 s), not the tests' fast-recovery one (1.3 s): no worker dies
    # here, and over 150 s on a busy 2-core machine a 1.3 s lease can lapse under a live job,
    # which hands the job to a waiting copy (fenced correctly, but then attempt 2).
    env = {"L04_BROKER_URL": node.url}
    workers = [WorkerProcess(redis_url, "mock", 10, env).start() for _ in range(2)]
    settings = load_settings(REDIS_URL=redis_url, L04_BROKER_URL=node.url)
    try:
        async with ModelGateway(settings) as gateway:
            long_job = await gateway.submit(
                make_request("long", timeout=300, metadata={"mock": {"latency_ms": job_ms}})
            )
            deadline = time.monotonic() + 2 * (timeout_ms + (tick_ms or 60_000)) / 1000 + 10
            while not any("timed out" in w.log() for w in workers):
                assert time.monotonic() < deadline, "RabbitMQ never closed the channel"
                await asyncio.sleep(1)
            # The channel was closed under the job: the fleet still serves new jobs...
            quick = await gateway.execute(make_request("meanwhile"))
            assert quick.content == "Mock response to: meanwhile"
            # ...and the long job is answered once, by its first and only run.
            response = await long_job.result(timeout=200)
        assert response.attempt == 1
        assert response.content == "Mock response to: long"
        job_key = f"l04:job:{{{long_job.job_id}}}"
        assert redis_client.hget(job_key, "attempt") == b"1"
        events = redis_client.xrange(f"{job_key}:events")
        assert [json.loads(e[1][b"e"])["type"] for e in events] == ["result"]
        # Every delivery of its message was acknowledged: none waits to run again.
        received = f"l04.infer[{long_job.job_id}] received"
        ended = f"l04.infer[{long_job.job_id}] succeeded"
        deadline = time.monotonic() + 30
        while sum(w.log().count(received) for w in workers) > sum(
            w.log().count(ended) for w in workers
        ):
            assert time.monotonic() < deadline, "a delivery of the long job was never settled"
            await asyncio.sleep(0.5)
        assert sum(w.log().count(received) for w in workers) >= 2  # it was redelivered
        assert all(w.process is not None and w.process.poll() is None for w in workers)
        for worker in workers:
            worker.stop(timeout=30)
            assert worker.process is not None and worker.process.returncode == 0
        assert queued(node.url) == 0
    finally:
        for worker in workers:
            worker.stop(timeout=10)
        node.stop()
