"""The fault suite (``pytest -m faults``): poison messages, the dead-letter commands, and Redis
restarted under traffic. Worker deaths mid-job and mid-stream (test_streams_and_recovery), a
provider failing for the fleet (test_failover) and a provider's 429s (test_admission) carry the
mark too. The adapters' handling of 5xx, stalls and cut streams is in test_adapters; what the
caller then sees, through a worker, is in test_provider_faults."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from gateway_client import ModelGateway
from gateway_core.queues import is_redis_broker
from gateway_core.wire import make_envelope
from l04.redis_server import LocalRedis
from tasks.app_config import create_app
from tasks.message import build_task_message
from tests.brokers import drop_queued, push_raw
from tests.conftest import FAST_RECOVERY, make_request
from tests.processes import ROOT, WorkerProcess
from workers.dead_letters import set_aside

pytestmark = pytest.mark.faults
QUEUE = "l04.mock"


def l04(
    redis_url: str, *args: str, broker_url: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "l04", *args],
        env={**os.environ, "REDIS_URL": redis_url, "L04_BROKER_URL": broker_url or redis_url},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


async def test_poison_messages_are_set_aside_and_the_worker_keeps_running(
    broker_url: str,
    gateway: ModelGateway,
    start_worker: Callable[..., WorkerProcess],
    redis_client: redis.Redis,
    redis_url: str,
) -> None:
    worker = start_worker("mock")
    # Raw bytes pushed past every client of ours: onto the Redis list, or by a plain AMQP publish.
    push_raw(broker_url, b"{{{ not json")
    push_raw(broker_url, json.dumps([[{"v": 1, "job_id": "y"}], {}, {}]).encode(), task="l04.nope")
    if is_redis_broker(broker_url):
        app = create_app(gateway.settings)
        redis_client.lpush(
            QUEUE, build_task_message(app, "x1", {"v": 99, "job_id": "x1"}, QUEUE, 5)
        )
    else:  # a well-formed task whose envelope is of a later schema, as Celery publishes it
        gateway._celery.send_task(
            "l04.infer", args=[{"v": 99, "job_id": "x1"}], task_id="x1", queue=QUEUE, priority=5
        )
    push_raw(broker_url, b'"just a string"')
    answer = await gateway.execute(make_request("still alive?"))
    assert answer.content
    deadline = time.monotonic() + 10
    while redis_client.llen("l04:dlq") < 4:
        assert time.monotonic() < deadline, redis_client.lrange("l04:dlq", 0, -1)
        await asyncio.sleep(0.1)
    assert worker.process is not None and worker.process.poll() is None
    listed = l04(redis_url, "dlq", "list", broker_url=broker_url)
    assert listed.returncode == 0
    reasons = [json.loads(line)["reason"] for line in listed.stdout.splitlines()]
    assert {json.loads(line)["code"] for line in listed.stdout.splitlines()} == {"E4503"}
    assert any("undecodable" in r for r in reasons)
    assert any("unknown task" in r for r in reasons)
    assert any("schema version 99" in r for r in reasons)
    replay = l04(redis_url, "dlq", "replay", broker_url=broker_url)
    assert replay.returncode == 1 and "not replayable" in replay.stdout  # none can be resent
    assert redis_client.llen("l04:dlq") == 4  # and they stay for an operator to look at


async def test_dlq_replay_resends_a_waiting_job(
    broker_url: str,
    gateway: ModelGateway,
    start_worker: Callable[..., WorkerProcess],
    redis_client: redis.Redis,
    redis_url: str,
) -> None:
    handle = await gateway.submit(make_request("lost message"))
    drop_queued(broker_url)  # its message is gone from the queue
    await set_aside(gateway.redis, make_envelope(handle.job_id), "set aside by an old worker")
    start_worker("mock")
    await asyncio.sleep(0.5)
    assert (await handle.status()).state == "queued"
    # Replay publishes through the broker (on RabbitMQ, an AMQP publish by Celery).
    replay = l04(redis_url, "dlq", "replay", broker_url=broker_url)
    assert replay.returncode == 0, replay.stdout + replay.stderr
    assert (await handle.result(timeout=10)).content
    assert redis_client.llen("l04:dlq") == 0


# When the server dies, redis-py drops the stream writers of the connections it had open without
# closing them; their ResourceWarnings surface at garbage collection, outside our code.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
async def test_redis_restarted_under_traffic_loses_no_queued_job(tmp_path: Path) -> None:
    server = LocalRedis(appendonly=True, data_dir=str(tmp_path)).start()
    worker = WorkerProcess(server.url, "mock", 20, {**FAST_RECOVERY}).start()
    gateway = ModelGateway(redis_url=server.url)
    try:
        slow = {"mock": {"latency_ms": 1000}}
        handles = [
            await gateway.submit(make_request(f"through a restart {i}", metadata=slow, timeout=60))
            for i in range(100)
        ]
        await asyncio.sleep(0.5)  # twenty running, eighty queued
        time.sleep(1.2)  # appendfsync everysec: what was written is on disk
        server.stop(kill=True)
        await asyncio.sleep(1.0)
        server.start()
        state = redis.Redis.from_url(server.url)
        left = sum(int(state.llen(n)) for n in state.scan_iter("l04.mock*"))
        state.close()
        assert left >= 40  # the queued jobs came back from the append-only file
        outcomes = await asyncio.gather(
            *(h.result(timeout=90) for h in handles), return_exceptions=True
        )
    finally:
        await gateway.close()
        worker.stop()
        server.stop()
    errors = [o for o in outcomes if isinstance(o, BaseException)]
    assert errors == []
    # Every job answered, once: the queued ones from the append-only file, the running ones
    # because a worker that could not report hands its message back instead of acking it.
    assert len({o.job_id for o in outcomes if not isinstance(o, BaseException)}) == 100
