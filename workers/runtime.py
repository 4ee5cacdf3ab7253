"""The worker process's asyncio runtime: where provider calls actually run.

Celery (5.x) has no asyncio support, and one provider call takes 1 to 60 seconds while using
almost no CPU. So a worker runs Celery's ``threads`` pool at high concurrency (500 by default)
and each pool thread only hands its job to one shared asyncio event loop and waits. All HTTP and
Redis I/O of every job is multiplexed on that loop, over one connection pool per provider, so one
process holds hundreds to thousands of calls in flight while Celery keeps doing what it does
well: delivery, acknowledgement after the job ends, priorities, events for Flower.

The runtime is created on first use in the process that runs tasks (so a prefork child gets its
own, never a forked copy).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
import uuid
from concurrent.futures import CancelledError, Future
from typing import Any, TypeVar

from config import tracing
from config.catalog import Catalog, cached_catalog
from config.settings import GatewaySettings, get_settings
from gateway_core.queues import is_redis_broker
from gateway_core.redis_pool import make_redis
from gateway_core.wire import UnreadableEnvelope, read_envelope
from tasks.app_config import create_app
from tasks.outcomes import RunOutcome
from workers.cache.response_cache import ResponseCache
from workers.control.admission import Admission
from workers.control.circuit_breaker import CircuitBreakers
from workers.control.latency import LatencyTracker
from workers.dead_letters import set_aside
from workers.deferred import DeferredMover
from workers.failover import Failover
from workers.heartbeat import Heartbeat
from workers.job_store import WorkerJobStore
from workers.l01_shipper import L01Shipper
from workers.orphans import OrphanSweeper
from workers.pipeline import JobPipeline
from workers.provider_health import ProviderHealthProbe
from workers.providers import ProviderSet
from workers.requeue import Requeue
from workers.webhook_delivery import WebhookDeliverer

log = logging.getLogger(__name__)
T = TypeVar("T")


class WorkerRuntime:
    def __init__(self, settings: GatewaySettings, catalog: Catalog) -> None:
        # Here, in the process that runs the jobs (after any fork): OTEL_* decide (README).
        tracing.setup_tracing("l04-worker")
        self.settings = settings
        self.catalog = catalog
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._held: dict[str, str] = {}  # delivery tag -> job id
        self._running: dict[str, Future[Any]] = {}  # delivery tag -> the job's run on the loop
        self._outcomes: dict[
            str, RunOutcome
        ] = {}  # delivery tag -> outcome, until its task body asks
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, daemon=True, name="l04-runtime"
        )
        self._thread.start()
        self._call(self._setup())

    async def _setup(self) -> None:
        settings = self.settings
        self.redis = make_redis(settings.redis_url, sentinel=settings.sentinel)
        broker = settings.effective_broker_url
        self.broker_redis = (
            make_redis(broker, sentinel=settings.sentinel, variable="L04_BROKER_URL")
            if is_redis_broker(broker)
            else None
        )
        self.store = WorkerJobStore(
            self.redis,
            result_ttl=settings.result_ttl,
            wait_replicas=settings.redis_wait_replicas,
            wait_timeout_ms=settings.redis_wait_timeout_ms,
            max_deliveries=settings.max_deliveries,
            index_queued=self.broker_redis is not None,
        )
        self.providers = ProviderSet(settings)
        breakers = CircuitBreakers(
            self.redis,
            failure_threshold=settings.circuit_breaker_failure_threshold,
            recovery_timeout_s=settings.circuit_breaker_recovery_timeout,
        )
        self.cache = ResponseCache(settings, self.providers, self.redis)
        self.latencies = LatencyTracker(self.redis)
        requeue = Requeue(create_app(settings), broker, broker == settings.redis_url)
        self.pipeline = JobPipeline(
            self.store,
            self.providers,
            self.catalog,
            settings,
            self.worker_id,
            breakers,
            Failover(self.store, self.catalog, breakers, requeue),
            self.latencies,
            Admission(self.redis, self.catalog, settings),
            requeue,
            self.cache,
        )
        self._mover_task = asyncio.create_task(DeferredMover(self.store, requeue).run_forever())
        sweeper = (  # puts back a Redis broker's lost messages (RabbitMQ: see the README)
            OrphanSweeper(self.store, self.broker_redis, requeue, settings.orphan_after)
            if self.broker_redis is not None
            else None
        )
        self._orphans_task = asyncio.create_task(sweeper.run_forever()) if sweeper else None
        probe = ProviderHealthProbe(self.redis, self.providers, settings.worker_providers)
        self._probe_task = asyncio.create_task(probe.run_forever())
        self._shipper = L01Shipper(self.redis, settings, self.worker_id)
        self._shipper_task = (
            asyncio.create_task(self._shipper.run_forever()) if settings.usage_events else None
        )
        self._webhooks = WebhookDeliverer(self.redis, settings)
        self._webhooks_task = asyncio.create_task(self._webhooks.run_forever())
        heartbeat = Heartbeat(
            self.store,
            self.broker_redis,
            self.worker_id,
            held_tags=lambda: list(self._held),
            claimed=lambda: sorted(self.pipeline.claimed),
            on_lost=self._stop_lost,
            interval=settings.heartbeat_interval,
            lease_ms=int(settings.lease_ttl * 1000),
        )
        self._heartbeat_task = asyncio.create_task(heartbeat.run_forever())

    def _call(self, coro: Any) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result()

    def start_job(self, envelope: Any, delivery_tag: str | None) -> Future[RunOutcome]:
        """Start a job on the loop; the future holds its one-word outcome."""
        tag = delivery_tag or f"local-{uuid.uuid4().hex}"
        return self._start(envelope, tag)

    def _start(self, envelope: Any, tag: str) -> Future[RunOutcome]:
        try:
            job_id = read_envelope(envelope)
        except UnreadableEnvelope as exc:
            log.error("unreadable job message set aside: %s", exc)
            future = asyncio.run_coroutine_threadsafe(self._dead_letter(envelope, exc), self._loop)
        else:
            self._held[tag] = job_id
            future = asyncio.run_coroutine_threadsafe(self._run(job_id, envelope), self._loop)
            self._running[tag] = future
        future.add_done_callback(lambda done: self._ended(tag, done))
        return future

    async def _run(self, job_id: str, envelope: Any) -> RunOutcome:
        outcome = await self.pipeline.run(job_id)
        if outcome is None:
            # No record: a message nobody submitted, or a copy that outlived its job's record.
            log.error("message for job %s, which has no record, set aside", job_id)
            return await self._dead_letter(
                envelope, "no such job: never submitted, or expired", code="E4406"
            )
        return outcome

    async def _dead_letter(self, envelope: Any, reason: Any, code: str = "E4503") -> RunOutcome:
        await set_aside(self.redis, envelope, str(reason), code=code)
        return RunOutcome.DEAD_LETTERED

    def _ended(self, tag: str, future: Future[RunOutcome]) -> None:
        self._held.pop(tag, None)
        self._running.pop(tag, None)
        outcome: RunOutcome
        if future.cancelled():
            outcome = RunOutcome.STOPPED
        elif future.exception() is not None:
            # The job could not report (its Redis went away mid-job).
            log.warning("job not reported: %s", type(future.exception()).__name__)
            outcome = RunOutcome.UNREPORTED
        else:
            outcome = future.result()
        self._outcomes[tag] = outcome

    def run_job(self, envelope: Any, delivery_tag: str | None) -> RunOutcome:
        """The task body's entry: the outcome of a job the pool already ran, or run it now.

        With :class:`workers.asyncio_pool.AsyncioPool` the job has ended before the task body
        runs; with Celery's own pools (``-P threads``) this blocks the calling pool thread until
        it ends.
        """
        if delivery_tag is not None and delivery_tag in self._outcomes:
            return self._outcomes.pop(delivery_tag)
        tag = delivery_tag or f"local-{uuid.uuid4().hex}"
        future = self._start(envelope, tag)
        with contextlib.suppress(CancelledError):
            future.result()
        return self._outcomes.pop(tag, RunOutcome.STOPPED)

    def _stop_lost(self, job_ids: list[str]) -> None:
        """Stop the provider calls of jobs that were cancelled, expired or taken over."""
        lost = set(job_ids)
        for tag, job_id in list(self._held.items()):
            future = self._running.get(tag)
            if job_id in lost and future is not None and not future.done():
                log.info("job %s ended elsewhere; stopping its call", job_id)
                future.cancel()

    @property
    def in_flight(self) -> int:
        return len(self._held)

    def close(self) -> None:
        async def shutdown() -> None:
            self._heartbeat_task.cancel()
            self._mover_task.cancel()
            if self._orphans_task is not None:
                self._orphans_task.cancel()
            self._probe_task.cancel()
            if self._shipper_task is not None:
                self._shipper_task.cancel()
            await self._shipper.aclose()
            self._webhooks_task.cancel()
            await self._webhooks.aclose()
            await self.latencies.aclose()
            await self.providers.aclose()
            await self.cache.aclose()
            await self.redis.aclose()
            if self.broker_redis is not None:
                await self.broker_redis.aclose()

        try:
            self._call(shutdown())
        finally:
            tracing.shutdown_tracing()  # the last jobs' spans, exported before the exit
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
            if not self._thread.is_alive():
                self._loop.close()


_runtime: WorkerRuntime | None = None
_settings: GatewaySettings | None = None
_runtime_lock = threading.Lock()


def use_settings(settings: GatewaySettings) -> None:
    """The settings this process's runtime starts with (``l04 worker`` passes its providers);
    without a call, the environment's (``celery -A tasks worker``)."""
    global _settings
    _settings = settings


def get_runtime() -> WorkerRuntime:
    global _runtime
    if _runtime is None:
        with _runtime_lock:
            if _runtime is None:
                settings = _settings or get_settings()
                _runtime = WorkerRuntime(settings, cached_catalog(settings.catalog_path))
    return _runtime


def run_job(envelope: Any, delivery_tag: str | None) -> RunOutcome:
    """The task body's entry (``tasks.worker_classes.JOB_RUNNER``): one delivery of a job."""
    return get_runtime().run_job(envelope, delivery_tag)
