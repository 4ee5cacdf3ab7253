"""Embeddings jobs through real workers: the mock provider's vectors, OpenAI's over the mock
upstream (usage, dimensions, one call per job id), the limits, retries, the deadline, cancel."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import redis

from gateway_client import (
    DeadlineExceeded,
    EmbeddingRequest,
    InvalidRequest,
    JobCancelled,
    ModelGateway,
    ProviderRejected,
    RateLimited,
)
from gateway_core import keys
from gateway_core.virtual_keys import VirtualKeyStore
from tests.fleet.test_deadlines_and_cancel import openai_env, wait_until_drained
from tests.processes import MockUpstreamProcess, WorkerProcess
from workers.providers.mock import mock_vector

EMBEDDINGS = "/v1/embeddings"


def embed_request(input: str | list[str], **fields: object) -> EmbeddingRequest:
    fields.setdefault("model_id", "mock-embed")
    return EmbeddingRequest.create(agent_did="did:key:embedder", input=input, **fields)  # type: ignore[arg-type]


def as_float32(vector: list[float]) -> list[float]:
    return [float(x) for x in np.asarray(vector, dtype=np.float32)]


@pytest.fixture
def embed_worker(
    start_worker: Callable[..., WorkerProcess], mock_upstream: MockUpstreamProcess
) -> WorkerProcess:
    return start_worker("mock,openai", env=openai_env(mock_upstream))


async def test_a_mock_embeddings_job_runs_end_to_end(
    gateway: ModelGateway, embed_worker: WorkerProcess, redis_client: redis.Redis
) -> None:
    texts = ["reset my password", "how do I reset my password", "bake a cake"]
    key, _ = await VirtualKeyStore(gateway.redis).create(agent_did="did:key:test")
    job = await gateway.embed(embed_request(texts), key_id=key.id)
    response = await job.result(timeout=20)
    assert (response.provider, response.model_id, response.job_id) == (
        "mock",
        "mock-embed",
        job.job_id,
    )
    assert response.vectors == [as_float32(mock_vector(t, 16)) for t in texts]
    assert all(math.isclose(float(np.dot(v, v)), 1.0, rel_tol=1e-5) for v in response.vectors)
    assert response.token_usage.prompt_tokens == embed_request(texts).input_tokens() > 0
    assert response.token_usage.completion_tokens == 0
    assert response.cached is False and response.cost == 0.0 and response.attempt == 1
    status = await job.status()
    assert (status.state, status.kind) == ("succeeded", "embed")
    assert redis_client.hget(keys.job(job.job_id), "key_id") == key.id.encode()

    # Any process takes it up again by its id; read as a chat job, it is a typed error.
    assert await (await gateway.embedding_job(job.job_id)).result() == response
    with pytest.raises(InvalidRequest) as caught:
        await (await gateway.job(job.job_id)).result()
    assert caught.value.code == "E4500" and "embedding_job" in caught.value.message

    shorter = await (await gateway.embed(embed_request("hi there", dimensions=4))).result()
    assert shorter.vectors == [as_float32(mock_vector("hi there", 4))]


async def test_an_openai_embeddings_job_reports_usage_and_calls_once_per_job_id(
    gateway: ModelGateway, embed_worker: WorkerProcess, mock_upstream: MockUpstreamProcess
) -> None:
    texts = ["hello world", "the quick brown fox"]
    request = embed_request(texts, model_id="text-embedding-3-small", dimensions=256)
    # The upstream answers slowly, so the second and third submits find the job running.
    mock_upstream.faults({"latency_ms": 800, "path": EMBEDDINGS})
    jobs = await asyncio.gather(*(gateway.embed(request, "emb-once") for _ in range(3)))
    answers = await asyncio.gather(*(job.result(timeout=20) for job in jobs))
    again = await (await gateway.embed(request, "emb-once")).result(timeout=20)
    assert answers[0] == answers[1] == answers[2] == again
    assert mock_upstream.requests_to(EMBEDDINGS) == 1  # one job, one provider call

    response = answers[0]
    assert (response.provider, response.model_id) == ("openai", "text-embedding-3-small")
    assert [len(v) for v in response.vectors] == [256, 256]
    assert response.token_usage.prompt_tokens == 6  # the upstream's usage.prompt_tokens
    assert response.cost == pytest.approx(6 / 1000 * 0.00002)
    sent = mock_upstream.last(EMBEDDINGS)
    assert sent["body"] == {"model": "text-embedding-3-small", "input": texts, "dimensions": 256}
    headers = {k.lower(): v for k, v in sent["headers"].items()}
    assert headers["authorization"] == "Bearer sk-test-deadlines"


async def test_provider_errors_are_retried_and_mapped_as_for_chat(
    gateway: ModelGateway, embed_worker: WorkerProcess, mock_upstream: MockUpstreamProcess
) -> None:
    mock_upstream.faults({"status": 503, "count": 2, "path": EMBEDDINGS})
    response = await (
        await gateway.embed(embed_request("retry me", model_id="text-embedding-3-small"))
    ).result(timeout=20)
    assert len(response.vectors) == 1 and mock_upstream.requests_to(EMBEDDINGS) == 3

    mock_upstream.faults({"status": 400, "path": EMBEDDINGS})
    with pytest.raises(ProviderRejected) as caught:
        await (
            await gateway.embed(embed_request("refused", model_id="text-embedding-3-small"))
        ).result(timeout=20)
    assert caught.value.code == "E4201"  # not retried: a 400 is about this request
    assert mock_upstream.requests_to(EMBEDDINGS) == 4


async def test_the_deadline_holds_for_a_running_embeddings_job(
    gateway: ModelGateway, embed_worker: WorkerProcess
) -> None:
    slow = embed_request("slow", timeout=1.0, metadata={"mock": {"latency_ms": 10_000}})
    with pytest.raises(DeadlineExceeded) as caught:
        await (await gateway.embed(slow)).result(timeout=10)
    assert caught.value.code == "E4205"


async def test_a_cancelled_queued_embeddings_job_never_reaches_the_provider(
    gateway: ModelGateway,
    start_worker: Callable[..., WorkerProcess],
    mock_upstream: MockUpstreamProcess,
) -> None:
    # No worker serves openai yet: the job waits in its queue.
    job = await gateway.embed(embed_request("never", model_id="text-embedding-3-small"))
    assert await job.cancel() is True
    assert await job.cancel() is False
    with pytest.raises(JobCancelled) as caught:
        await job.result()
    assert caught.value.code == "E4405"

    start_worker("openai", env=openai_env(mock_upstream))
    await wait_until_drained(gateway, "l04.openai")
    assert mock_upstream.requests_to(EMBEDDINGS) == 0
    assert (await job.status()).state == "cancelled"


LIMITED_CATALOG = """
[[models]]
model_id = "mock-embed"
provider = "mock"
kind = "embedding"
context_window = 8192
embedding_dimensions = 16
limits = { requests_per_minute = 100, tokens_per_minute = 20 }
"""


async def test_embeddings_jobs_take_the_input_tokens_from_the_limits(
    gateway: ModelGateway, start_worker: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    catalog = tmp_path / "catalog.toml"
    catalog.write_text(LIMITED_CATALOG)
    start_worker("mock", env={"L04_CATALOG": str(catalog)})
    twelve = " ".join(["word"] * 12)  # 12 tokens
    assert embed_request(twelve).input_tokens() == 12

    first = await (await gateway.embed(embed_request(twelve))).result(timeout=20)
    assert first.token_usage.prompt_tokens == 12
    # 12 + 12 > 20 tokens in the minute: over the limit, and fail_fast says fail at once.
    with pytest.raises(RateLimited) as over:
        await (await gateway.embed(embed_request(twelve, fail_fast=True))).result(timeout=20)
    assert over.value.code == "E4401" and over.value.details["limit"] == "model tokens per minute"
    assert over.value.retry_after is not None and over.value.retry_after > 0
    # More than the whole limit can never pass: not retryable.
    with pytest.raises(RateLimited) as never:
        await (await gateway.embed(embed_request(twelve + " " + twelve))).result(timeout=20)
    assert never.value.code == "E4401" and never.value.retryable is False
