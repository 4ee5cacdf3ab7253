"""The exact cache: answers under the hash of their normalized request, with a cap of entries.

The Redis that holds the queues runs with ``noeviction``, so the cache bounds itself: each store
drops entries older than CACHE_TTL from its index and, past ``max_entries``, the oldest ones.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from gateway_core import keys
from gateway_core.lua_scripts import register


class ExactCache:
    def __init__(self, redis: Redis, ttl_s: int, max_entries: int) -> None:
        self._redis = redis
        self._ttl = ttl_s
        self._max = max_entries
        self._store = register(redis, "workers", "exact_cache_store")

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
