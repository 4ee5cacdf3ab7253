"""Submitting embeddings jobs (a real redis-server, no worker): the record, the queue, one job
per id, and the refusals that leave nothing queued."""

from __future__ import annotations

import json

import pytest
import redis

from config.settings import load_settings
from gateway_client import (
    CapabilityNotSupported,
    EmbeddingRequest,
    JobCancelled,
    ModelGateway,
    QueueFull,
    SyncModelGateway,
    ValidationError,
)
from gateway_core import keys
from gateway_core.queues import redis_priority_lists
from gateway_core.virtual_keys import VirtualKeyStore
from tests.conftest import make_request


def queued(client: redis.Redis, queue: str = "l04.mock") -> int:
    return sum(int(client.llen(name)) for name in redis_priority_lists(queue))


def embed_request(**fields: object) -> EmbeddingRequest:
    fields.setdefault("model_id", "mock-embed")
    return EmbeddingRequest.create(agent_did="did:key:test", input=["a", "b"], **fields)  # type: ignore[arg-type]


async def test_an_embeddings_job_is_queued_once_per_job_id(
    gateway: ModelGateway, redis_client: redis.Redis
) -> None:
    key, _ = await VirtualKeyStore(gateway.redis).create(agent_did="did:key:test")
    job = await gateway.embed(embed_request(priority="high"), "emb-1", key_id=key.id)
    again = await gateway.embed(embed_request(), "emb-1", key_id=key.id)
    assert job.job_id == again.job_id == "emb-1"
    assert queued(redis_client) == 1
    record = {k.decode(): v.decode() for k, v in redis_client.hgetall(keys.job("emb-1")).items()}
    assert record["kind"] == "embed" and record["key_id"] == key.id
    assert (record["provider"], record["model"], record["queue"]) == (
        "mock",
        "mock-embed",
        "l04.mock",
    )
    assert record["stream"] == "0" and json.loads(record["chain"]) == ["mock-embed"]
    assert json.loads(record["request"])["input"] == ["a", "b"]
    status = await job.status()
    assert (status.state, status.kind, status.priority) == ("queued", "embed", "high")
    # A chat job's record has no kind (chat) and, without a key, no key_id.
    await gateway.submit(make_request("hi"), "chat-1")
    chat = {k.decode() for k in redis_client.hgetall(keys.job("chat-1"))}
    assert "kind" not in chat and "key_id" not in chat
    assert (await (await gateway.job("chat-1")).status()).kind == "chat"


async def test_refusals_leave_nothing_queued(
    gateway: ModelGateway, redis_client: redis.Redis
) -> None:
    with pytest.raises(CapabilityNotSupported) as chat_model:
        await gateway.embed(embed_request(model_id="gpt-4o-mini"))
    assert chat_model.value.code == "E4101"
    with pytest.raises(CapabilityNotSupported) as embedding_model:
        await gateway.submit(make_request("hi", model_id="mock-embed"))
    assert embedding_model.value.code == "E4101"
    with pytest.raises(ValidationError) as bad:
        await gateway.embed({"agent_did": "did:key:t", "model_id": "mock-embed", "input": []})  # type: ignore[arg-type]
    assert bad.value.code == "E4500"
    with pytest.raises(ValidationError) as too_many:
        await gateway.embed(embed_request(dimensions=64))  # mock-embed's vectors have 16
    assert too_many.value.code == "E4502"
    assert queued(redis_client) == 0 and queued(redis_client, "l04.openai") == 0
    assert redis_client.keys("l04:job:*") == []


async def test_a_job_id_belongs_to_one_kind_of_job(
    gateway: ModelGateway, redis_client: redis.Redis
) -> None:
    await gateway.submit(make_request("hi"), "taken-by-chat")
    await gateway.embed(embed_request(), "taken-by-embed")
    with pytest.raises(ValidationError) as caught:
        await gateway.embed(embed_request(), "taken-by-chat")
    assert caught.value.code == "E4500" and "chat" in caught.value.message
    with pytest.raises(ValidationError):
        await gateway.submit(make_request("hi"), "taken-by-embed")
    with pytest.raises(ValidationError):
        await gateway.embedding_job("taken-by-chat")
    assert (await gateway.embedding_job("taken-by-embed")).job_id == "taken-by-embed"
    assert queued(redis_client) == 2


async def test_a_full_queue_refuses_embeddings_jobs_too(redis_url: str) -> None:
    gateway = ModelGateway(load_settings(REDIS_URL=redis_url, L04_QUEUE_MAX_DEPTH=2))
    try:
        await gateway.embed(embed_request())
        await gateway.submit(make_request("hi"))  # one queue per provider, whatever the kind
        with pytest.raises(QueueFull) as caught:
            await gateway.embed(embed_request())
        assert caught.value.code == "E4403" and caught.value.retry_after == 1.0
    finally:
        await gateway.close()


def test_the_sync_client_submits_inspects_and_cancels_embeddings_jobs(redis_url: str) -> None:
    with SyncModelGateway(redis_url=redis_url) as gateway:
        job = gateway.embed(embed_request(), "sync-emb")
        assert job.job_id == "sync-emb"
        assert (job.status().state, job.status().kind) == ("queued", "embed")
        again = gateway.embedding_job("sync-emb")
        assert again.cancel() is True and job.cancel() is False
        with pytest.raises(JobCancelled):
            job.result(timeout=5)
