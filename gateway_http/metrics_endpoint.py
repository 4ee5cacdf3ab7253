"""``GET /metrics``: this process's registry, or with ``l04 serve --workers N`` the sum of every
server process (prometheus_client's multiprocess mode, ``PROMETHEUS_MULTIPROC_DIR``, set by
``l04 serve`` before it starts them)."""

from __future__ import annotations

import os

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.responses import Response

from gateway_core.metrics import set_gateway_info


def _registry() -> CollectorRegistry:
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not directory:
        return REGISTRY
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=directory)
    return registry


def metrics_response() -> Response:
    set_gateway_info()
    return Response(generate_latest(_registry()), media_type=CONTENT_TYPE_LATEST)
