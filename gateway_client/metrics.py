"""Serving a process's metrics, with the fleet's state read from Redis at each scrape.

The metrics themselves are defined in :mod:`gateway_core.metrics` (workers and producers count
into the same names); this module adds what only a serving process needs: one process's registry
(:func:`serve_metrics`), or the sum of several processes of one host that count into files
(:func:`serve_multiprocess_metrics`, for ``l04 worker --processes N``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from gateway_core import keys
from gateway_core.breakers import read_states_sync
from gateway_core.metrics import (
    CIRCUIT_BREAKER_STATE_NAME,
    QUEUE_DEPTH_NAME,
    USAGE_OUTBOX_NAME,
    register_gateway_info,
)
from gateway_core.queues import is_redis_broker, queue_name
from gateway_core.redis_pool import make_sync_redis
from gateway_core.redis_url import SentinelOptions
from tasks.queue_depth import read_depths_sync

log = logging.getLogger(__name__)


class FleetStateCollector(Collector):
    """Breaker states, queue depths and the usage outbox's length, read from Redis (and the
    broker) at each scrape."""

    def __init__(
        self,
        redis_url: str,
        broker_url: str,
        providers: list[str],
        sentinel: SentinelOptions | None = None,
    ) -> None:
        timeouts: dict[str, Any] = {"socket_timeout": 2, "socket_connect_timeout": 2}
        self._redis = make_sync_redis(redis_url, 4, sentinel=sentinel, **timeouts)
        self._broker: Any = None  # an AMQP broker is asked through kombu at each scrape
        if is_redis_broker(broker_url):
            self._broker = (
                self._redis
                if broker_url == redis_url
                else make_sync_redis(
                    broker_url, 4, sentinel=sentinel, variable="L04_BROKER_URL", **timeouts
                )
            )
        self._broker_url = broker_url
        self._providers = providers

    def collect(self) -> Iterator[Any]:
        breakers = GaugeMetricFamily(
            CIRCUIT_BREAKER_STATE_NAME,
            "Circuit state (0=closed, 1=half_open, 2=open)",
            labels=["provider"],
        )
        depth = GaugeMetricFamily(
            QUEUE_DEPTH_NAME, "Jobs waiting in a queue, by priority", labels=["queue", "priority"]
        )
        outbox = GaugeMetricFamily(
            USAGE_OUTBOX_NAME, "Usage events in the outbox, not yet delivered to L01"
        )
        try:
            outbox.add_metric([], float(self._redis.xlen(keys.USAGE_OUTBOX)))
            for provider, state in read_states_sync(self._redis, self._providers).items():
                breakers.add_metric([provider], float(state))
            queues = [queue_name(p) for p in self._providers]
            found = read_depths_sync(queues, broker_redis=self._broker, broker_url=self._broker_url)
            for queue, counted in found.items():
                # RabbitMQ: one queue with native priorities, so one count ("all") per queue.
                by_priority = counted.by_priority or {"all": counted.total}
                for priority, count in by_priority.items():
                    depth.add_metric([queue, priority], float(count))
        except Exception as exc:  # a scrape must not fail because Redis is away
            log.warning("fleet state not collected: %s", type(exc).__name__)
        yield breakers
        yield depth
        yield outbox


_served: dict[int, Any] = {}


def serve_metrics(
    port: int,
    *,
    redis_url: str | None = None,
    broker_url: str | None = None,
    providers: list[str] | None = None,
    sentinel: SentinelOptions | None = None,
    addr: str = "0.0.0.0",  # noqa: S104 - scraped from other hosts
) -> int:
    """Serve this process's metrics over HTTP on ``port`` (0: any free port); returns the port.

    With ``redis_url``, the fleet's breaker states and queue depths are served too.
    """
    register_gateway_info()
    if redis_url is not None and not _served:
        REGISTRY.register(
            FleetStateCollector(redis_url, broker_url or redis_url, providers or [], sentinel)
        )
    server, _thread = start_http_server(port, addr=addr)
    bound = int(server.server_address[1])
    _served[bound] = server
    return bound


def serve_multiprocess_metrics(
    port: int,
    directory: str,
    *,
    redis_url: str,
    broker_url: str | None = None,
    providers: list[str] | None = None,
    sentinel: SentinelOptions | None = None,
    addr: str = "0.0.0.0",  # noqa: S104 - scraped from other hosts
) -> tuple[int, Callable[[], None]]:
    """Serve, on ``port``, the metrics of the processes that count into ``directory``
    (prometheus_client's multiprocess mode: each started with ``PROMETHEUS_MULTIPROC_DIR`` set to
    it), and the fleet's breaker states and queue depths read from Redis, once.

    Counters and histograms are summed across the processes, the dead ones included (their files
    stay, so a sum never goes back); ``l04_active_requests`` is summed over the live ones (the
    caller removes a dead process's live gauges with
    :func:`prometheus_client.multiprocess.mark_process_dead`). Returns the port and a function
    that stops serving.
    """
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=directory)
    register_gateway_info(registry)  # once for the host, not once per process
    registry.register(
        FleetStateCollector(redis_url, broker_url or redis_url, providers or [], sentinel)
    )
    server, thread = start_http_server(port, addr=addr, registry=registry)

    def close() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    return int(server.server_address[1]), close
