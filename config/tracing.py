"""The OpenTelemetry SDK of a fleet process (a worker, ``l04 serve``): on when the standard
variables ask, off otherwise.

On when ``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is set and
``OTEL_SDK_DISABLED`` is not ``true`` (nor ``OTEL_TRACES_EXPORTER`` ``none``): a TracerProvider
with a batch processor and the OTLP exporter (protobuf over HTTP), both configured by the SDK
from the standard variables (``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``,
``OTEL_TRACES_SAMPLER`` and its ``_ARG``, ``OTEL_BSP_*``, ``OTEL_EXPORTER_OTLP_*``): nothing
here overrides them. Off: the SDK's
tracing is not even imported, the API's no-op tracer stays, and the fleet's code asks
:func:`enabled` before it builds any span.

Set up once per process, in the process that runs jobs or serves requests (a worker's runtime,
each ``l04 serve`` process): never in a parent that forks afterwards. :func:`shutdown_tracing`
exports what is left (the SIGTERM drain calls it) so that the last spans are not lost, for
:data:`SHUTDOWN_WAIT_S` at most (a collector down or hung does not hold the exit).

A library user's process (a producer) is not set up here: ``gateway_client`` uses only the API,
so its spans go wherever the application's own TracerProvider sends them.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from typing import Any

log = logging.getLogger(__name__)

ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")

#: How long a stopping process waits for its last spans. The SDK alone waits for every batch
#: left, each export retried up to OTEL_EXPORTER_OTLP_TIMEOUT (10 s), for up to 30 s in all:
#: with the collector down or hung, that would be added to every SIGTERM's exit.
SHUTDOWN_WAIT_S = 5.0

_lock = threading.Lock()
_provider: Any = None  # the SDK's TracerProvider once set up in this process


def requested(env: Mapping[str, str] = os.environ) -> bool:
    """Whether the environment asks for tracing."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    if env.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "none":  # the endpoint is not ours
        return False
    return any(env.get(name, "").strip() for name in ENDPOINT_VARIABLES)


def enabled() -> bool:
    """Whether this process set tracing up (the fleet's spans are built only then)."""
    return _provider is not None


def setup_tracing(default_service_name: str) -> bool:
    """Set the SDK up if the environment asks and it is not set up yet; whether it is on.

    ``default_service_name`` names the process when neither ``OTEL_SERVICE_NAME`` nor
    ``OTEL_RESOURCE_ATTRIBUTES`` does.
    """
    global _provider
    if _provider is not None or not requested():
        return _provider is not None
    with _lock:
        if _provider is not None:
            return True
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        named = os.environ.get("OTEL_SERVICE_NAME") or _names_the_service(
            os.environ.get("OTEL_RESOURCE_ATTRIBUTES", "")
        )
        try:
            resource = Resource.create({} if named else {"service.name": default_service_name})
            provider = TracerProvider(resource=resource)  # the sampler: OTEL_TRACES_SAMPLER
            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        except Exception as exc:  # a malformed OTEL_* value (OTEL_BSP_MAX_EXPORT_BATCH_SIZE=0...)
            # Tracing is an operator's view of the fleet, not part of its work: the process
            # runs on without it, and says why once, loudly.
            log.error("tracing off: the OTEL_* settings are refused by the SDK: %s", exc)
            return False
        trace.set_tracer_provider(provider)
        _provider = provider
    log.info("tracing on: OTLP export of %s", resource.attributes.get("service.name"))
    return True


def _names_the_service(resource_attributes: str) -> bool:
    """Whether ``OTEL_RESOURCE_ATTRIBUTES`` (``key=value,key=value``) sets ``service.name``."""
    return any(
        pair.partition("=")[0].strip() == "service.name" for pair in resource_attributes.split(",")
    )


def shutdown_tracing() -> None:
    """Export the spans still buffered and stop the exporter (a no-op when off), waiting
    :data:`SHUTDOWN_WAIT_S` at most: past that the process exits without its last spans."""
    global _provider
    with _lock:
        provider, _provider = _provider, None
    if provider is None:
        return
    stopping = threading.Thread(target=provider.shutdown, name="l04-tracing-stop", daemon=True)
    stopping.start()
    stopping.join(SHUTDOWN_WAIT_S)
    if stopping.is_alive():
        log.warning(
            "tracing: the last spans not exported within %.0f s (collector down or slow)",
            SHUTDOWN_WAIT_S,
        )
