"""Fixtures: a private redis-server, worker processes and the mock upstream, all real."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator

import pytest
import redis

from gateway_client import InferenceRequest, Message, MessageRole, ModelGateway
from l04.redis_server import LocalRedis
from tests.fleet import MockUpstreamProcess, WorkerProcess

# Workers in tests hand a dead worker's jobs to another within a few seconds.
FAST_RECOVERY = {"L04_VISIBILITY_TIMEOUT": "4"}


@pytest.fixture(scope="session")
def redis_server() -> Iterator[LocalRedis]:
    server = LocalRedis().start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: LocalRedis) -> str:
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    return redis_server.url


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def start_worker(redis_url: str) -> Iterator[Callable[..., WorkerProcess]]:
    """Start ``l04 worker`` processes; all are stopped after the test."""
    started: list[WorkerProcess] = []

    def start(
        providers: str = "mock", concurrency: int = 50, env: dict[str, str] | None = None
    ) -> WorkerProcess:
        worker = WorkerProcess(redis_url, providers, concurrency, {**FAST_RECOVERY, **(env or {})})
        started.append(worker.start())
        return worker

    yield start
    for worker in started:
        worker.stop(timeout=10)


@pytest.fixture(scope="session")
def upstream() -> Iterator[MockUpstreamProcess]:
    server = MockUpstreamProcess().start()
    yield server
    server.stop()


@pytest.fixture
def mock_upstream(upstream: MockUpstreamProcess) -> MockUpstreamProcess:
    upstream.reset()
    return upstream


@pytest.fixture
async def gateway(redis_url: str) -> AsyncIterator[ModelGateway]:
    client = ModelGateway(redis_url=redis_url)
    yield client
    await client.close()


def make_request(text: str = "Hello, world!", **fields: object) -> InferenceRequest:
    fields.setdefault("model_id", "mock")
    fields.setdefault("agent_did", "did:key:test")
    return InferenceRequest.create(
        messages=[Message(role=MessageRole.USER, content=text)],
        **fields,  # type: ignore[arg-type]
    )
