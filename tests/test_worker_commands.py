"""Both ways of starting a worker serve the right queues."""

from __future__ import annotations

import asyncio
import sys

from gateway_client import ModelGateway
from tests.conftest import FAST_RECOVERY, make_request
from tests.fleet import MockUpstreamProcess, WorkerProcess


async def test_celery_command_starts_a_working_worker(
    redis_url: str, gateway: ModelGateway
) -> None:
    worker = WorkerProcess(redis_url, env=FAST_RECOVERY)
    worker.command = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "tasks",
        "worker",
        "-Q",
        "l04.mock",
        "-c",
        "20",
        "-n",
        "plain-celery@test",
        "--loglevel",
        "INFO",
    ]
    worker.start()
    try:
        response = await gateway.execute(make_request("via celery"))
        assert response.content == "Mock response to: via celery"
        # The app's own pool, with no -P given.
        inspect = gateway._celery.control.inspect(destination=["plain-celery@test"], timeout=2)
        stats = await asyncio.to_thread(inspect.stats)
        assert stats["plain-celery@test"]["pool"]["implementation"] == (
            "workers.asyncio_pool:AsyncioPool"
        )
        assert "concurrency: 20 (asyncio_pool)" in worker.log()
    finally:
        worker.stop()


async def test_l04_worker_subscribes_to_every_provider_it_is_given(
    redis_url: str, gateway: ModelGateway, upstream: MockUpstreamProcess
) -> None:
    worker = WorkerProcess(
        redis_url,
        providers="mock,openai",
        env={**FAST_RECOVERY, "OPENAI_BASE_URL": f"{upstream.url}/v1", "OPENAI_API_KEY": "sk-test"},
    )
    worker.start()
    try:
        health = await gateway.health_check()
        assert health["workers"]["l04.mock"] == [f"{worker.name}@test"]
        assert health["workers"]["l04.openai"] == [f"{worker.name}@test"]
        assert health["workers"]["l04.anthropic"] == []
        assert (await gateway.execute(make_request("m"))).provider == "mock"
        openai = await gateway.execute(make_request("o", model_id="gpt-4o"))
        assert (openai.provider, openai.content) == ("openai", "Hello! How can I assist you today?")
    finally:
        worker.stop()


async def test_a_separate_broker_works(redis_url: str) -> None:
    from config.settings import load_settings

    broker = redis_url.rsplit("/", 1)[0] + "/1"  # another Redis database as the broker
    worker = WorkerProcess(redis_url, env={**FAST_RECOVERY, "L04_BROKER_URL": broker})
    worker.start()
    try:
        settings = load_settings(REDIS_URL=redis_url, L04_BROKER_URL=broker)
        async with ModelGateway(settings) as gateway:
            response = await gateway.execute(make_request("two redises"))
            assert response.content == "Mock response to: two redises"
            streamed = [c async for c in gateway.stream(make_request("streamed"))]
            assert "".join(c.content_delta for c in streamed) == "Mock response to: streamed"
    finally:
        worker.stop()


def test_l04_worker_runs_the_asyncio_pool(redis_url: str) -> None:
    worker = WorkerProcess(redis_url, env=FAST_RECOVERY)
    worker.start()
    try:
        assert "(asyncio_pool)" in worker.log()
    finally:
        worker.stop()
