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
from gateway_core import keys
from gateway_core.breakers import BreakerState, catalog_breakers, read_states
from gateway_core.queues import queue_name
from tasks.queue_depth import read_depths


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
    names = [queue_name(p) for p in providers]
    depths: dict[str, dict[str, int]] = {}
    try:
        found = await read_depths(names, broker_redis=broker_redis, app=app)
        # RabbitMQ keeps one queue per provider with native priorities: one count each.
        depths = {q: d.by_priority or {"total": d.total} for q, d in found.items()}
        if broker_redis is None:
            report["broker"] = {"ok": True}
    except Exception as exc:  # a broker of its own (L04_BROKER_URL) that does not answer
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
    names = catalog_breakers(catalog.providers, ((m.provider, m.model_id) for m in catalog))
    states = await read_states(redis, names)
    return {
        name: state.label
        for name, state in states.items()
        if name in catalog.providers or state is not BreakerState.CLOSED
    }


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
