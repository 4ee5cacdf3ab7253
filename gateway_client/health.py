"""What ``health_check()`` and ``l04 health`` report: Redis, workers per queue, queue depths."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from celery import Celery
from redis.asyncio import Redis

from config.catalog import Catalog
from tasks.queues import is_redis_broker, queue_name, redis_priority_lists

_PRIORITY_NAMES = ("high", "normal", "low")


def _workers_by_queue(app: Celery, timeout: float) -> dict[str, list[str]]:
    replies = app.control.inspect(timeout=timeout).active_queues() or {}
    by_queue: dict[str, list[str]] = {}
    for worker, queues in replies.items():
        for queue in queues or []:
            by_queue.setdefault(queue["name"], []).append(worker)
    return by_queue


async def fleet_health(
    redis: Redis, broker_redis: Redis, app: Celery, catalog: Catalog, timeout: float = 1.0
) -> dict[str, Any]:
    report: dict[str, Any] = {"gateway": "healthy", "checked_at": time.time()}
    try:
        started = time.monotonic()
        await redis.ping()
        report["redis"] = {"ok": True, "ping_ms": round((time.monotonic() - started) * 1000, 3)}
    except Exception as exc:
        report["redis"] = {"ok": False, "error": type(exc).__name__}
        report["gateway"] = "unhealthy"
        return report
    providers = sorted(catalog.providers)
    depths: dict[str, dict[str, int]] = {}
    if is_redis_broker(str(app.conf.broker_url)):
        async with broker_redis.pipeline(transaction=False) as pipe:
            for provider in providers:
                for name in redis_priority_lists(queue_name(provider)):
                    pipe.llen(name)
            counts = iter(await pipe.execute())
        for provider in providers:
            depths[queue_name(provider)] = {p: int(next(counts)) for p in _PRIORITY_NAMES}
    report["queues"] = depths
    try:
        workers = await asyncio.to_thread(_workers_by_queue, app, timeout)
    except Exception as exc:
        workers = {}
        report["workers_error"] = type(exc).__name__
    report["workers"] = {queue_name(p): sorted(workers.get(queue_name(p), [])) for p in providers}
    if not any(report["workers"].values()):
        report["gateway"] = "degraded"
    return report
