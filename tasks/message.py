"""The inference task's broker message, built for pushing straight onto a Redis queue.

``submit`` writes the job record and pushes its message in one Lua script: one round trip, and a
job exists if and only if its message was queued (no window where a crash leaves one without the
other, and a repeated job id queues nothing). Celery builds the task message itself
(``app.amqp.as_task_v2``: protocol 2 headers and body); what is added here is the small envelope
kombu's Redis transport wraps around a message on publish (``Channel.prepare_message`` and
``_inplace_augment_message``: base64 body, delivery tag, delivery info, priority), published to
kombu's anonymous exchange, whose routing key is the queue. ``tests/redis/test_task_message.py``
checks it field by field against a message kombu published itself.
"""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

from celery import Celery
from kombu.serialization import dumps

from gateway_core import keys
from gateway_core.queues import (
    INFER_TASK,
    QUEUE_BELL_CAP,
    REDIS_PRIORITY_STEPS,
    is_redis_broker,
    redis_priority_lists,
)
from gateway_core.wire import make_envelope


def redis_list_for(queue: str, priority: int) -> str:
    """The Redis list kombu reads ``queue``'s messages of ``priority`` from."""
    step_index = max(i for i, step in enumerate(REDIS_PRIORITY_STEPS) if step <= priority)
    return redis_priority_lists(queue)[step_index]


def build_task_message(
    app: Celery,
    job_id: str,
    envelope: dict[str, Any],
    queue: str,
    priority: int,
    argsrepr: str | None = None,
) -> str:
    task = app.amqp.as_task_v2(
        job_id,
        INFER_TASK,
        args=[envelope],
        kwargs={},
        argsrepr=argsrepr or f"[{{'job_id': {job_id!r}}}]",  # what Flower and the logs show
        kwargsrepr="{}",
        ignore_result=True,
    )
    content_type, content_encoding, body = dumps(task.body, serializer="json")
    properties = {
        **task.properties,
        "delivery_mode": 2,
        "priority": priority,
        "delivery_info": {"exchange": "", "routing_key": queue},
        "body_encoding": "base64",
        "delivery_tag": str(uuid.uuid4()),
    }
    message = {
        "body": base64.b64encode(body.encode(content_encoding)).decode("ascii"),
        "content-encoding": content_encoding,
        "content-type": content_type,
        "headers": task.headers,
        "properties": properties,
    }
    return json.dumps(message)


def publish_job(app: Celery, job_id: str, queue: str, priority: int) -> None:
    """Publish a job's message through Celery (for a broker that is not the job-state Redis).

    On a Redis broker the list's bell is rung after the push (``gateway_core/lua/bell.lua``
    explains bells): without it an idle worker would take the message only when its wait on
    the bells times out, up to a second later.
    """
    with app.producer_or_acquire() as producer:
        app.send_task(
            INFER_TASK,
            args=[make_envelope(job_id)],
            task_id=job_id,
            queue=queue,
            routing_key=queue,
            priority=priority,
            producer=producer,
        )
        if is_redis_broker(app.conf.broker_url):
            bell = keys.queue_bell(redis_list_for(queue, priority))
            with producer.channel.conn_or_acquire() as client, client.pipeline() as pipe:
                pipe.lpush(bell, 1).ltrim(bell, 0, QUEUE_BELL_CAP - 1).execute()
