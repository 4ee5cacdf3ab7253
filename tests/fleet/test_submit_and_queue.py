"""What submit promises: bad input never enqueued, one job per id, a bounded queue."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import pytest
import redis
from celery import Celery

from config.settings import load_settings
from gateway_client import (
    ModelGateway,
    RateLimitError,
    ValidationError,
)
from gateway_core import keys as redis_keys
from tasks.message import build_task_message, redis_list_for
from tests.brokers import queued
from tests.conftest import make_request
from tests.processes import WorkerProcess


async def test_submit_result_status_and_stream(
    broker_url: str, gateway: ModelGateway, start_worker: Callable[..., WorkerProcess]
) -> None:
    """The spine, on both brokers: submit, status, result, a stream, a stream resumed."""
    start_worker("mock")
    handle = await gateway.submit(make_request("spine"))
    response = await handle.result(timeout=20)
    assert response.content == "Mock response to: spine" and response.attempt == 1
    assert (await handle.status()).state == "succeeded"
    assert (await gateway.execute(make_request("again"))).content == "Mock response to: again"
    streamed = await gateway.submit(
        make_request("chunks", metadata={"mock": {"chunks": 6}}), stream=True
    )
    chunks = [c async for c in streamed.stream(timeout=20)]
    assert [c.sequence for c in chunks] == list(range(len(chunks))) and chunks[-1].is_final
    assert "".join(c.content_delta for c in chunks) == "Mock response to: chunks"
    rest = [c async for c in (await gateway.job(streamed.job_id)).stream(after_sequence=2)]
    assert rest == chunks[3:]
    assert queued(broker_url) == 0


async def test_same_job_id_submitted_twice_is_one_job(
    broker_url: str, gateway: ModelGateway, start_worker: Callable[..., WorkerProcess]
) -> None:
    first = await gateway.submit(make_request("once"), job_id="order-42")
    second = await gateway.submit(make_request("once again"), job_id="order-42")
    assert first.job_id == second.job_id == "order-42"
    assert queued(broker_url) == 1
    worker = start_worker("mock")
    assert (await second.result()).content == "Mock response to: once"
    assert worker.log().count("l04.infer[order-42] received") == 1


async def test_full_queue_fails_fast_with_E4403(broker_url: str, redis_url: str) -> None:
    # On RabbitMQ the depth is the queue's count of ready messages (a passive queue_declare).
    settings = load_settings(REDIS_URL=redis_url, L04_BROKER_URL=broker_url, L04_QUEUE_MAX_DEPTH=5)
    async with ModelGateway(settings) as gateway:
        for _ in range(5):
            await gateway.submit(make_request("fill"))
        with pytest.raises(RateLimitError) as caught:
            await gateway.submit(make_request("one too many"))
    assert caught.value.code == "E4403"
    assert caught.value.retryable
    assert queued(broker_url) == 5


async def test_unreadable_message_is_set_aside_and_the_worker_keeps_going(
    gateway: ModelGateway, redis_client: redis.Redis, start_worker: Callable[..., WorkerProcess]
) -> None:
    worker = start_worker("mock")
    app: Celery = gateway._celery
    # A message from a future client (schema 99), one of ours without a job id, and one for a
    # job nobody submitted.
    for envelope in ({"v": 99, "job_id": "x"}, {"v": 1, "hello": "world"}, {"v": 1, "job_id": "g"}):
        message = build_task_message(app, "poison", envelope, "l04.mock", 5)  # type: ignore[arg-type]
        redis_client.lpush(redis_list_for("l04.mock", 5), message)
    for _ in range(100):
        if redis_client.llen(redis_keys.DEAD_LETTERS) == 3:
            break
        await asyncio.sleep(0.05)
    letters = [json.loads(x) for x in redis_client.lrange(redis_keys.DEAD_LETTERS, 0, -1)]
    assert sorted((letter["reason"].split(";")[0], letter["code"]) for letter in letters) == [
        ("missing or malformed job_id", "E4503"),
        ("no such job: never submitted, or expired", "E4406"),
        ("schema version 99", "E4503"),
    ]
    assert redis_client.ttl(redis_keys.DEAD_LETTERS) > 0
    assert (await gateway.execute(make_request("still alive"))).content.endswith("still alive")
    assert worker.process is not None and worker.process.poll() is None


async def test_a_bad_mock_option_is_E4502_naming_it(
    gateway: ModelGateway, start_worker: Callable[..., WorkerProcess]
) -> None:
    worker = start_worker("mock")
    bad = make_request("hi", metadata={"mock": {"latency_ms": "abc"}})
    with pytest.raises(ValidationError) as caught:
        await gateway.execute(bad)
    assert caught.value.code == "E4502"
    assert "metadata.mock.latency_ms" in caught.value.message
    assert "Traceback" not in worker.log()
