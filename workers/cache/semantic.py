"""The semantic cache: answers found by the meaning of the question, within an exact scope.

In Redis, per scope (keys share the scope's hash tag): ``:vec`` entry id -> float32 bytes,
``:resp`` entry id -> the answer, ``:order`` entry id -> when it was stored, and ``:log``, a
stream of the ids added. Each worker keeps the scopes it has seen in memory
(:class:`VectorIndex`) and, before every search, reads the log from where it left off: an entry
another worker stored is seen by the next lookup, well within a second. Entries expire after
CACHE_TTL and each scope keeps at most ``max_entries``, oldest evicted first; a worker that finds
an evicted entry forgets it and answers from the provider.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray
from redis.asyncio import Redis

from gateway_core import keys
from gateway_core.lua_scripts import register
from workers.cache.vector_index import VectorIndex


@dataclass
class _Scope:
    index: VectorIndex
    last_log_id: str = "0-0"
    loaded: bool = False
    checked: float = field(default=0.0)


class SemanticCache:
    def __init__(
        self, redis: Redis, ttl_s: int, max_entries: int, threshold: float, dimensions: int = 0
    ) -> None:
        self._redis = redis
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self.threshold = threshold
        self._scopes: dict[str, _Scope] = {}
        self._store = register(redis, "workers", "semantic_cache_store")

    @staticmethod
    def _keys(scope: str) -> list[str]:
        prefix = keys.semantic_cache(scope)
        return [f"{prefix}:vec", f"{prefix}:resp", f"{prefix}:order", f"{prefix}:log"]

    async def search(self, scope: str, vector: NDArray[np.float32]) -> tuple[bytes, float] | None:
        """The stored answer most similar to ``vector`` in ``scope``, at or above the threshold."""
        local = await self._sync(scope, vector.shape[0])
        if local is None:
            return None
        not_before = (time.time() - self.ttl_s) * 1000
        while True:
            found = local.index.search(vector, self.threshold, not_before)
            if found is None:
                return None
            entry_id, score = found
            answer: Any = await self._redis.hget(self._keys(scope)[1], entry_id)
            if answer is not None:
                return answer, score
            local.index.remove(entry_id)  # evicted or expired in Redis: forget it here too

    async def put(
        self, scope: str, entry_id: str, vector: NDArray[np.float32], answer: str
    ) -> None:
        data = np.asarray(vector, dtype=np.float32).tobytes()
        await self._store(
            keys=self._keys(scope), args=[entry_id, data, answer, self.ttl_s, self.max_entries]
        )

    async def _sync(self, scope: str, dimensions: int) -> _Scope | None:
        """Bring this worker's copy of ``scope`` up to date with Redis."""
        local = self._scopes.get(scope)
        if local is None or local.index.dimensions != dimensions:
            local = self._scopes[scope] = _Scope(VectorIndex(dimensions))
        vec, _, order, log = self._keys(scope)
        if not local.loaded or len(local.index) > 2 * self.max_entries:
            await self._load(local, vec, order, log)
            return local
        entries: Any = await self._redis.xrange(log, min=f"({local.last_log_id}", max="+")
        if entries:
            ids = [_str(fields[b"id"]) for _, fields in entries]
            stamps = [float(fields[b"at"]) for _, fields in entries]
            vectors: Any = await self._redis.hmget(vec, ids)
            for entry_id, stamp, raw in zip(ids, stamps, vectors, strict=True):
                if raw is not None:
                    self._add(local, entry_id, raw, stamp)
            local.last_log_id = _str(entries[-1][0])
        return local

    async def _load(self, local: _Scope, vec: str, order: str, log: str) -> None:
        last: Any = await self._redis.xrevrange(log, count=1)
        ranked: Any = await self._redis.zrange(order, 0, -1, withscores=True)
        stamps = dict(ranked)
        vectors: Any = await self._redis.hgetall(vec)
        local.index = VectorIndex(local.index.dimensions)
        for raw_id, raw in vectors.items():
            stamp = stamps.get(raw_id)
            if stamp is not None:
                self._add(local, _str(raw_id), raw, stamp)
        local.last_log_id = _str(last[0][0]) if last else "0-0"
        local.loaded = True

    @staticmethod
    def _add(local: _Scope, entry_id: str, raw: bytes, stamp: float) -> None:
        vector = np.frombuffer(raw, dtype=np.float32)
        if vector.shape == (local.index.dimensions,):
            local.index.add(entry_id, vector, stamp)

    def memory_bytes(self) -> int:
        return sum(scope.index.nbytes for scope in self._scopes.values())

    def local_entries(self) -> int:
        return sum(len(scope.index) for scope in self._scopes.values())


def _str(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
