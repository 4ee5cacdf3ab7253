"""Prometheus metrics: the seed's names and labels, and what an operator of a queue needs.

Workers count what they do (requests, latency, tokens, cost, cache, limits, retries,
failovers, time in the queue, time to first token); producers count what they submit and get
back. Fleet state that lives in Redis (breaker states, queue depths) is read at scrape time by
:class:`gateway_client.metrics.FleetStateCollector`, so every scrape shows the one truth,
whichever process serves it.

Each process serves its own registry (``l04 worker --metrics-port P``, or
:func:`gateway_client.metrics.serve_metrics` in a producer); Prometheus sums across processes.
The seed's Info metric ``l04_gateway`` is exported as prometheus_client's ``Info`` exports it,
``l04_gateway_info{layer="L04",version="..."} 1``, by :class:`GatewayInfo`, a collector each
serving registry holds once (``Info`` itself does not work in multiprocess mode, where the
sum over N processes would show it N times or not at all). Label values stay bounded:
model and provider come from the catalog, and ``agent_did`` keeps its own value for the first
:data:`MAX_AGENT_LABELS` agents a process sees and ``other`` after that.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import InfoMetricFamily
from prometheus_client.registry import Collector

from gateway_core import __version__

# LLM calls run long: buckets up to 5 minutes.
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300)
FAST_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 120)
MAX_AGENT_LABELS = 200

# -- the seed's metrics ------------------------------------------------------------------------
INFERENCE_REQUESTS = Counter(
    "l04_inference_requests_total",
    "Inference jobs a worker ended, by outcome (success or error)",
    ["provider", "model", "status"],
)
INFERENCE_LATENCY = Histogram(
    "l04_inference_latency_seconds",
    "Time from a worker's claim to the job's answer",
    ["provider", "model"],
    buckets=LATENCY_BUCKETS,
)
CACHE_HITS = Counter("l04_cache_hits_total", "Jobs answered from the cache")
CACHE_MISSES = Counter("l04_cache_misses_total", "Cache lookups that found nothing")
RATE_LIMIT_REJECTIONS = Counter(
    "l04_rate_limit_rejections_total",
    "Calls over a limit: deferred to wait in the queue, or refused (E4401 / E4402)",
    ["agent_did", "outcome"],
)
# Read from Redis at scrape time (gateway_client.metrics.FleetStateCollector), not counted here.
CIRCUIT_BREAKER_STATE_NAME = "l04_circuit_breaker_state"
QUEUE_DEPTH_NAME = "l04_queue_depth"
USAGE_OUTBOX_NAME = "l04_usage_outbox_events"
ACTIVE_REQUESTS = Gauge(
    "l04_active_requests",
    "Provider calls in flight",
    ["provider"],
    multiprocess_mode="livesum",
)
TOKEN_USAGE = Counter(
    "l04_token_usage_total", "Tokens used, by direction (input, output)", ["direction", "model"]
)
GATEWAY_INFO_NAME = "l04_gateway"  # exported as l04_gateway_info, the Info suffix

# -- what an operator of a queue needs ---------------------------------------------------------
QUEUE_WAIT = Histogram(
    "l04_queue_wait_seconds",
    "Time a job waited in its queue before a worker claimed it",
    ["provider", "priority"],
    buckets=LATENCY_BUCKETS,
)
TIME_TO_FIRST_TOKEN = Histogram(
    "l04_time_to_first_token_seconds",
    "Time from the provider call to the first streamed text",
    ["provider", "model"],
    buckets=LATENCY_BUCKETS,
)
INFERENCE_ERRORS = Counter(
    "l04_inference_errors_total", "Jobs that ended in an error, by code", ["provider", "code"]
)
RETRIES = Counter("l04_retries_total", "Provider calls retried", ["provider", "code"])
FAILOVERS = Counter(
    "l04_failovers_total", "Jobs moved to the next model of their chain", ["from_model", "to_model"]
)
COST = Counter("l04_cost_usd_total", "Cost of the answers, from the catalog's prices", ["model"])
CACHE_ERRORS = Counter("l04_cache_errors_total", "Cache and embedding errors", ["code"])
WORKER_PROCESSES = Gauge(
    "l04_worker_processes",
    "Worker processes serving a queue (1 per live process; summed over a host's processes)",
    ["queue"],
    multiprocess_mode="livesum",
)
ORPHANED_JOBS = Counter(
    "l04_orphaned_jobs_total",
    "Queued jobs whose broker message was lost: put back on their queue (requeued), or failed"
    " with E4206 (lost again)",
    ["outcome"],
)
JOBS_SUBMITTED = Counter(
    "l04_jobs_submitted_total", "Jobs a producer queued", ["provider", "priority"]
)
SUBMIT_REFUSALS = Counter(
    "l04_submit_refusals_total", "Submits refused before queueing, by code", ["code"]
)
JOB_RESULTS = Counter(
    "l04_job_results_total", "Results a producer received, by outcome", ["status"]
)
JOB_LATENCY = Histogram(
    "l04_job_latency_seconds",
    "Time from submit to the answer, as the producer saw it",
    buckets=LATENCY_BUCKETS,
)


class _AgentLabels:
    """Keeps ``agent_did`` label values bounded per process."""

    def __init__(self, limit: int = MAX_AGENT_LABELS) -> None:
        self._seen: set[str] = set()
        self._limit = limit
        self._lock = threading.Lock()

    def __call__(self, agent_did: str) -> str:
        with self._lock:
            if agent_did in self._seen:
                return agent_did
            if len(self._seen) < self._limit:
                self._seen.add(agent_did)
                return agent_did
        return "other"


agent_label = _AgentLabels()


class GatewayInfo(Collector):
    """The seed's Info metric, one sample per registry whatever the number of processes."""

    def collect(self) -> Iterator[InfoMetricFamily]:
        yield InfoMetricFamily(
            GATEWAY_INFO_NAME,
            "Gateway metadata (the seed's Info)",
            value={"version": __version__, "layer": "L04"},
        )


