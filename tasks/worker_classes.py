"""The worker's side of the Celery app, named here and loaded only inside a worker process.

``tasks`` is the queue set-up that producers and workers share, so it may not import
``workers`` (the layers: ``gateway_core`` < ``config`` < ``tasks`` < ``gateway_client`` |
``workers`` < ``l04``). A worker, started by ``l04 worker`` or by ``celery -A tasks worker``,
still needs the app to run the worker's classes: Celery resolves these ``module:attribute`` names
when the worker starts (``worker_pool``, ``worker_consumer``, ``broker_transport``), and the task
body resolves :data:`JOB_RUNNER` on its first job. A producer never loads any of them.
``tests/unit/test_layers.py`` checks that each name resolves.
"""

from __future__ import annotations

# Jobs run on the worker's asyncio loop, not one thread each.
POOL = "workers.asyncio_pool:AsyncioPool"
# Poison messages go to the dead-letter list (l04 dlq) instead of being dropped.
CONSUMER = "workers.consumer:DeadLetteringConsumer"
# kombu's Redis transports, with replies screened and the connection kept across a drop.
REDIS_TRANSPORT = "workers.broker_transport:Transport"
SENTINEL_TRANSPORT = "workers.broker_transport:SentinelTransport"
# Runs one delivery of a job in this process's runtime; returns a tasks.outcomes.RunOutcome.
JOB_RUNNER = "workers.runtime:run_job"

ALL = (POOL, CONSUMER, REDIS_TRANSPORT, SENTINEL_TRANSPORT, JOB_RUNNER)
