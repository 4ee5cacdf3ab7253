"""``GET /metrics``: this process's registry, or with ``l04 serve --workers N`` the sum of every
server process (prometheus_client's multiprocess mode, ``PROMETHEUS_MULTIPROC_DIR``, set by
``l04 serve`` before it starts them); then the gateway's Info once, and the fleet's state read
from Redis (breakers, queue depths of every provider of the catalog, the usage outbox), so that
a queue no worker serves any more still shows its depth somewhere."""

from __future__ import annotations

import os

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.responses import Response

from gateway_client.metrics import FleetStateCollector
from gateway_core.metrics import register_gateway_info


def fleet_registry(collector: FleetStateCollector) -> CollectorRegistry:
    """A registry of its own for the fleet's state (one per server process)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry


def _registry() -> CollectorRegistry:
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory:
        register_gateway_info()  # once per process
        return REGISTRY
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=directory)
    register_gateway_info(registry)
    return registry


def metrics_response(fleet: CollectorRegistry) -> Response:
    """Blocking (files, Redis): called in a thread."""
    body = generate_latest(_registry()) + generate_latest(fleet)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
