"""The response cache through real workers, the mock upstream's chat and embeddings, real Redis."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import numpy as np
import pytest
import redis

from gateway_client import InferenceRequest, Message, MessageRole, ModelGateway
from gateway_core.redis_pool import make_redis
from l04.redis_server import free_port
from tests.processes import MockUpstreamProcess, WorkerProcess
from workers.cache.exact import ExactCache
from workers.cache.response_cache import cache_stats
from workers.cache.semantic import SemanticCache

CHAT = "/v1/chat/completions"


def ask(text: str, system: str = "You are terse.", **fields: object) -> InferenceRequest:
    fields.setdefault("model_id", "gpt-4o-mini")
    fields.setdefault("temperature", 0)
    return InferenceRequest.create(
        agent_did="did:key:cache",
        messages=[
            Message(role=MessageRole.SYSTEM, content=system),
            Message(role=MessageRole.USER, content=text),
        ],
        **fields,  # type: ignore[arg-type]
    )


@pytest.fixture
def cache_env(mock_upstream: MockUpstreamProcess) -> dict[str, str]:
    return {
        "OPENAI_BASE_URL": f"{mock_upstream.url}/v1",
        "OPENAI_API_KEY": "sk-test-cache",
        "OLLAMA_URL": mock_upstream.url,  # embeddings: Ollama's /api/embed, the default
    }


async def test_exact_repeat_hits_also_when_streamed(
    gateway: ModelGateway,
    start_worker: Callable[..., WorkerProcess],
    mock_upstream: MockUpstreamProcess,
    cache_env: dict[str, str],
) -> None:
    start_worker("openai", env=cache_env)
    request = ask("Name a prime number.", temperature=0.9)  # exact cache: any temperature
    first = await gateway.execute(request)
    second = await gateway.execute(request)
    assert not first.cached and second.cached
    assert second.content == first.content and second.cost == 0.0
    assert mock_upstream.requests_to(CHAT) == 1

    chunks = [c async for c in gateway.stream(request)]
    assert len(chunks) > 2 and chunks[-1].is_final
    assert "".join(c.content_delta for c in chunks) == first.content
    assert chunks[-1].response is not None and chunks[-1].response.cached
    assert mock_upstream.requests_to(CHAT) == 1

    fresh = await gateway.execute(ask("Name a prime number.", temperature=0.9, enable_cache=False))
    assert not fresh.cached and mock_upstream.requests_to(CHAT) == 2
    client = make_redis(gateway.settings.redis_url)
    for _ in range(40):  # workers send their counts every half second
        stats = await cache_stats(client)
        if stats["hits_exact"] == 2:
            break
        await asyncio.sleep(0.1)
    await client.aclose()
    assert stats["hits_exact"] == 2 and stats["entries"] == 1 and stats["bytes"] > 0


async def test_a_paraphrase_hits_and_what_differs_misses(
    gateway: ModelGateway,
    start_worker: Callable[..., WorkerProcess],
    mock_upstream: MockUpstreamProcess,
    cache_env: dict[str, str],
) -> None:
    start_worker("openai", env=cache_env)
    original = await gateway.execute(ask("What is the capital of France?"))
    paraphrase = await gateway.execute(ask("what is the capital city of France"))
    assert paraphrase.cached and paraphrase.content == original.content
    assert mock_upstream.requests_to(CHAT) == 1
    assert mock_upstream.requests_to("/api/embed") == 2

    misses = [
        ask("What is the capital city of France?", model_id="gpt-4o"),  # another model
        ask("What is the capital city of France?", system="Answer in French."),  # system prompt
        ask("What is the capital city of France?", temperature=0.7),  # not deterministic
        ask("What is the capital city of France?", max_tokens=7),  # other parameters
        ask("How tall is the Eiffel tower?"),  # another question
    ]
    for request in misses:
        assert not (await gateway.execute(request)).cached, request
    assert mock_upstream.requests_to(CHAT) == 1 + len(misses)
    # An explicit opt-in allows a reused answer at any temperature.
    opted = await gateway.execute(
        ask("Which city is the capital of Spain?", temperature=0.7, semantic_cache=True)
    )
    assert not opted.cached
    again = await gateway.execute(
        ask("which city is the capital of Spain", temperature=0.7, semantic_cache=True)
    )
    assert again.cached


async def test_the_cache_going_down_does_not_fail_inference(
    gateway: ModelGateway,
    start_worker: Callable[..., WorkerProcess],
    mock_upstream: MockUpstreamProcess,
    cache_env: dict[str, str],
) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    worker = start_worker("openai", env={**cache_env, "L04_CACHE_REDIS_URL": dead})
    for _ in range(2):
        response = await gateway.execute(ask("Still there?"))
        assert not response.cached and response.content
    assert mock_upstream.requests_to(CHAT) == 2
    assert "E4300 cache error" in worker.log()


async def test_an_embedding_failure_skips_only_the_semantic_cache(
    gateway: ModelGateway,
    start_worker: Callable[..., WorkerProcess],
    mock_upstream: MockUpstreamProcess,
    cache_env: dict[str, str],
) -> None:
    worker = start_worker(
        "openai", env={**cache_env, "OLLAMA_URL": f"http://127.0.0.1:{free_port()}"}
    )
    first = await gateway.execute(ask("Is the sky blue?"))
    assert not first.cached
    assert (await gateway.execute(ask("Is the sky blue?"))).cached  # exact still works
    assert not (await gateway.execute(ask("is the sky really blue"))).cached
    assert "embedding failed (E4200" in worker.log() or "embedding failed (E4202" in worker.log()


def vector(seed: int, dims: int = 64) -> np.ndarray:  # type: ignore[type-arg]
    return np.random.default_rng(seed).standard_normal(dims).astype(np.float32)


async def test_every_worker_sees_another_workers_entry_at_once(redis_url: str) -> None:
    client = make_redis(redis_url)
    writer = SemanticCache(client, ttl_s=60, max_entries=100, threshold=0.9)
    reader = SemanticCache(client, ttl_s=60, max_entries=100, threshold=0.9)
    assert await reader.search("scope", vector(1)) is None  # the reader has loaded the scope
    await writer.put("scope", "a", vector(1), '{"content": "A"}')
    found = await asyncio.wait_for(reader.search("scope", vector(1) * 3), timeout=1.0)
    assert found is not None and found[0] == b'{"content": "A"}' and found[1] > 0.999
    assert await reader.search("other-scope", vector(1)) is None  # never across scopes
    await client.aclose()


async def test_the_cache_is_bounded_oldest_first(redis_url: str, redis_client: redis.Redis) -> None:
    client = make_redis(redis_url)
    semantic = SemanticCache(client, ttl_s=60, max_entries=5, threshold=0.99)
    for i in range(8):
        await semantic.put("s", f"e{i}", vector(i), f'{{"n": {i}}}')
    kept = redis_client.zrange("l04:cache:{sem:s}:order", 0, -1)
    assert kept == [f"e{i}".encode() for i in range(3, 8)]
    assert redis_client.hlen("l04:cache:{sem:s}:vec") == 5
    reader = SemanticCache(client, ttl_s=60, max_entries=5, threshold=0.99)
    assert await reader.search("s", vector(0)) is None  # evicted
    assert await reader.search("s", vector(7)) is not None

    exact = ExactCache(client, ttl_s=60, max_entries=3)
    for i in range(5):
        await exact.put(f"k{i}", "x" * 10)
    assert await exact.entries() == 3
    assert await exact.get("k0") is None and await exact.get("k4") == b"x" * 10
    assert redis_client.ttl("l04:cache:{exact}:k4") > 0  # entries expire (CACHE_TTL)
    await client.aclose()
