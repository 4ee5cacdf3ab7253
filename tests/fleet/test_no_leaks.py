"""No leaks: after a run that touches every feature, each key the fleet wrote in Redis either
expires or belongs to a job that is still live. A gateway runs for months on one Redis with
``noeviction``: a key written once per job, agent or model without an expiry fills it."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import redis

from config.catalog import load_catalog
from gateway_client import GatewayError, InferenceResponse, ModelGateway
from gateway_client.batch import BatchRunner
from gateway_core.virtual_keys import VirtualKeyStore
from tests.brokers import poison
from tests.conftest import make_request
from tests.processes import MockUpstreamProcess, WorkerProcess

CATALOG = """
default_model = "mock"

[[models]]
model_id = "mock"
provider = "mock"
context_window = 128000
max_output_tokens = 8192

[[models]]
model_id = "mock-limited"
provider = "mock"
provider_model = "mock"
context_window = 128000
max_output_tokens = 8192
limits = { requests_per_minute = 2, tokens_per_minute = 100000 }

[[models]]
model_id = "gpt-4o-mini"
provider = "openai"
context_window = 128000
max_output_tokens = 16384
cost_per_1k_input = 0.00015
cost_per_1k_output = 0.0006

[agents."did:key:quota"]
token_quota = 100000
cost_quota = 10.0
requests_per_minute = 50
"""

# Kombu's own bookkeeping for the Redis transport, which it manages itself: the exchange
# bindings with their expiry tables (``_kombu.binding.*``, ``_kombu.binding_deadlines``,
# ``_kombu.binding_permanent.*``: a few per queue, for the life of the deployment) and the
# messages delivered but not yet acknowledged (``unacked``/``unacked_index``: emptied as messages
# are acknowledged; an empty hash or set does not exist).
BROKER_KEYS = ("_kombu.", "unacked", "unacked_index")
# Virtual keys' records: configuration an operator makes with `l04 keys create` (a handful, not
# one per job), kept after revocation for `l04 keys list`. What a key's jobs write (its rate
# limits and quotas) expires like everything else.
KEY_RECORDS = ("l04:vkey:", "l04:vkeys")


@pytest.fixture
def catalog_path(tmp_path: Path) -> str:
    path = tmp_path / "catalog.toml"
    path.write_text(CATALOG)
    return str(path)


@pytest.fixture
async def client(redis_url: str, catalog_path: str) -> AsyncIterator[ModelGateway]:
    gateway = ModelGateway(redis_url=redis_url, catalog=load_catalog(catalog_path))
    yield gateway
    await gateway.close()


def keys_without_expiry(redis_client: redis.Redis) -> list[str]:
    found = []
    for key in redis_client.scan_iter("*", count=1000):
        name = key.decode()
        if redis_client.ttl(key) == -1 and not name.startswith(BROKER_KEYS + KEY_RECORDS):
            found.append(name)
    return sorted(found)


async def exercise_everything(
    client: ModelGateway, upstream: MockUpstreamProcess, tmp_path: Path
) -> None:
    """Answers, streams, both caches, waits at a limit, quotas, failover, breakers, retries,
    cancels, deadlines, a batch and a poison message."""
    upstream.faults({"status": 503, "count": 40, "path": "/v1/chat/completions"})
    jobs = [client.execute(make_request(f"plain {i}", agent_did="did:key:quota")) for i in range(5)]
    jobs += [
        client.execute(make_request(f"limited {i}", model_id="mock-limited")) for i in range(5)
    ]
    jobs += [
        client.execute(
            make_request(
                "openai down",
                model_id="gpt-4o-mini",
                routing={"fallback_models": ["mock"]},
            )
        )
        for _ in range(6)
    ]
    key, _ = await VirtualKeyStore(client.redis).create(
        agent_did="did:key:keyed", rpm=100, tpm=100_000, token_quota=100_000, cost_quota=10.0
    )

    async def keyed(text: str) -> InferenceResponse:
        handle = await client.submit(make_request(text, agent_did=key.agent_did), key_id=key.id)
        return await handle.result(timeout=30)

    jobs += [keyed(f"keyed {i}") for i in range(3)]
    jobs += [client.execute(make_request("same question", temperature=0.0)) for _ in range(3)]
    jobs += [client.execute(make_request("the same question?", temperature=0.0))]
    results = await asyncio.gather(*jobs, return_exceptions=True)
    assert not [r for r in results if isinstance(r, BaseException)], results
    chunks = [c async for c in client.stream(make_request("stream me"))]
    assert chunks[-1].is_final

    slow = await client.submit(make_request("cancel me", metadata={"mock": {"latency_ms": 3000}}))
    await asyncio.sleep(0.3)
    assert await slow.cancel()
    with contextlib.suppress(GatewayError):
        await client.execute(
            make_request("too slow", timeout=1, metadata={"mock": {"latency_ms": 3000}})
        )
    runner = BatchRunner(client)
    info = await runner.run_requests(
        [(f"line-{i}", make_request(f"batch {i}")) for i in range(5)],
        batch_id="leaks",
        out_dir=tmp_path,
    )
    assert info.completed == 5
    await client.redis.rpush("l04.mock", poison(b"\xff not json"))


async def watch_prefixes(redis_client: redis.Redis, seen: set[str]) -> None:
    """Until cancelled: the kinds of key (``l04:<kind>:...``) that exist, added to ``seen``.
    Watched during the run, since some live only a rate-limit window (2 s here)."""

    def scan() -> set[str]:
        return {k.decode().split(":")[1] for k in redis_client.scan_iter("l04:*", count=1000)}

    while True:
        seen |= await asyncio.to_thread(scan)
        await asyncio.sleep(0.2)


async def test_every_key_expires_or_belongs_to_a_live_job(
    client: ModelGateway,
    start_worker: Callable[..., WorkerProcess],
    upstream: MockUpstreamProcess,
    redis_client: redis.Redis,
    catalog_path: str,
    tmp_path: Path,
) -> None:
    upstream.reset()
    worker = start_worker(
        "mock,openai",
        env={
            "L04_CATALOG": catalog_path,
            "L04_RATE_LIMIT_WINDOW": "2",
            "OPENAI_BASE_URL": f"{upstream.url}/v1",
            "OPENAI_API_KEY": "sk-leaks",
            "L04_EMBEDDING_PROVIDER": "ollama",
            "OLLAMA_URL": upstream.url,
            "L04_CIRCUIT_BREAKER_RECOVERY_TIMEOUT": "1",
        },
    )
    written: set[str] = set()
    watcher = asyncio.create_task(watch_prefixes(redis_client, written))
    try:
        await exercise_everything(client, upstream, tmp_path)
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
    deadline = time.monotonic() + 10
    while redis_client.llen("l04.mock") and time.monotonic() < deadline:
        await asyncio.sleep(0.1)  # the poison message is taken and set aside
    await asyncio.sleep(1.0)

    # While the worker runs: its own heartbeat and leases expire too.
    assert keys_without_expiry(redis_client) == []
    worker.stop()
    assert keys_without_expiry(redis_client) == []
    # And the run did write what it should have: jobs, events, caches, limits, a batch (seen
    # during the run, or still there at its end: the poison message is set aside last).
    written |= {k.decode().split(":")[1] for k in redis_client.scan_iter("l04:*")}
    assert {"job", "cache", "rl", "quota", "batch", "dlq", "cb", "usage", "latency"} <= written, (
        written
    )
    # (a key's rate-limit counts, like a model's, are gone by now: they live a window)
    assert redis_client.keys("l04:quota:{key:*}:*"), "the keyed jobs took from the key's quota"
