"""``l04 demo``: the fleet's main job on an embedded default, from nothing to results.

If no Redis answers at REDIS_URL (and it points at this machine), a private redis-server is
started on that port. A mock-provider worker is started, jobs of mixed priorities are submitted
to it, one answer is streamed to the terminal, results are printed, and everything the demo
started is stopped again.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from typing import Any
from urllib.parse import urlparse

from config.settings import load_settings
from gateway_client import InferenceRequest, Message, MessageRole, ModelGateway, Priority
from gateway_core.redis_url import SentinelOptions
from l04.processes import stop_process
from l04.redis_server import LocalRedis, redis_answers

WORKER_SLOTS = 2  # few slots, so that priorities visibly decide who goes first
MOCK_LATENCY_MS = 250


def _start_redis_if_needed(url: str, sentinel: SentinelOptions) -> LocalRedis | None:
    if redis_answers(url, sentinel=sentinel):
        print(f"Redis answers at {url}")
        return None
    parsed = urlparse(url)
    if parsed.hostname not in ("localhost", "127.0.0.1", "::1"):
        raise SystemExit(f"no Redis answers at {url}, and it is not on this machine")
    server = LocalRedis(port=parsed.port or 6379).start()
    print(f"No Redis answered at {url}: started redis-server on port {server.port}")
    return server


def _start_worker(url: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "REDIS_URL": url,
        "L04_MOCK_LATENCY_MS": str(MOCK_LATENCY_MS),
        "L04_MOCK_CHUNKS": "16",
    }
    if "L01_BASE_URL" not in os.environ:
        # No L01 data layer to ship usage records to: the worker would warn about it between
        # the demo's lines. With L01_BASE_URL set, records are kept and shipped as usual.
        env.setdefault("L04_USAGE_EVENTS", "false")
        print("Usage records for L01: off in the demo (set L01_BASE_URL to ship them)")
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "l04",
            "worker",
            "--providers",
            "mock",
            "--concurrency",
            str(WORKER_SLOTS),
            "--loglevel",
            "WARNING",
        ],
        env=env,
        stdout=subprocess.DEVNULL,  # Celery's banner; warnings still reach stderr
    )


def _request(text: str, priority: Priority, **fields: Any) -> InferenceRequest:
    return InferenceRequest.create(
        agent_did="did:key:demo",
        messages=[
            Message(role=MessageRole.SYSTEM, content="You are a helpful assistant."),
            Message(role=MessageRole.USER, content=text),
        ],
        model_id="mock",
        max_tokens=200,
        priority=priority,
        timeout=60,
        **fields,
    )


async def _run_jobs(gateway: ModelGateway, jobs: int) -> None:
    # Wait until a worker listens on the mock queue.
    for _ in range(150):
        health = await gateway.health_check()
        if health["workers"].get("l04.mock"):
            break
        await asyncio.sleep(0.2)
    else:
        raise SystemExit("the worker did not come up within 30 s")

    print("\nStreaming one answer:")
    request = _request(
        "Stream me a sentence, please.", Priority.HIGH, metadata={"mock": {"chunk_delay_ms": 60}}
    )
    async for chunk in gateway.stream(request):
        print(chunk.content_delta, end="", flush=True)
        if chunk.is_final and chunk.token_usage is not None:
            print(f"\n  [{chunk.sequence} chunks, {chunk.token_usage.total_tokens} tokens]")

    plan = [Priority.LOW] * (jobs // 2) + [Priority.NORMAL] * (jobs // 4)
    plan += [Priority.HIGH] * (jobs - len(plan))
    print(f"\nSubmitting {len(plan)} jobs (LOW first, HIGH last) to {WORKER_SLOTS} worker slots:")
    handles = []
    for index, priority in enumerate(plan):
        handle = await gateway.submit(_request(f"Question {index + 1}", priority))
        handles.append((index + 1, priority, handle))
    results = await asyncio.gather(*(h.result() for _, _, h in handles), return_exceptions=True)
    statuses = [await h.status() for _, _, h in handles]
    order = sorted(range(len(statuses)), key=lambda i: statuses[i].started_at or 0)
    rank = {i: n + 1 for n, i in enumerate(order)}
    print(f"\n{'job':>4} {'priority':>8} {'started':>8}  answer")
    for i, (number, priority, _) in enumerate(handles):
        result = results[i]
        text = result.content if not isinstance(result, BaseException) else repr(result)
        print(f"{number:>4} {priority.value:>8} {rank[i]:>7}.  {text}")
    last_low = max(rank[i] for i, (_, p, _) in enumerate(handles) if p is Priority.LOW)
    overtook = [
        n for i, (n, p, _) in enumerate(handles) if p is not Priority.LOW and rank[i] < last_low
    ]
    print(
        f"\nSubmitted after every LOW job, {len(overtook)} of "
        f"{sum(p is not Priority.LOW for _, p, _ in handles)} HIGH/NORMAL jobs started before "
        f"the last LOW job did."
    )


def run_demo(jobs: int = 12) -> int:
    settings = load_settings()
    redis_server = _start_redis_if_needed(settings.redis_url, settings.sentinel)
    url = redis_server.url if redis_server else settings.redis_url
    worker = _start_worker(url)
    started = time.monotonic()
    try:

        async def main() -> None:
            async with ModelGateway(redis_url=url) as gateway:
                await _run_jobs(gateway, jobs)

        asyncio.run(main())
        print(f"\nDemo finished in {time.monotonic() - started:.1f}s; cleaning up.")
        return 0
    finally:
        stop_process(worker, timeout=20)
        if redis_server is not None:
            redis_server.stop()
