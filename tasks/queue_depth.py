"""How many jobs wait in each queue: the one reader of queue depth, for either broker.

On Redis, kombu keeps a list per priority step (:func:`gateway_core.queues.redis_priority_lists`),
so a depth is counted per priority. On an AMQP broker (RabbitMQ) a queue has native priorities
and one count: a passive ``queue.declare`` answers with the messages ready for delivery (not
those delivered and unacknowledged) without creating or changing the queue. A queue nobody
declared yet answers 404 and closes the channel: it holds nothing, so its depth is 0.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Any

from amqp.exceptions import NotFound
from celery import Celery
from kombu import Connection

from gateway_core.queues import redis_priority_lists
from gateway_core.request import Priority

# The priorities in the order of redis_priority_lists: most urgent first.
PRIORITY_NAMES = tuple(priority.value for priority in Priority)


@dataclass(frozen=True, slots=True)
class QueueDepth:
    total: int
    # Redis broker: the count per priority (high, normal, low); AMQP: None (one native queue).
    by_priority: dict[str, int] | None = None


async def read_depths(
    queues: list[str], *, broker_redis: Any | None, app: Celery
) -> dict[str, QueueDepth]:
    """Each queue's depth: from the broker's Redis (an asyncio client), or, when it is None,
    from the AMQP broker of ``app`` (in a thread: kombu blocks)."""
    if broker_redis is None:
        return await asyncio.to_thread(_amqp_depths_of_app, app, queues)
    async with broker_redis.pipeline(transaction=False) as pipe:
        for queue in queues:
            for name in redis_priority_lists(queue):
                pipe.llen(name)
        counts = await pipe.execute()
    return _by_priority(queues, counts)


def read_depths_sync(
    queues: list[str], *, broker_redis: Any | None, broker_url: str
) -> dict[str, QueueDepth]:
    """The same with a blocking Redis client, or a connection of its own to the AMQP broker."""
    if broker_redis is None:
        with Connection(broker_url, connect_timeout=2) as connection:
            return _amqp_depths(connection, queues)
    with broker_redis.pipeline(transaction=False) as pipe:
        for queue in queues:
            for name in redis_priority_lists(queue):
                pipe.llen(name)
        counts = pipe.execute()
    return _by_priority(queues, counts)


def _by_priority(queues: list[str], counts: list[Any]) -> dict[str, QueueDepth]:
    found = iter(int(c) for c in counts)
    depths = {}
    for queue in queues:
        by_priority = {priority: next(found) for priority in PRIORITY_NAMES}
        depths[queue] = QueueDepth(sum(by_priority.values()), by_priority)
    return depths


def _amqp_depths_of_app(app: Celery, queues: list[str]) -> dict[str, QueueDepth]:
    with app.pool.acquire(block=True, timeout=10) as connection:
        connection.ensure_connection(max_retries=1, timeout=5)
        return _amqp_depths(connection, queues)


def _amqp_depths(connection: Any, queues: list[str]) -> dict[str, QueueDepth]:
    depths: dict[str, QueueDepth] = {}
    channel: Any = None
    try:
        for queue in queues:
            channel = channel or connection.channel()
            try:
                _name, ready, _consumers = channel.queue_declare(queue=queue, passive=True)
                depths[queue] = QueueDepth(int(ready))
            except NotFound:
                depths[queue] = QueueDepth(0)
                channel = None  # the broker closed it
    finally:
        if channel is not None:
            with contextlib.suppress(Exception):
                channel.close()
    return depths
