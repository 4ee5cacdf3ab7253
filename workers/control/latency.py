"""Call latencies the fleet measures, per model, for latency-optimized routing.

Each worker folds every successful call's latency into an exponentially weighted moving average
in one Redis hash, so the router sees what the whole fleet measured. A worker sends its samples
every half second, all models in one script, not one call per job.
"""

from __future__ import annotations

from collections import defaultdict

from redis.asyncio import Redis

from gateway_core import keys
from gateway_core.lua_scripts import register
from workers.coalesce import Coalescer

WEIGHT = 0.2  # of each new sample
KEEP_S = 24 * 3600
FLUSH_S = 0.5


class LatencyTracker:
    def __init__(self, redis: Redis, flush_s: float = FLUSH_S) -> None:
        self._redis = redis
        self._record = register(redis, "workers", "latency_record")
        self._pending: Coalescer[tuple[str, float]] = Coalescer(self._send, flush_s)

    def record(self, model_id: str, latency_ms: float) -> None:
        """Count one successful call's latency (sent to Redis within ``flush_s``)."""
        self._pending.add((model_id, latency_ms))

    async def _send(self, samples: list[tuple[str, float]]) -> None:
        by_model: dict[str, list[float]] = defaultdict(list)
        for model_id, latency_ms in samples:
            by_model[model_id].append(latency_ms)
        args: list[str | float] = [WEIGHT, KEEP_S]
        for model_id, values in by_model.items():
            args += [model_id, len(values), *(round(v, 3) for v in values)]
        await self._record(keys=[keys.LATENCIES], args=args)

    async def aclose(self) -> None:
        await self._pending.aclose()
