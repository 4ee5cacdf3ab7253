"""Queue depths on an AMQP broker (RabbitMQ), where the queues are not Redis lists.

A passive ``queue.declare`` answers with the queue's count of messages ready for delivery (not
those delivered and unacknowledged) without creating or changing the queue. RabbitMQ keeps one
queue with native priorities, so there is one count per queue, not one per priority. A queue
nobody declared yet answers 404 and closes the channel: it holds nothing, so its depth is 0.

Blocking (kombu is synchronous): async callers run it in a thread.
"""

from __future__ import annotations

import contextlib
from typing import Any

from celery import Celery


def amqp_queue_depths(app: Celery, queues: list[str]) -> dict[str, int]:
    """Messages ready in each of ``queues`` (0 for a queue that does not exist yet)."""
    with app.pool.acquire(block=True, timeout=10) as connection:
        connection.ensure_connection(max_retries=1, timeout=5)
        return queue_depths(connection, queues)


def queue_depths(connection: Any, queues: list[str]) -> dict[str, int]:
    """The same on a kombu connection of the caller's (the metrics collector has no app)."""
    from amqp.exceptions import NotFound

    depths: dict[str, int] = {}
    channel: Any = None
    try:
        for queue in queues:
            channel = channel or connection.channel()
            try:
                _name, ready, _consumers = channel.queue_declare(queue=queue, passive=True)
                depths[queue] = int(ready)
            except NotFound:
                depths[queue] = 0
                channel = None  # the broker closed it
    finally:
        if channel is not None:
            with contextlib.suppress(Exception):
                channel.close()
    return depths
