"""``l04 worker``: a Celery worker subscribed to the queues of the providers it serves."""

from __future__ import annotations

import logging
import os
import socket
import sys
import warnings
from typing import Any

from gateway_core.queues import PROVIDERS, queue_name

DEFAULT_CONCURRENCY = 500


def check_providers(providers: list[str]) -> None:
    unknown = [p for p in providers if p not in PROVIDERS]
    if unknown:
        raise SystemExit(
            f"unknown provider(s): {', '.join(unknown)}; choose from {', '.join(PROVIDERS)}"
        )


def worker_argv(
    providers: list[str], concurrency: int, loglevel: str = "INFO", name: str | None = None
) -> list[str]:
    check_providers(providers)
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


class _LastCritical(logging.Handler):
    """Keeps the last CRITICAL line Celery logs: the reason a worker stops on an error."""

    def __init__(self) -> None:
        super().__init__(logging.CRITICAL)
        self.reason: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        self.reason = record.getMessage().splitlines()[0][:500]


def run_celery(app: Any, argv: list[str]) -> int:
    """Run a ``celery`` command on ``app`` and return its exit status.

    ``app.worker_main()`` and ``app.start()`` drop it: click, run with ``standalone_mode=False``,
    returns the status instead of raising, and ``app.start`` discards the return value. So a worker
    that stopped on an unrecoverable error exited 0, and a supervisor that restarts on failure
    (systemd ``Restart=on-failure``) left it dead.
    """
    from celery.bin.celery import celery as command
    from click.exceptions import Exit

    command.params[0].default = app
    try:
        status = command.main(args=argv, standalone_mode=False)
    except Exit as exit_:
        status = exit_.exit_code
    finally:
        command.params[0].default = None
    return status if isinstance(status, int) else 0


def run_worker(
    providers: list[str],
    concurrency: int,
    loglevel: str = "INFO",
    name: str | None = None,
    metrics_port: int | None = None,
    supervisor: tuple[int, int] | None = None,
) -> int:
    """Run the worker until it stops; its exit status (non-zero when it stopped on an error).

    ``supervisor``: the pid of the ``l04 worker --processes N`` that started this process and the
    pipe to tell it when this one is ready; it serves the metrics this process counts.
    """
    from config.settings import get_settings
    from tasks.celery import app
    from workers.runtime import use_settings

    if supervisor is not None:
        from l04.supervisor import become_supervised

        become_supervised(*supervisor)
    from gateway_core.metrics import WORKER_PROCESSES

    for provider in providers:  # summed across processes and hosts: the workers of a queue
        WORKER_PROCESSES.labels(queue=queue_name(provider)).set(1)
    # The worker's runtime probes these providers' health (see workers/provider_health.py).
    settings = get_settings().model_copy(update={"worker_providers": providers})
    use_settings(settings)
    # Two threads share the GIL: Celery's consumer, which waits on the broker socket, and the
    # asyncio runtime, busy under load. At Python's default 5 ms switch interval the consumer
    # waits up to that long for the GIL after each broker reply; 0.5 ms bounds the wait
    # (round trip about 0.7 ms lower at low load, throughput up to 10% higher; BENCHMARKS.md).
    sys.setswitchinterval(0.0005)
    port = metrics_port if metrics_port is not None else settings.metrics_port
    if port is not None and supervisor is None:
        from gateway_client.metrics import serve_metrics

        bound = serve_metrics(
            port,
            redis_url=settings.redis_url,
            broker_url=settings.effective_broker_url,
            providers=providers,
            sentinel=settings.sentinel,
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
    _quiet_cancel_on_reconnect_warning()
    last_critical = _LastCritical()
    logging.getLogger().addHandler(last_critical)
    code = run_celery(app, worker_argv(providers, concurrency, loglevel, name))
    if code != 0:
        reason = last_critical.reason or "see the log above"
        print(f"l04 worker: stopped with status {code}: {reason}", file=sys.stderr, flush=True)
    return code


def _quiet_cancel_on_reconnect_warning() -> None:
    """Jobs are deliberately kept running when the consumer reconnects, on either broker
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
