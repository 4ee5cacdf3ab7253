"""Latency routing on the latencies the fleet measured (a real redis-server, no worker)."""

from __future__ import annotations

from redis.asyncio import Redis

from gateway_client import ModelGateway
from gateway_client.router import measured_latencies
from tests.unit.test_router import ask
from workers.control.latency import LatencyTracker


async def test_latency_routing_uses_what_the_fleet_measured(redis_url: str) -> None:
    client = Redis.from_url(redis_url)
    tracker = LatencyTracker(client)
    tracker.record("gpt-4o", 100.0)
    tracker.record("gpt-4o", 200.0)  # moving average: 100 * 0.8 + 200 * 0.2
    tracker.record("claude-3-haiku-20240307", 40.0)
    await tracker.aclose()  # a worker sends its samples every half second, and when it stops
    assert await measured_latencies(client) == {"gpt-4o": 120.0, "claude-3-haiku-20240307": 40.0}
    async with ModelGateway(redis_url=redis_url) as gateway:
        handle = await gateway.submit(ask(routing={"strategy": "latency_optimized"}))
        assert (await handle.status()).model_id == "claude-3-haiku-20240307"
    await client.aclose()
