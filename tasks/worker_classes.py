"""The worker's side of the Celery app, named here and loaded only inside a worker process.

``tasks`` is the queue set-up that producers and workers share, so it may not import
``workers`` (the layers: ``gateway_core`` < ``config`` < ``tasks`` < ``gateway_client`` |
``workers`` < ``l04``). Yet ``celery -A tasks worker`` must start a whole worker from this
package alone. So the fleet's app (:mod:`tasks.celery`, which that command, ``l04 worker`` and
``l04 flower`` run) names the worker's classes by ``module:attribute`` and Celery resolves them
when the worker starts (``worker_pool``, ``worker_consumer``, ``broker_transport``), as it does
its own pools; the task body resolves :data:`JOB_RUNNER` on its first job. These strings are the
one place ``tasks`` reaches ``workers``. A producer's app (``create_app``, as ``ModelGateway``
builds it) has none of them and loads no worker code. ``tests/unit/test_layers.py`` checks that
each name resolves and that a producer's connection loads nothing of ``workers``.
"""

from __future__ import annotations

from typing import Any

# Jobs run on the worker's asyncio loop, not one thread each.
POOL = "workers.asyncio_pool:AsyncioPool"
# Poison messages go to the dead-letter list (l04 dlq) instead of being dropped.
CONSUMER = "workers.consumer:DeadLetteringConsumer"
# kombu's Redis transports with the fleet's intake (one script takes many messages, none ever
# only in memory; idle workers wait on bells), batched acknowledgements, and the connection
# kept across a drop.
REDIS_TRANSPORT = "workers.broker_transport:Transport"
SENTINEL_TRANSPORT = "workers.broker_transport:SentinelTransport"
# Runs one delivery of a job in this process's runtime; returns a tasks.outcomes.RunOutcome.
JOB_RUNNER = "workers.runtime:run_job"

ALL = (POOL, CONSUMER, REDIS_TRANSPORT, SENTINEL_TRANSPORT, JOB_RUNNER)


def worker_config(broker_url: str) -> dict[str, Any]:
    """The settings the fleet's app adds to ``create_app``'s: the worker's classes."""
    config: dict[str, Any] = {"worker_pool": POOL, "worker_consumer": CONSUMER}
    scheme = broker_url.split("://", 1)[0].lower()
    if scheme in ("redis", "rediss"):
        config["broker_transport"] = REDIS_TRANSPORT
    elif scheme == "sentinel":
        config["broker_transport"] = SENTINEL_TRANSPORT
    return config
