"""Circuit breakers whose state every worker shares through Redis."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from gateway_core.breakers import BreakerState
from workers.control.circuit_breaker import CircuitBreakers


async def test_opens_for_everyone_half_opens_with_one_probe_and_closes(redis_url: str) -> None:
    # Two clients stand for two workers: nothing but Redis is shared.
    a_redis, b_redis = Redis.from_url(redis_url), Redis.from_url(redis_url)
    a = CircuitBreakers(a_redis, failure_threshold=3, recovery_timeout_s=1.0)
    b = CircuitBreakers(b_redis, failure_threshold=3, recovery_timeout_s=1.0)
    try:
        assert (await a.allow("openai")).allowed
        await a.record("openai", success=False)
        await b.record("openai", success=False)
        assert await a.state("openai") is BreakerState.CLOSED
        assert await b.record("openai", success=False) is BreakerState.OPEN

        refused = await a.allow("openai")  # the other worker sees it at once
        assert not refused.allowed and refused.state is BreakerState.OPEN
        assert 0 < refused.retry_in_ms <= 1000

        await asyncio.sleep(1.05)
        permits = await asyncio.gather(*(w.allow("openai") for w in (a, b, a, b)))
        assert sum(p.allowed for p in permits) == 1  # exactly one probe
        assert all(p.state is BreakerState.HALF_OPEN for p in permits)

        assert await a.record("openai", success=False) is BreakerState.OPEN  # probe failed
        assert not (await b.allow("openai")).allowed
        await asyncio.sleep(1.05)
        assert (await b.allow("openai")).allowed
        assert await b.record("openai", success=True) is BreakerState.CLOSED
        assert (await a.allow("openai")).allowed
    finally:
        await a_redis.aclose()
        await b_redis.aclose()


async def test_a_success_resets_the_consecutive_count(redis_url: str) -> None:
    client = Redis.from_url(redis_url)
    breakers = CircuitBreakers(client, failure_threshold=2, recovery_timeout_s=60)
    try:
        await breakers.record("anthropic:claude-3-haiku", success=False)
        await breakers.record("anthropic:claude-3-haiku", success=True)
        assert await breakers.record("anthropic:claude-3-haiku", success=False) is (
            BreakerState.CLOSED
        )
        assert await breakers.record("anthropic:claude-3-haiku", success=False) is (
            BreakerState.OPEN
        )
        assert (await breakers.allow("anthropic")).allowed  # per target: the provider is fine
        assert await client.ttl("l04:cb:{anthropic}:claude-3-haiku") > 0
    finally:
        await client.aclose()
