"""The Celery application, configured for long, I/O-bound jobs that must not be lost.

* ``task_acks_late`` + ``task_reject_on_worker_lost``: a message is acknowledged only after its job
  ended, so a worker that dies holding it does not lose it.
* ``worker_prefetch_multiplier = 1``: a worker reserves no more messages than it has slots, so a
  HIGH job that arrives later is not stuck behind LOW jobs hoarded in some worker's buffer.
* JSON only, never pickle; results are not stored by Celery (jobs report through their own event
  streams), so Celery's "succeeded" log line carries only a one-word outcome.
* kombu's Redis transport puts a message back on its queue only ``visibility_timeout`` seconds
  after delivery (an hour by default). We keep that short (``L04_VISIBILITY_TIMEOUT``, 30 s) and
  have every live worker refresh the delivery time of each message it holds (the heartbeat in
  :mod:`workers.heartbeat`), so only a dead worker's messages come back, within about
  ``visibility_timeout`` plus one restore sweep, and long jobs are never handed out twice.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from kombu import Queue

from config.settings import GatewaySettings
from gateway_core.queues import (
    REDIS_PRIORITY_SEP,
    REDIS_PRIORITY_STEPS,
    REDIS_UNACKED_INDEX,
    all_queue_names,
    is_redis_broker,
    queue_name,
)


def celery_config(settings: GatewaySettings) -> dict[str, Any]:
    broker = settings.effective_broker_url
    config: dict[str, Any] = {
        "broker_url": broker,
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,
        "result_backend": None,
        "task_ignore_result": True,
        "task_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "event_serializer": "json",
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_acks_on_failure_or_timeout": True,
        "worker_prefetch_multiplier": 1,
        "task_default_queue": queue_name("mock"),
        "task_queues": [
            Queue(name, routing_key=name, queue_arguments={"x-max-priority": 9})
            for name in all_queue_names()
        ],
        "task_create_missing_queues": True,
        "task_default_priority": None,
        # Flower and `celery events` see tasks and workers (L04_TASK_EVENTS=false: workers only).
        "worker_send_task_events": settings.task_events,
        "task_send_sent_event": settings.task_events,
        # A job keeps running when the broker connection drops: its lease in Redis fences off a
        # redelivered copy, which waits and finds the job ended. Cancelling would waste the
        # provider call (and the AsyncioPool has no process to kill).
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "worker_hijack_root_logger": False,
        "worker_redirect_stdouts": False,
    }
    scheme = broker.split("://", 1)[0].lower()
    if is_redis_broker(broker):
        restore_every = max(1, int(settings.visibility_timeout // 6))
        config["broker_transport_options"] = {
            "visibility_timeout": settings.visibility_timeout,
            "priority_steps": list(REDIS_PRIORITY_STEPS),
            "sep": REDIS_PRIORITY_SEP,
            "queue_order_strategy": "priority",
            "unacked_index_key": REDIS_UNACKED_INDEX,
            "unacked_restore_interval": restore_every,
            "unacked_restore_throttle": 1,
            # kombu restores under a Redis lock that lapses only after this many seconds (300 by
            # default): a worker killed while restoring blocked every restore for five minutes,
            # and its jobs waited in `unacked` (the kill loop, BENCHMARKS.md). Two sweeps' time
            # bounds it; restores that overlap are safe (each entry moves in a WATCH transaction).
            "unacked_mutex_expire": 2 * restore_every,
            "socket_connect_timeout": 5,
            "socket_timeout": 30,
            "health_check_interval": 10,
            "retry_on_timeout": True,
            **(sentinel_transport_options(settings) if scheme == "sentinel" else {}),
        }
    else:
        config.update(amqp_worker_config())
    return config


def sentinel_transport_options(settings: GatewaySettings) -> dict[str, Any]:
    """kombu's SentinelChannel options: the master's name, how to talk to the Sentinels.

    ``sentinel_kwargs`` always bounds the questions to a Sentinel (given any, kombu's Sentinel
    uses only them, and without timeouts an unreachable Sentinel would stall finding the master);
    the Sentinels' password joins them when set. Celery masks it wherever it prints its settings.
    """
    sentinel_kwargs: dict[str, Any] = {"socket_connect_timeout": 2, "socket_timeout": 2}
    if settings.redis_sentinel_password is not None:
        sentinel_kwargs["password"] = settings.redis_sentinel_password.get_secret_value()
    return {"master_name": settings.redis_sentinel_master, "sentinel_kwargs": sentinel_kwargs}


def amqp_worker_config() -> dict[str, Any]:
    """RabbitMQ: native priorities, and a worker that outlives ``consumer_timeout``.

    RabbitMQ closes a channel whose delivery stays unacknowledged past ``consumer_timeout``
    (30 min by default; checked periodically, so it fires up to about one more timeout later)
    with ``PRECONDITION_FAILED``, and requeues every message the channel held.
    Celery treats that channel error as unrecoverable unless ``broker_channel_error_retry`` is
    set: the worker would shut down after its jobs in flight, leaving the queue without it. With
    it, the consumer reconnects at once. The job in flight keeps running
    (``worker_cancel_long_running_tasks_on_connection_loss`` off: cancelling it would throw its
    provider call away) and reports once; the redelivered copy of its message finds the job's
    lease held and waits, then is acknowledged as already answered (README, "RabbitMQ as the
    broker").

    After a reconnect Celery lowers the prefetch count and raises it again as the jobs of the
    old connection are acknowledged, with a ``basic.qos`` round trip made inside the ack. The
    AsyncioPool acknowledges on its tracer threads, so that round trip ran beside the consumer
    thread's own on one AMQP connection, and the two deadlocked (seen: a worker that took no
    more messages and hung at shutdown). So the prefetch is not lowered: for the minutes after
    a reconnect a worker may hold its old connection's jobs on top of a full prefetch.
    """
    return {
        "broker_transport_options": {},
        "task_queue_max_priority": 9,
        "broker_channel_error_retry": True,
        "worker_enable_prefetch_count_reduction": False,
    }


def create_app(settings: GatewaySettings) -> Celery:
    app = Celery("l04", set_as_current=False)
    app.conf.update(celery_config(settings))
    return app
