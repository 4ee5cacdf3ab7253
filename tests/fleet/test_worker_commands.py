"""Both ways of starting a worker serve the right queues."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

from gateway_client import ModelGateway
from tests.conftest import FAST_RECOVERY, health_with_workers, make_request
from tests.processes import MockUpstreamProcess, WorkerProcess


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
    redis_url: str, gateway: ModelGateway, mock_upstream: MockUpstreamProcess
) -> None:
    worker = WorkerProcess(
        redis_url,
        providers="mock,openai",
        env={
            **FAST_RECOVERY,
            "OPENAI_BASE_URL": f"{mock_upstream.url}/v1",
            "OPENAI_API_KEY": "sk-test",
        },
    )
    worker.start()
    try:
        health = await health_with_workers(gateway, {"l04.mock": 1, "l04.openai": 1})
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


async def test_health_is_honest_about_providers_without_workers(
    redis_url: str, gateway: ModelGateway, mock_upstream: MockUpstreamProcess
) -> None:
    """No worker: unhealthy. Some providers served: degraded. All served: healthy."""
    empty = await gateway.health_check()
    assert empty["gateway"] == "unhealthy"
    assert empty["summary"].startswith("5 of 5 providers not healthy")
    cli = subprocess.run(
        [sys.executable, "-m", "l04", "health"],
        env={**os.environ, "REDIS_URL": redis_url},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cli.returncode == 1 and json.loads(cli.stdout)["gateway"] == "unhealthy"
    worker = WorkerProcess(
        redis_url,
        providers="mock,openai,anthropic,ollama,claude_code",
        env={
            **FAST_RECOVERY,
            "OPENAI_BASE_URL": f"{mock_upstream.url}/v1",
            "OPENAI_API_KEY": "sk-test",
            "ANTHROPIC_BASE_URL": mock_upstream.url,
            "ANTHROPIC_API_KEY": "sk-ant-test",
            "OLLAMA_URL": mock_upstream.url,
            "L04_CLAUDE_CODE_PATH": str(Path(__file__).parent.parent / "bin" / "fake-claude"),
        },
    )
    worker.start()
    try:
        report = await gateway.health_check()
        assert report["gateway"] == "healthy", report
        assert report["summary"] == "all 5 providers healthy"
    finally:
        worker.stop()
