"""The Python ways into the webhook outbox: a batch made with ``notify`` (its end adds the event
in batch_move.lua), and ``WebhookOutbox.add``, alone or in the MULTI of another change."""

from __future__ import annotations

import json

import pytest
import redis
from redis.asyncio import Redis

from gateway_client.batch.store import BatchStatus, BatchStore
from gateway_client.gateway import ModelGateway
from gateway_client.webhook_outbox import WebhookOutbox
from gateway_core import keys
from gateway_core.errors import InvalidParameters
from tests.conftest import make_request


def outbox_events(client: redis.Redis) -> list[tuple[dict[str, object], str]]:
    found = []
    for member in client.zrange(keys.WEBHOOK_OUTBOX, 0, -1):
        delivery = json.loads(member)
        found.append((json.loads(delivery["e"]), delivery["k"]))
    return found


async def test_a_batch_made_with_notify_adds_its_event_when_it_ends(
    redis_url: str, redis_client: redis.Redis
) -> None:
    client = Redis.from_url(redis_url)
    try:
        store = BatchStore(client)
        made = await store.create(
            "b1",
            input_file="in.jsonl",
            output_dir="out",
            model=None,
            priority="low",
            agent_did="did:key:a",
            completion_window_s=86_400,
            notify="batch_b1",
            key_id="vk_0123456789abcdef",
        )
        assert made
        await store.move("b1", BatchStatus.IN_PROGRESS, BatchStatus.VALIDATING)
        assert outbox_events(redis_client) == []
        await store.move("b1", BatchStatus.CANCELLING, BatchStatus.IN_PROGRESS)
        await store.move("b1", BatchStatus.CANCELLED, BatchStatus.CANCELLING)
    finally:
        await client.aclose()
    ((event, key_id),) = outbox_events(redis_client)
    assert event["type"] == "batch.cancelled" and event["data"] == {"id": "batch_b1"}
    assert key_id == "vk_0123456789abcdef"


async def test_add_in_the_same_transaction_as_a_change(
    redis_url: str, redis_client: redis.Redis
) -> None:
    client = Redis.from_url(redis_url)
    try:
        outbox = WebhookOutbox(client)
        async with client.pipeline(transaction=True) as pipe:
            pipe.hset("some:record", "status", "completed")
            await outbox.add("batch.completed", "batch_x", "vk_1", client=pipe)
            await pipe.execute()
        await outbox.add("batch.expired", "batch_y")
        with pytest.raises(ValueError, match="not a webhook event type"):
            await outbox.add("batch.started", "batch_z")
        with pytest.raises(ValueError, match="object's id"):
            await outbox.add("batch.failed", "")
    finally:
        await client.aclose()
    found = {event["type"]: (event["data"], key) for event, key in outbox_events(redis_client)}
    assert found == {
        "batch.completed": ({"id": "batch_x"}, "vk_1"),
        "batch.expired": ({"id": "batch_y"}, ""),
    }
    assert redis_client.hget("some:record", "status") == b"completed"


async def test_submit_records_notify_in_the_job_and_refuses_a_bad_one(
    redis_url: str, redis_client: redis.Redis
) -> None:
    async with ModelGateway(redis_url=redis_url) as gateway:
        handle = await gateway.submit(make_request(), notify="response")
        custom = await gateway.submit(make_request(), notify="response:resp_given")
        plain = await gateway.submit(make_request())
        with pytest.raises(InvalidParameters, match="notify must be"):
            await gateway.submit(make_request(), notify="batch")
    assert redis_client.hget(keys.job(handle.job_id), "notify") == (
        f"response:resp_{handle.job_id}".encode()
    )
    assert redis_client.hget(keys.job(custom.job_id), "notify") == b"response:resp_given"
    assert redis_client.hget(keys.job(plain.job_id), "notify") is None
