"""Semantic-cache lookup at 100,000 entries of dimension 768, as a worker does it.

Each lookup is ``SemanticCache.search``: read the scope's log from Redis, scan the scope's
vectors in memory (exact cosine, numpy), fetch the answer. Entries are partitioned by scope (a
model, system prompt, history, sampling parameters and tools each make a scope), so a lookup
scans one scope. The figures: p50 / p99 lookup for 100 scopes of 1,000 entries, and, as the
worst case, one scope holding all 100,000; the worker's index memory against the raw bytes of
the vectors; recall (the scan is exact, checked against the known nearest entry).

    python -m benchmarks.cache_lookup [--entries 100000] [--scopes 100] [--lookups 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import time

import numpy as np

from gateway_core.redis_pool import make_redis
from l04.redis_server import LocalRedis
from workers.cache.semantic import SemanticCache

DIMS = 768


async def fill(
    cache: SemanticCache, scopes: list[str], per_scope: int, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    stored: dict[str, np.ndarray] = {}
    for scope in scopes:
        vectors = rng.standard_normal((per_scope, DIMS)).astype(np.float32)
        stored[scope] = vectors
        for start in range(0, per_scope, 500):
            await asyncio.gather(
                *(
                    cache.put(
                        scope, f"{scope}-{i}", vectors[i], json.dumps({"content": f"answer {i}"})
                    )
                    for i in range(start, min(per_scope, start + 500))
                )
            )
    return stored


async def measure(url: str, entries: int, scopes: int, lookups: int) -> dict[str, float]:
    rng = np.random.default_rng(7)
    client = make_redis(url)
    await client.flushall()
    per_scope = entries // scopes
    names = [f"scope{i}" for i in range(scopes)]
    cache = SemanticCache(client, ttl_s=3600, max_entries=per_scope, threshold=0.9)
    stored = await fill(cache, names, per_scope, rng)
    worker = SemanticCache(client, ttl_s=3600, max_entries=per_scope, threshold=0.9)
    for name in names:  # a worker that has seen every scope once
        await worker.search(name, stored[name][0])
    timings, found = [], 0
    for n in range(lookups):
        name = names[n % scopes]
        target = int(rng.integers(per_scope))
        query = stored[name][target] + 0.05 * rng.standard_normal(DIMS).astype(np.float32)
        started = time.perf_counter()
        hit = await worker.search(name, query)
        timings.append((time.perf_counter() - started) * 1000)
        if hit is not None and json.loads(hit[0])["content"] == f"answer {target}":
            found += 1
    await client.aclose()
    raw = entries * DIMS * 4
    return {
        "entries": entries,
        "scopes": scopes,
        "p50_ms": float(np.percentile(timings, 50)),
        "p99_ms": float(np.percentile(timings, 99)),
        "index_bytes": worker.memory_bytes(),
        "raw_vector_bytes": raw,
        "memory_ratio": worker.memory_bytes() / raw,
        "recall": found / lookups,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--scopes", type=int, default=100)
    parser.add_argument("--lookups", type=int, default=2000)
    args = parser.parse_args()
    server = LocalRedis().start()
    try:
        print(
            f"# semantic cache lookup, {DIMS} dims, {time.strftime('%Y-%m-%d')}, "
            f"{platform.machine()} {__import__('os').cpu_count()} cores"
        )
        for scopes in (args.scopes, 1):
            result = asyncio.run(measure(server.url, args.entries, scopes, args.lookups))
            print(
                f"{result['entries']:>7} entries in {result['scopes']:>3} scope(s): "
                f"p50 {result['p50_ms']:.2f} ms  p99 {result['p99_ms']:.2f} ms (target <= 10)  "
                f"index {result['memory_ratio']:.2f}x raw (target <= 1.5)  "
                f"recall {result['recall']:.3f}"
            )
    finally:
        server.stop()


if __name__ == "__main__":
    main()
