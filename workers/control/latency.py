"""Call latencies the fleet measures, per model, for latency-optimized routing.

Each worker folds every successful call's latency into an exponentially weighted moving average
in one Redis hash, so the router sees what the whole fleet measured. A worker sends its samples
every half second, all models in one script, not one call per job.
"""

from __future__ import annotations

from collections import defaultdict

from redis.asyncio import Redis

from gateway_core import keys
from workers.coalesce import Coalescer

WEIGHT = 0.2  # of each new sample
KEEP_S = 24 * 3600
FLUSH_S = 0.5

# KEYS: the latency hash. ARGV: weight, keep seconds, then for each model: its name, how many
# samples follow, and the samples in ms, oldest first.
_RECORD = """
local w = tonumber(ARGV[1])
local i = 3
while i <= #ARGV do
  local model, count = ARGV[i], tonumber(ARGV[i + 1])
  local value = tonumber(redis.call('HGET', KEYS[1], model))
  for j = i + 2, i + 1 + count do
    local sample = tonumber(ARGV[j])
    if value then value = value * (1 - w) + sample * w else value = sample end
  end
  redis.call('HSET', KEYS[1], model, string.format('%.3f', value))
  i = i + 2 + count
end
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
"""


class LatencyTracker:
    def __init__(self, redis: Redis, flush_s: float = FLUSH_S) -> None:
        self._redis = redis
        self._record = redis.register_script(_RECORD)
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