_default_registry_lock = threading.Lock()
_default_registry_has_info = threading.Event()


def register_gateway_info(registry: CollectorRegistry | None = None) -> None:
    """Add :class:`GatewayInfo` to ``registry`` (a fresh one, built per scrape or per server),
    or without one to the process's default registry, once however often it is called."""
    if registry is not None:
        registry.register(GatewayInfo())
        return
    with _default_registry_lock:
        if not _default_registry_has_info.is_set():
            REGISTRY.register(GatewayInfo())
            _default_registry_has_info.set()


# -- the HTTP front door (`l04 serve`) ---------------------------------------------------------
# ``endpoint`` is the route's template (/v1/chat/completions, /v1/models/{model}), never the raw
# path; ``key_id`` is the virtual key's id (never the key), "none" without auth: both bounded.
HTTP_REQUESTS = Counter(
    "l04_http_requests_total",
    "Requests the HTTP front door answered, by endpoint, status and virtual key id",
    ["endpoint", "status", "key_id"],
)
HTTP_DURATION = Histogram(
    "l04_http_request_duration_seconds",
    "Time from a request's arrival to the end of its response (a stream's last byte)",
    ["endpoint"],
    buckets=LATENCY_BUCKETS,
)
HTTP_FIRST_BYTE = Histogram(
    "l04_http_time_to_first_byte_seconds",
    "Time from a request's arrival to the first byte of its response body",
    ["endpoint"],
    buckets=FAST_BUCKETS,
)
HTTP_OPEN_STREAMS = Gauge(
    "l04_http_open_streams",
    "Server-Sent Event streams the front door has open",
    multiprocess_mode="livesum",
)

# -- webhooks (workers/webhook_delivery.py) ----------------------------------------------------
WEBHOOK_DELIVERIES = Counter(
    "l04_webhook_deliveries_total",
    "Webhook attempts by event type and outcome: delivered (2xx), retry (non-2xx, timeout or"
    " unreachable: tried again later), dropped (past L04_WEBHOOK_RETRY_HOURS, or no target)",
    ["event", "outcome"],
)
WEBHOOK_OUTBOX_PENDING = Gauge(
    "l04_webhook_outbox_pending",
    "Webhook deliveries waiting in the Redis outbox (due or scheduled for a retry), as a"
    " deliverer last read it",
    multiprocess_mode="livemax",
)
