"""The exact cache: answers under the hash of their normalized request, with a cap of entries.

The Redis that holds the queues runs with ``noeviction``, so the cache bounds itself: each store
drops entries older than CACHE_TTL from its index and, past ``max_entries``, the oldest ones.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from gateway_core import keys

# KEYS: the entry, the index. ARGV: value, ttl s, max entries.
_STORE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
redis.call('SET', KEYS[1], ARGV[1], 'EX', ttl)
redis.call('ZADD', KEYS[2], now, KEYS[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - ttl * 1000)
local over = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[3])
if over > 0 then
  for _, old in ipairs(redis.call('ZRANGE', KEYS[2], 0, over - 1)) do redis.call('DEL', old) end
  redis.call('ZREMRANGEBYRANK', KEYS[2], 0, over - 1)
end
redis.call('EXPIRE', KEYS[2], ttl)
return 1
"""


class ExactCache:
    def __init__(self, redis: Redis, ttl_s: int, max_entries: int) -> None:
        self._redis = redis
        self._ttl = ttl_s
        self._max = max_entries
        self._store = redis.register_script(_STORE)

    async def get(self, key: str) -> bytes | None:
        value: Any = await self._redis.get(keys.exact_cache(key))
        return value if value is None else bytes(value)

    async def put(self, key: str, value: str) -> None:
        await self._store(
            keys=[keys.exact_cache(key), keys.EXACT_CACHE_INDEX],
            args=[value, self._ttl, self._max],
        )

    async def entries(self) -> int:
        return int(await self._redis.zcard(keys.EXACT_CACHE_INDEX))
