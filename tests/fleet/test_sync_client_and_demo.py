"""The synchronous client, key expiry, and the demo command run as a user runs it."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Callable

import pytest
import redis

from gateway_client import JobCancelled, ModelGateway, SyncModelGateway
from l04.redis_server import free_port, redis_answers
from tests.conftest import make_request
from tests.processes import ROOT, WorkerProcess


def test_sync_client_executes_streams_and_cancels(
    redis_url: str, start_worker: Callable[..., WorkerProcess]
) -> None:
    start_worker("mock")
    with SyncModelGateway(redis_url=redis_url) as gateway:
        assert gateway.execute(make_request("sync")).content == "Mock response to: sync"
        chunks = list(gateway.stream(make_request("sync stream")))
        assert "".join(c.content_delta for c in chunks) == "Mock response to: sync stream"
        assert chunks[-1].is_final
        handle = gateway.submit(make_request("idle", metadata={"mock": {"latency_ms": 20_000}}))
        assert handle.cancel() is True
        with pytest.raises(JobCancelled):
            handle.result()
        assert handle.status().state == "cancelled"


async def test_every_key_a_job_writes_expires(
    gateway: ModelGateway, redis_client: redis.Redis, start_worker: Callable[..., WorkerProcess]
) -> None:
    start_worker("mock")
    await gateway.execute(make_request("plain"))
    await gateway.submit(make_request("stream"), stream=True)
    cancelled = await gateway.submit(make_request("x", metadata={"mock": {"latency_ms": 9000}}))
    await cancelled.cancel()
    failing = await gateway.submit(make_request("x", metadata={"mock": {"fail": "E4203"}}))
    with pytest.raises(Exception, match="E4203"):
        await failing.result()
    await asyncio.sleep(0.5)
    keys = [k for k in redis_client.scan_iter("l04:*")]
    assert keys
    assert {k: redis_client.ttl(k) for k in keys if redis_client.ttl(k) < 0} == {}


def test_demo_starts_its_own_redis_and_cleans_up() -> None:
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    assert not redis_answers(url)
    environ = {k: v for k, v in os.environ.items() if k != "L01_BASE_URL"}
    result = subprocess.run(
        [sys.executable, "-m", "l04", "demo", "--jobs", "8"],
        env={**environ, "REDIS_URL": url},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"started redis-server on port {port}" in result.stdout
    assert "Mock response to: Stream me a sentence, please." in result.stdout
    assert result.stdout.count("Mock response to: Question") == 8
    # 4 LOW jobs first, then 2 NORMAL and 2 HIGH, on 2 worker slots: all 4 overtake a LOW job.
    assert "4 of 4 HIGH/NORMAL jobs started before the last LOW job did." in result.stdout
    # Without an L01 to ship usage records to, the demo keeps them off instead of warning
    # between its lines.
    assert "Usage records for L01: off in the demo" in result.stdout
    assert "L01 unreachable" not in result.stdout + result.stderr
    assert not redis_answers(url)  # the demo stopped what it started
