"""The deliverer in this process, on a real Redis, against real sockets: what it does with a
target that never answers 2xx (retries, then drops past L04_WEBHOOK_RETRY_HOURS with a log line
and a metric), and what it counts."""

from __future__ import annotations

import asyncio
import logging

import pytest
import redis
from redis.asyncio import Redis

from config.settings import load_settings
from gateway_client.webhook_outbox import WebhookOutbox
from gateway_core import keys, metrics
from gateway_core.webhooks import new_secret
from l04.redis_server import free_port
from workers.webhook_delivery import WebhookDeliverer


def count(event: str, outcome: str) -> float:
    return metrics.WEBHOOK_DELIVERIES.labels(event, outcome)._value.get()


async def deliver_until_empty(deliverer: WebhookDeliverer, redis_client: redis.Redis) -> None:
    """One delivery round, then up to a second for the outbox to empty."""
    await deliverer.deliver_once()
    for _ in range(50):
        if not redis_client.exists(keys.WEBHOOK_OUTBOX):
            return
        await asyncio.sleep(0.02)


async def test_a_target_that_never_answers_is_retried_then_dropped(
    redis_url: str, redis_client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    secret = new_secret()
    settings = load_settings(
        L04_WEBHOOK_URL=f"http://127.0.0.1:{free_port()}/nobody",  # refused: nothing listens
        L04_WEBHOOK_SECRET=secret,
        L04_WEBHOOK_RETRY_HOURS=2 / 3600,  # two seconds
        L04_WEBHOOK_BACKOFF_S=0.1,
        L04_WEBHOOK_TIMEOUT=1,
    )
    client = Redis.from_url(redis_url)
    deliverer = WebhookDeliverer(client, settings)
    retries, dropped = count("batch.failed", "retry"), count("batch.failed", "dropped")
    caplog.set_level(logging.INFO, logger="workers.webhook_delivery")
    try:
        await WebhookOutbox(client).add("batch.failed", "batch_never")
        loop = asyncio.get_running_loop()
        give_up = loop.time() + 10
        while redis_client.exists(keys.WEBHOOK_OUTBOX) and loop.time() < give_up:
            await deliverer.deliver_once()
        await deliverer.deliver_once()  # idle: reads the outbox's size
    finally:
        await deliverer.aclose()
        await client.aclose()
    assert not redis_client.exists(keys.WEBHOOK_OUTBOX)  # dropped, not kept forever
    assert count("batch.failed", "retry") - retries >= 2  # retried meanwhile
    assert count("batch.failed", "dropped") - dropped == 1
    assert metrics.WEBHOOK_OUTBOX_PENDING._value.get() == 0
    assert any("dropped" in r.getMessage() and r.levelno == logging.ERROR for r in caplog.records)
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "L04_WEBHOOK_URL" in logged  # the target by name: never its URL or secret
    assert "/nobody" not in logged and secret not in logged


async def test_an_event_with_no_target_is_dropped_at_once(
    redis_url: str, redis_client: redis.Redis
) -> None:
    client = Redis.from_url(redis_url)
    deliverer = WebhookDeliverer(client, load_settings())  # no global URL; the key has none
    before = count("response.failed", "dropped")
    try:
        await WebhookOutbox(client).add("response.failed", "resp_x", "vk_0123456789abcdef")
        await deliver_until_empty(deliverer, redis_client)
    finally:
        await deliverer.aclose()
        await client.aclose()
    assert not redis_client.exists(keys.WEBHOOK_OUTBOX)
    assert count("response.failed", "dropped") - before == 1


async def test_a_delivery_that_is_no_event_is_dropped_not_retried(
    redis_url: str, redis_client: redis.Redis
) -> None:
    redis_client.zadd(keys.WEBHOOK_OUTBOX, {"not json": 0, '{"e": "[1]"}': 0})
    client = Redis.from_url(redis_url)
    deliverer = WebhookDeliverer(client, load_settings())
    before = count("unknown", "dropped")
    try:
        await deliver_until_empty(deliverer, redis_client)
    finally:
        await deliverer.aclose()
        await client.aclose()
    assert not redis_client.exists(keys.WEBHOOK_OUTBOX)
    assert count("unknown", "dropped") - before == 2


async def test_a_target_the_http_client_cannot_send_to_is_retried_then_dropped_not_spun(
    redis_url: str, redis_client: redis.Redis
) -> None:
    # "xn--" passes the URL check; httpx raises idna's error (no httpx.HTTPError) at the send.
    # That attempt was never settled: the delivery came back each lease, forever.
    settings = load_settings(
        L04_WEBHOOK_URL="http://xn--/hook",
        L04_WEBHOOK_SECRET=new_secret(),
        L04_WEBHOOK_RETRY_HOURS=1 / 3600,  # one second
        L04_WEBHOOK_BACKOFF_S=0.1,
        L04_WEBHOOK_TIMEOUT=1,
    )
    client = Redis.from_url(redis_url)
    deliverer = WebhookDeliverer(client, settings)
    dropped = count("batch.expired", "dropped")
    try:
        await WebhookOutbox(client).add("batch.expired", "batch_unsendable")
        loop = asyncio.get_running_loop()
        give_up = loop.time() + 8
        while redis_client.exists(keys.WEBHOOK_OUTBOX) and loop.time() < give_up:
            await deliverer.deliver_once()
    finally:
        await deliverer.aclose()
        await client.aclose()
    assert not redis_client.exists(keys.WEBHOOK_OUTBOX)
    assert count("batch.expired", "dropped") - dropped == 1
