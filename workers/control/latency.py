"""Call latencies the fleet measures, per model, for latency-optimized routing.

Each worker folds every successful call's latency into an exponentially weighted moving average
in one Redis hash (one round trip, atomic), so the router sees what the whole fleet measured.
"""

from __future__ import annotations

from redis.asyncio import Redis

from gateway_client import keys

WEIGHT = 0.2  # of the newest sample
KEEP_S = 24 * 3600

# KEYS: the latency hash. ARGV: model, sample ms, weight, keep seconds.
_RECORD = """
local old = tonumber(redis.call('HGET', KEYS[1], ARGV[1]))
local sample, w = tonumber(ARGV[2]), tonumber(ARGV[3])
local value = sample
if old then value = old * (1 - w) + sample * w end
redis.call('HSET', KEYS[1], ARGV[1], string.format('%.3f', value))
redis.call('EXPIRE', KEYS[1], ARGV[4])
return tostring(value)
"""


class LatencyTracker:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._record = redis.register_script(_RECORD)

    async def record(self, model_id: str, latency_ms: float) -> None:
        await self._record(keys=[keys.LATENCIES], args=[model_id, latency_ms, WEIGHT, KEEP_S])


async def measured_latencies(redis: Redis) -> dict[str, float]:
    raw = await redis.hgetall(keys.LATENCIES)
    return {(k.decode() if isinstance(k, bytes) else str(k)): float(v) for k, v in raw.items()}
