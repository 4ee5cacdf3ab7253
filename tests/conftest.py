"""Fixtures: a private redis-server, worker processes and the mock upstream, all real.

The tests come in three tiers, one folder each, marked by it: ``unit`` (no Redis, seconds),
``redis`` (scripts and stores against a real redis-server, no worker) and ``fleet`` (real worker
processes). ``make test-fast`` runs the first two; ``make test`` runs all three.

A test that takes the ``broker_url`` fixture runs twice, as dramatiq's tests do: once with the
job-state Redis as the broker, once with RabbitMQ (``L04_BROKER_URL=amqp://...``); its
``gateway`` and ``start_worker`` then use that broker. Other tests use Redis only.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
import redis

from config.settings import load_settings
from gateway_client import InferenceRequest, Message, MessageRole, ModelGateway
from l04.rabbitmq_server import RabbitMQNotInstalled
from l04.redis_server import LocalRedis
from tests.brokers import SessionRabbitMQ, clear_amqp_queues
from tests.processes import MockUpstreamProcess, ServerProcess, WorkerProcess

TIERS = ("unit", "redis", "fleet")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Each test is marked with its tier, the folder it is in (``pytest -m fleet``)."""
    for item in items:
        tier = item.path.parent.name
        if tier in TIERS:
            item.add_marker(getattr(pytest.mark, tier))


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


@pytest.fixture(scope="session")
def rabbitmq() -> Iterator[SessionRabbitMQ]:
    """RabbitMQ for this session: a vhost of its own on the node at 127.0.0.1:5672, or a node of
    its own where nothing answers there."""
    try:
        server = SessionRabbitMQ().start()
    except RabbitMQNotInstalled as missing:
        if os.environ.get("L04_REQUIRE_TOOLS"):
            pytest.fail(str(missing))
        pytest.skip(str(missing))
    yield server
    server.stop()


@pytest.fixture(params=["redis", "amqp"])
def broker_url(request: pytest.FixtureRequest, redis_url: str) -> str:
    """The broker, both ways: Redis (the job-state Redis itself) and RabbitMQ (empty queues)."""
    if request.param == "redis":
        return redis_url
    server: SessionRabbitMQ = request.getfixturevalue("rabbitmq")
    clear_amqp_queues(server.url)
    return server.url


def _broker_of(request: pytest.FixtureRequest, redis_url: str) -> str:
    """The test's broker: ``broker_url`` where the test takes it, else the job-state Redis."""
    if "broker_url" in request.fixturenames:
        return str(request.getfixturevalue("broker_url"))
    return redis_url


@pytest.fixture
def start_worker(
    request: pytest.FixtureRequest, redis_url: str
) -> Iterator[Callable[..., WorkerProcess]]:
    """Start ``l04 worker`` processes; all are stopped after the test."""
    started: list[WorkerProcess] = []
    broker = _broker_of(request, redis_url)
    broker_env = {} if broker == redis_url else {"L04_BROKER_URL": broker}

    def start(
        providers: str = "mock", concurrency: int = 50, env: dict[str, str] | None = None
    ) -> WorkerProcess:
        worker = WorkerProcess(
            redis_url, providers, concurrency, {**FAST_RECOVERY, **broker_env, **(env or {})}
        )
        started.append(worker.start())
        return worker

    yield start
    for worker in started:
        worker.stop(timeout=10)


@pytest.fixture
def start_server(redis_url: str) -> Iterator[Callable[..., ServerProcess]]:
    """Start ``l04 serve`` processes on the test's Redis; all are stopped after the test."""
    started: list[ServerProcess] = []

    def start(**options: object) -> ServerProcess:
        server = ServerProcess(redis_url, **options)  # type: ignore[arg-type]
        started.append(server.start())
        return server

    yield start
    for server in started:
        server.stop(timeout=10)


@pytest.fixture(scope="module")
def module_door(
    request: pytest.FixtureRequest, redis_server: LocalRedis, upstream: MockUpstreamProcess
) -> Iterator[ServerProcess]:
    """One ``l04 serve --no-auth`` and one worker for a whole test module (its
    ``DOOR_PROVIDERS``), on a Redis emptied once, at the module's start: for modules whose tests
    only talk to the door, to spare a server and a worker start per test."""
    from tests.fleet.test_providers_end_to_end import fleet_env

    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    providers = getattr(request.module, "DOOR_PROVIDERS", "mock")
    env = {**FAST_RECOVERY, **fleet_env(upstream)}
    worker = WorkerProcess(redis_server.url, providers, 50, env).start()
    server = ServerProcess(redis_server.url, no_auth=True).start()
    yield server
    server.stop(timeout=10)
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
async def gateway(request: pytest.FixtureRequest, redis_url: str) -> AsyncIterator[ModelGateway]:
    broker = _broker_of(request, redis_url)
    if broker == redis_url:
        client = ModelGateway(redis_url=redis_url)
    else:
        client = ModelGateway(load_settings(REDIS_URL=redis_url, L04_BROKER_URL=broker))
    yield client
    await client.close()


async def health_with_workers(
    gateway: ModelGateway, queues: dict[str, int], timeout: float = 10.0
) -> dict[str, Any]:
    """``gateway.health_check()`` once each queue named has its number of workers: a worker that
    is busy or has just started can miss the check's one-second broadcast. The last report if
    they never show (the test's own assertions then say what is wrong)."""
    deadline = time.monotonic() + timeout
    while True:
        report = await gateway.health_check()
        workers = report.get("workers", {})
        if all(len(workers.get(q, [])) == n for q, n in queues.items()):
            return report
        if time.monotonic() > deadline:
            return report
        await asyncio.sleep(0.2)


def make_request(text: str = "Hello, world!", **fields: object) -> InferenceRequest:
    fields.setdefault("model_id", "mock")
    fields.setdefault("agent_did", "did:key:test")
    return InferenceRequest.create(
        messages=[Message(role=MessageRole.USER, content=text)],
        **fields,  # type: ignore[arg-type]
    )
