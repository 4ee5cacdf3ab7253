"""The cache as the worker's pipeline sees it: look up before the provider call, store after.

The exact cache answers first; the semantic cache is asked only when the request allows a
reused answer (see :func:`workers.cache.normalize.semantic_query`). A failing cache never fails
the job: a Redis error (E4300) or an embedding error (E4301) is counted and logged, and the job
goes on to the provider; that part of the cache is then skipped for a few seconds so a dead
cache does not add a timeout to every job.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
from redis.asyncio import Redis

from config.catalog import ModelSpec
from config.settings import GatewaySettings
from gateway_core import keys, metrics
from gateway_core.errors import GatewayError
from gateway_core.messages import ToolCall
from gateway_core.redis_pool import make_redis
from gateway_core.request import InferenceRequest
from gateway_core.response import TokenUsage
from workers.cache.exact import ExactCache
from workers.cache.normalize import exact_key, semantic_query
from workers.cache.semantic import SemanticCache
from workers.coalesce import Coalescer
from workers.providers import ProviderResult, ProviderSet

log = logging.getLogger(__name__)

COOLDOWN_S = 5.0  # after a cache or embedding error, skip that part this long
MAX_ANSWER_BYTES = 1_000_000  # larger answers are not cached
STATS_TTL_S = 7 * 86_400
STATS_FLUSH_S = 0.5


@dataclass
class CachedAnswer:
    result: ProviderResult
    kind: str  # "exact" or "semantic"
    similarity: float = 1.0


@dataclass
class Lookup:
    """What a lookup learned, kept so that storing the answer needs no second embedding."""

    exact: str = ""
    scope: str = ""
    vector: np.ndarray[Any, np.dtype[np.float32]] | None = None
    hit: CachedAnswer | None = None
    active: bool = False


class ResponseCache:
    def __init__(
        self, settings: GatewaySettings, providers: ProviderSet, state_redis: Redis
    ) -> None:
        self.enabled = settings.cache_enabled
        self._own_redis = settings.cache_redis_url is not None
        self.redis = (
            make_redis(
                settings.cache_redis_url,
                sentinel=settings.sentinel,
                variable="L04_CACHE_REDIS_URL",
                socket_connect_timeout=0.5,
                socket_timeout=1.0,
            )
            if settings.cache_redis_url
            else state_redis
        )
        self._exact = ExactCache(self.redis, settings.cache_ttl, settings.cache_max_entries)
        self._semantic = SemanticCache(
            self.redis,
            settings.cache_ttl,
            settings.semantic_cache_max_entries,
            settings.cache_similarity_threshold,
        )
        self._providers = providers
        self._embedder = settings.embedding_provider
        self._embedding_model = (
            settings.ollama_embedding_model
            if self._embedder == "ollama"
            else settings.openai_embedding_model
        )
        self._redis_down_until = 0.0
        self._embed_down_until = 0.0
        # Hits and misses reach the shared statistics within STATS_FLUSH_S, many per round trip.
        self._counts: Coalescer[str] = Coalescer(self._send_counts, STATS_FLUSH_S)

    async def lookup(self, request: InferenceRequest, spec: ModelSpec) -> Lookup:
        if not self.enabled or not request.enable_cache:
            return Lookup()
        if time.monotonic() < self._redis_down_until:
            return Lookup()
        lookup = Lookup(exact=exact_key(spec.model_id, request), active=True)
        try:
            raw = await self._exact.get(lookup.exact)
            if raw is not None:
                lookup.hit = CachedAnswer(_decode(raw), "exact")
            else:
                await self._semantic_lookup(lookup, request, spec)
            self._counts.add("hits_" + lookup.hit.kind if lookup.hit else "misses")
            (metrics.CACHE_HITS if lookup.hit else metrics.CACHE_MISSES).inc()
        except Exception as exc:
            self._redis_failed(exc)
            lookup.active = False
        return lookup

    async def store(self, lookup: Lookup, result: ProviderResult) -> None:
        if not lookup.active or lookup.hit is not None:
            return
        answer = _encode(result)
        if len(answer) > MAX_ANSWER_BYTES:
            return
        try:
            await self._exact.put(lookup.exact, answer)
            if lookup.vector is not None:
                await self._semantic.put(lookup.scope, lookup.exact, lookup.vector, answer)
        except Exception as exc:
            self._redis_failed(exc)

    async def aclose(self) -> None:
        await self._counts.aclose()
        if self._own_redis:
            await self.redis.aclose()

    async def _semantic_lookup(
        self, lookup: Lookup, request: InferenceRequest, spec: ModelSpec
    ) -> None:
        query = semantic_query(spec.model_id, request)
        if query is None or self._embedder == "none":
            return
        if time.monotonic() < self._embed_down_until:
            return
        lookup.scope, text = query
        try:
            adapter = self._providers.get(self._embedder)
            vectors = await adapter.embed([text], self._embedding_model)
        except Exception as exc:
            self._embed_down_until = time.monotonic() + COOLDOWN_S
            code = exc.code if isinstance(exc, GatewayError) else "E4301"
            log.warning("semantic cache skipped: embedding failed (%s, %s)", code, _kind(exc))
            metrics.CACHE_ERRORS.labels("E4301").inc()
            self._counts.add("errors_embedding")
            return
        lookup.vector = np.asarray(vectors[0], dtype=np.float32)
        found = await self._semantic.search(lookup.scope, lookup.vector)
        if found is not None:
            raw, similarity = found
            lookup.hit = CachedAnswer(_decode(raw), "semantic", similarity)

    async def _send_counts(self, fields: list[str]) -> None:
        async with self.redis.pipeline(transaction=False) as pipe:
            for field, count in Counter(fields).items():
                pipe.hincrby(keys.CACHE_STATS, field, count)
            pipe.expire(keys.CACHE_STATS, STATS_TTL_S)  # like every key: gone once unused
            await pipe.execute()

    def _redis_failed(self, exc: Exception) -> None:
        self._redis_down_until = time.monotonic() + COOLDOWN_S
        log.warning("cache skipped: E4300 cache error (%s)", _kind(exc))
        metrics.CACHE_ERRORS.labels("E4300").inc()


async def cache_stats(redis: Redis) -> dict[str, int]:
    """Hits, misses and errors counted by every worker (as of half a second ago), and what the
    cache holds now."""
    raw: Any = await redis.hgetall(keys.CACHE_STATS)
    counts = {(k.decode() if isinstance(k, bytes) else k): int(v) for k, v in raw.items()}
    entries = int(await redis.zcard(keys.EXACT_CACHE_INDEX))
    # Bytes are estimated from a sample of entries: exact sizes would cost a call per entry.
    sample: Any = await redis.zrandmember(keys.EXACT_CACHE_INDEX, 20) or []
    sizes = [int(await redis.strlen(key)) for key in sample]
    semantic_entries = 0
    async for order in redis.scan_iter(match=keys.semantic_cache("*") + ":order", count=1000):
        semantic_entries += int(await redis.zcard(order))
    stats = {
        "hits_exact": counts.get("hits_exact", 0),
        "hits_semantic": counts.get("hits_semantic", 0),
        "misses": counts.get("misses", 0),
        "errors_embedding": counts.get("errors_embedding", 0),
        "entries": entries,
        "semantic_entries": semantic_entries,
        "bytes": (sum(sizes) * entries // len(sizes)) if sizes else 0,
    }
    stats["hits"] = stats["hits_exact"] + stats["hits_semantic"]
    return stats


def cached_chunks(text: str, pieces: int = 8) -> list[str]:
    """A cached answer cut into a few chunks at word boundaries, for a streamed request."""
    words = text.split(" ")
    size = max(1, -(-len(words) // pieces))
    chunks = [" ".join(words[i : i + size]) for i in range(0, len(words), size)]
    return [c + " " if i < len(chunks) - 1 else c for i, c in enumerate(chunks)] if text else []


def _kind(exc: Exception) -> str:
    return exc.code if isinstance(exc, GatewayError) else type(exc).__name__


def _encode(result: ProviderResult) -> str:
    return json.dumps(
        {
            "content": result.content,
            "tool_calls": [c.model_dump(mode="json") for c in result.tool_calls],
            "finish_reason": result.finish_reason,
            "usage": result.usage.model_dump(mode="json"),
        },
        separators=(",", ":"),
    )


def _decode(raw: bytes) -> ProviderResult:
    data = json.loads(raw)
    return ProviderResult(
        content=data["content"],
        tool_calls=[ToolCall.model_validate(c) for c in data.get("tool_calls", [])],
        finish_reason=data.get("finish_reason", "stop"),
        usage=TokenUsage.model_validate(data.get("usage", {})),
    )
