"""What submit promises: bad input never enqueued, one job per id, a bounded queue."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable

import pytest
import redis
from celery import Celery

from config.settings import load_settings
from gateway_client import (
    ConfigurationError,
    InferenceRequest,
    Message,
    MessageRole,
    ModelGateway,
    RateLimitError,
    RoutingError,
    ValidationError,
)
from gateway_core import keys as redis_keys
from tasks.message import build_task_message, redis_list_for
from tests.brokers import queued
from tests.conftest import make_request
from tests.fleet import WorkerProcess

MOCK_LISTS = ["l04.mock", "l04.mock\x06\x165", "l04.mock\x06\x169"]


def queued_in_redis(client: redis.Redis) -> int:
    return sum(int(client.llen(name)) for name in MOCK_LISTS)


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


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"messages": []}, "E4501"),
        ({"messages": [{"role": "user", "content": ""}]}, "E4501"),
        ({"messages": [{"role": "wizard", "content": "hi"}]}, "E4501"),
        ({"max_tokens": 0}, "E4502"),
        ({"temperature": 7}, "E4502"),
        ({"timeout": -1}, "E4502"),
        ({"agent_did": ""}, "E4500"),
        ({"deadline": 1e300}, "E4502"),
        ({"deadline": float("inf")}, "E4502"),
        ({"deadline": float("nan")}, "E4502"),
        ({"deadline": time.time() + 2 * 86400}, "E4502"),
        ({"timeout": float("inf")}, "E4502"),
        ({"agent_did": "did:key:a\nb"}, "E4500"),
        ({"agent_did": "did:key:a\x00"}, "E4500"),
        ({"agent_did": "did:key:*"}, "E4500"),
        ({"agent_did": "did:key:{x}"}, "E4500"),
        ({"agent_did": "agent-7"}, "E4500"),
        ({"agent_did": "did:key:" + "a" * 250}, "E4500"),
        ({"metadata": {"x": object()}}, "E4500"),
        ({"metadata": {"x": float("nan")}}, "E4500"),
        ({"priority": "urgent"}, "E4500"),
        ({"surprise": True}, "E4500"),
    ],
)
async def test_invalid_requests_are_refused_at_submit_and_never_enqueued(
    gateway: ModelGateway, redis_client: redis.Redis, fields: dict[str, object], code: str
) -> None:
    data: dict[str, object] = {
        "agent_did": "did:key:test",
        "messages": [{"role": "user", "content": "hi"}],
        "model_id": "mock",
        **fields,
    }
    with pytest.raises(ValidationError) as caught:
        await gateway.submit(data)  # type: ignore[arg-type]
    assert caught.value.code == code
    assert queued_in_redis(redis_client) == 0
    assert redis_client.keys("l04:job:*") == []


async def test_unknown_model_and_missing_capability_are_refused(
    gateway: ModelGateway, redis_client: redis.Redis
) -> None:
    with pytest.raises(ConfigurationError) as caught:
        await gateway.submit(make_request("hi", model_id="no-such-model"))
    assert caught.value.code == "E4001"
    with pytest.raises(RoutingError) as routed:
        await gateway.submit(make_request("hi", required_capabilities=["vision"]))
    assert routed.value.code == "E4101"
    assert queued_in_redis(redis_client) == 0


async def test_job_id_must_be_safe_for_redis_keys(gateway: ModelGateway) -> None:
    with pytest.raises(ValidationError) as caught:
        await gateway.submit(make_request("hi"), job_id="a}b{c")
    assert caught.value.code == "E4500"


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
    # A message from a future client (schema 99) and one of ours without a job id.
    for envelope in ({"v": 99, "job_id": "x"}, {"v": 1, "hello": "world"}):
        message = build_task_message(app, "poison", envelope, "l04.mock", 5)  # type: ignore[arg-type]
        redis_client.lpush(redis_list_for("l04.mock", 5), message)
    for _ in range(100):
        if redis_client.llen(redis_keys.DEAD_LETTERS) == 2:
            break
        await asyncio.sleep(0.05)
    letters = [json.loads(x) for x in redis_client.lrange(redis_keys.DEAD_LETTERS, 0, -1)]
    assert sorted(letter["reason"].split(";")[0] for letter in letters) == [
        "missing or malformed job_id",
        "schema version 99",
    ]
    assert redis_client.ttl(redis_keys.DEAD_LETTERS) > 0
    assert (await gateway.execute(make_request("still alive"))).content.endswith("still alive")
    assert worker.process is not None and worker.process.poll() is None


async def test_seed_constructor_validates() -> None:
    with pytest.raises(ValidationError) as caught:
        InferenceRequest.create(agent_did="did:key:a", messages=[], max_tokens=10)
    assert caught.value.code == "E4501"
    request = InferenceRequest.create(
        agent_did="did:key:a",
        messages=[Message(role=MessageRole.USER, content="hi")],
        temperature=0.2,
        top_p=0.9,
        stop=["END"],
        seed=7,
    )
    assert request.priority.value == "normal"
    assert request.model_id is None and request.enable_cache is True


def test_bad_messages_and_deadlines_are_typed_errors_at_construction() -> None:
    with pytest.raises(ValidationError) as caught:
        Message(role="wizard", content="hi")  # type: ignore[arg-type]
    assert caught.value.code == "E4501" and "role" in caught.value.message
    for deadline in (1e300, float("inf"), time.time() + 86400 + 120):
        with pytest.raises(ValidationError) as caught:
            InferenceRequest.create(
                agent_did="did:key:a",
                messages=[Message(role=MessageRole.USER, content="hi")],
                deadline=deadline,
            )
        assert caught.value.code == "E4502" and "deadline" in caught.value.message
    soon = InferenceRequest.create(
        agent_did="did:key:a",
        messages=[Message(role=MessageRole.USER, content="hi")],
        deadline=time.time() + 3600,
    )
    assert soon.deadline is not None


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
