"""What ``health_check()`` and ``l04 health`` report: Redis, workers per queue, queue depths,
breaker states, and each provider's health as its workers last probed it.

The top-level ``gateway`` status sums the parts up:

* ``healthy``: Redis answers and every provider of the catalog is healthy (it has a worker, its
  breaker is not open, and its last probe did not fail);
* ``degraded``: Redis answers and some providers are healthy, others not: jobs for the others
  wait in their queues (until a worker comes or their deadline passes) or fail over;
* ``unhealthy``: Redis or the broker does not answer, or no provider is healthy: no job can be
  answered.

``summary`` says in one line which providers are not healthy and why.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from celery import Celery
from redis.asyncio import Redis

from config.catalog import Catalog
from gateway_client import keys
from tasks.amqp_queues import amqp_queue_depths
from tasks.queues import queue_name, redis_priority_lists

_PRIORITY_NAMES = ("high", "normal", "low")
_BREAKER_STATES = {0: "closed", 1: "half_open", 2: "open"}


def _workers_by_queue(app: Celery, timeout: float) -> dict[str, list[str]]:
    replies = app.control.inspect(timeout=timeout).active_queues() or {}
    by_queue: dict[str, list[str]] = {}
    for worker, queues in replies.items():
        for queue in queues or []:
            by_queue.setdefault(queue["name"], []).append(worker)
    return by_queue


async def fleet_health(
    redis: Redis, broker_redis: Redis | None, app: Celery, catalog: Catalog, timeout: float = 1.0
) -> dict[str, Any]:
    """``broker_redis`` is the broker's Redis client, or None for an AMQP broker (RabbitMQ)."""
    report: dict[str, Any] = {"gateway": "healthy", "checked_at": time.time()}
    try:
        started = time.monotonic()
        await redis.ping()
        report["redis"] = {"ok": True, "ping_ms": round((time.monotonic() - started) * 1000, 3)}
    except Exception as exc:
        report["redis"] = {"ok": False, "error": type(exc).__name__}
        report["gateway"] = "unhealthy"
        report["summary"] = f"Redis does not answer ({type(exc).__name__})"
        return report
    providers = sorted(catalog.providers)
    depths: dict[str, dict[str, int]] = {}
    if broker_redis is not None:
        try:
            async with broker_redis.pipeline(transaction=False) as pipe:
                for provider in providers:
                    for name in redis_priority_lists(queue_name(provider)):
                        pipe.llen(name)
                counts = iter(await pipe.execute())
            for provider in providers:
                depths[queue_name(provider)] = {p: int(next(counts)) for p in _PRIORITY_NAMES}
        except Exception as exc:  # a broker of its own (L04_BROKER_URL) that does not answer
            report["broker"] = {"ok": False, "error": type(exc).__name__}
    else:
        # RabbitMQ keeps one queue per provider with native priorities: one count each.
        names = [queue_name(p) for p in providers]
        try:
            ready = await asyncio.to_thread(amqp_queue_depths, app, names)
            depths = {name: {"total": ready[name]} for name in names}
            report["broker"] = {"ok": True}
        except Exception as exc:
            report["broker"] = {"ok": False, "error": type(exc).__name__}
    report["queues"] = depths
    try:
        workers = await asyncio.to_thread(_workers_by_queue, app, timeout)
    except Exception as exc:
        workers = {}
        report["workers_error"] = type(exc).__name__
    report["workers"] = {queue_name(p): sorted(workers.get(queue_name(p), [])) for p in providers}
    report["breakers"] = await _breakers(redis, catalog)
    report["providers"] = await _providers(redis, providers, report)
    report["gateway"], report["summary"] = _overall(report["providers"])
    if not report.get("broker", {"ok": True})["ok"]:
        report["gateway"] = "unhealthy"
        report["summary"] = f"the broker does not answer ({report['broker']['error']})"
    return report


def _overall(providers: dict[str, dict[str, Any]]) -> tuple[str, str]:
    sick = {name: p["problems"] for name, p in providers.items() if not p["healthy"]}
    if not sick:
        return "healthy", f"all {len(providers)} providers healthy"
    reasons = "; ".join(f"{name}: {', '.join(problems)}" for name, problems in sick.items())
    status = "unhealthy" if len(sick) == len(providers) else "degraded"
    return status, f"{len(sick)} of {len(providers)} providers not healthy ({reasons})"


async def _breakers(redis: Redis, catalog: Catalog) -> dict[str, str]:
    """Every provider's breaker, and the deployments whose breaker is not closed."""
    targets = sorted(catalog.providers) + [f"{m.provider}:{m.model_id}" for m in catalog]
    async with redis.pipeline(transaction=False) as pipe:
        for target in targets:
            pipe.hget(keys.breaker(target), "state")
        states = await pipe.execute()
    found = {}
    for target, state in zip(targets, states, strict=True):
        name = _BREAKER_STATES.get(int(state or 0), "closed")
        if ":" not in target or name != "closed":
            found[target] = name
    return found


async def _providers(
    redis: Redis, providers: list[str], report: dict[str, Any]
) -> dict[str, dict[str, Any]]:
    """Per provider: its workers, its breaker, and the last health probe a worker made."""
    async with redis.pipeline(transaction=False) as pipe:
        for provider in providers:
            pipe.hgetall(keys.provider_health(provider))
        probes = await pipe.execute()
    found: dict[str, dict[str, Any]] = {}
    for provider, probe in zip(providers, probes, strict=True):
        fields = {_text(k): _text(v) for k, v in (probe or {}).items()}
        workers = len(report["workers"].get(queue_name(provider), []))
        breaker = report["breakers"].get(provider, "closed")
        reachable = None if not fields else fields.get("healthy") == "1"
        problems = [
            problem
            for problem, present in (
                ("no worker", workers == 0),
                ("breaker open", breaker == "open"),
                ("probe failed", reachable is False),
            )
            if present
        ]
        found[provider] = {
            "workers": workers,
            "breaker": breaker,
            "reachable": reachable,  # None: no worker has probed it lately
            "last_error": fields.get("error") or None,
            "checked_at": float(fields["checked_at"]) if "checked_at" in fields else None,
            "healthy": not problems,
            "problems": problems,
        }
    return found


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
