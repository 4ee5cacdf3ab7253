"""``l04 worker``: a Celery worker subscribed to the queues of the providers it serves."""

from __future__ import annotations

import logging
import os
import socket
import sys
import warnings
from typing import Any

from config.catalog import PROVIDERS
from tasks.queues import is_redis_broker, queue_name

DEFAULT_CONCURRENCY = 500


def worker_argv(
    providers: list[str], concurrency: int, loglevel: str = "INFO", name: str | None = None
) -> list[str]:
    unknown = [p for p in providers if p not in PROVIDERS]
    if unknown:
        raise SystemExit(
            f"unknown provider(s): {', '.join(unknown)}; choose from {', '.join(PROVIDERS)}"
        )
    queues = ",".join(queue_name(p) for p in providers)
    node = name or f"l04-{'-'.join(providers)}-{os.getpid()}@{socket.gethostname()}"
    return [
        "worker",
        # No --pool: the app's worker_pool (workers.asyncio_pool:AsyncioPool) applies.
        "--concurrency",
        str(concurrency),
        "--queues",
        queues,
        "--hostname",
        node,
        "--loglevel",
        loglevel,
        "--without-mingle",
        "--without-gossip",
    ]


def run_worker(
    providers: list[str],
    concurrency: int,
    loglevel: str = "INFO",
    name: str | None = None,
    metrics_port: int | None = None,
) -> None:
    from config.settings import get_settings
    from tasks import app

    # The worker's runtime probes these providers' health (see workers/provider_health.py).
    os.environ["L04_WORKER_PROVIDERS"] = ",".join(providers)
    # Two threads share the GIL: Celery's consumer, which waits on the broker socket, and the
    # asyncio runtime, busy under load. At Python's default 5 ms switch interval the consumer
    # waits up to that long for the GIL after each broker reply; 0.5 ms bounds the wait
    # (round trip about 0.7 ms lower at low load, throughput up to 10% higher; BENCHMARKS.md).
    sys.setswitchinterval(0.0005)
    settings = get_settings()
    port = metrics_port if metrics_port is not None else settings.metrics_port
    if port is not None:
        from gateway_client.metrics import serve_metrics

        bound = serve_metrics(
            port,
            redis_url=settings.redis_url,
            broker_url=settings.effective_broker_url,
            providers=providers,
        )
        print(f"l04 worker: metrics on :{bound}/metrics", flush=True)
    # One line per HTTP call is noise at a thousand calls a second; errors still log.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if settings.log_format == "json":
        from celery.signals import after_setup_logger, after_setup_task_logger

        from workers.log_format import use_json

        def structured(logger: Any, **_: Any) -> None:
            use_json(logger)

        after_setup_logger.connect(structured, weak=False)
        after_setup_task_logger.connect(structured, weak=False)
    if not is_redis_broker(settings.effective_broker_url):
        _quiet_cancel_on_reconnect_warning()
    app.worker_main(worker_argv(providers, concurrency, loglevel, name))


def _quiet_cancel_on_reconnect_warning() -> None:
    """On RabbitMQ, jobs are deliberately kept running when the consumer reconnects
    (``worker_cancel_long_running_tasks_on_connection_loss`` off, see tasks/app.py); Celery
    logs a page-long pending-deprecation warning about that at every reconnect. Celery sets
    its warnings to 'always' while it sets up logging, so the filter goes in once it is ready.
    """
    from celery.signals import worker_ready

    def quiet(**_: Any) -> None:
        warnings.filterwarnings(
            "ignore",
            message=r"\s*In Celery 5\.1 we introduced an optional breaking change",
            category=PendingDeprecationWarning,
        )

    worker_ready.connect(quiet, weak=False)
