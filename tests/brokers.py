"""The two brokers the parametrized tests run on, seen the same way: how many jobs wait in a
queue, and how raw bytes get onto one (a poison message, pushed past every client of ours)."""

from __future__ import annotations

import base64
import json
import subprocess
import uuid

import redis
from kombu import Connection, Exchange, Producer

from gateway_core.queues import all_queue_names, is_redis_broker, redis_priority_lists
from l04.rabbitmq_server import LocalRabbitMQ, RabbitMQNotInstalled, RabbitVhost, amqp_answers

SYSTEM_PORT = 5672


class SessionRabbitMQ:
    """A vhost of the session's own on the RabbitMQ at 127.0.0.1:5672, deleted at the end; where
    nothing answers there, a node of the session's own (started here, stopped at the end)."""

    def __init__(self) -> None:
        self._vhost: RabbitVhost | None = None
        self._node: LocalRabbitMQ | None = None

    def start(self) -> SessionRabbitMQ:
        if amqp_answers("127.0.0.1", SYSTEM_PORT):
            try:
                self._vhost = RabbitVhost(SYSTEM_PORT).create()
                return self
            except (RabbitMQNotInstalled, subprocess.SubprocessError):
                pass  # a node rabbitmqctl cannot manage (another user's, a container's)
        self._node = LocalRabbitMQ().start()
        return self

    @property
    def url(self) -> str:
        if self._vhost is not None:
            return self._vhost.url
        assert self._node is not None
        return self._node.url

    def stop(self) -> None:
        if self._vhost is not None:
            self._vhost.delete()
        if self._node is not None:
            self._node.stop()


def clear_amqp_queues(url: str) -> None:
    """Empty the fleet's queues of what an earlier test left: each test starts with none waiting.

    Purged, not deleted: kombu's producer pools are per process and URL, and remember which
    queues they declared, so a deleted queue would not be declared again and the next test's
    messages would go to an exchange with no queue bound (RabbitMQ drops them).
    """
    from amqp.exceptions import NotFound

    with Connection(url, connect_timeout=5) as connection:
        for name in all_queue_names():
            channel = connection.channel()
            try:
                channel.queue_purge(name)
                channel.close()
            except NotFound:
                pass  # never declared: nothing in it


def drop_queued(broker_url: str, queue: str = "l04.mock") -> None:
    """Throw away the messages waiting in ``queue`` (as a lost message would be)."""
    if is_redis_broker(broker_url):
        client = redis.Redis.from_url(broker_url)
        try:
            client.delete(*redis_priority_lists(queue))
        finally:
            client.close()
        return
    with Connection(broker_url, connect_timeout=5) as connection:
        connection.channel().queue_purge(queue)


def amqp_depth(url: str, queue: str) -> int:
    """Messages ready in ``queue`` (passive declare; 0 if it does not exist)."""
    from amqp.exceptions import NotFound

    with Connection(url, connect_timeout=5) as connection:
        try:
            _name, ready, _consumers = connection.channel().queue_declare(queue, passive=True)
        except NotFound:
            return 0
        return int(ready)


def queued(broker_url: str, queue: str = "l04.mock") -> int:
    """Jobs waiting in ``queue`` on either broker."""
    if not is_redis_broker(broker_url):
        return amqp_depth(broker_url, queue)
    client = redis.Redis.from_url(broker_url)
    try:
        return sum(int(client.llen(name)) for name in redis_priority_lists(queue))
    finally:
        client.close()


def poison(body: bytes, task: str = "l04.infer", queue: str = "l04.mock") -> str:
    """A message as kombu's Redis transport carries it on a queue's list, with any raw body."""
    return json.dumps(
        {
            "body": base64.b64encode(body).decode(),
            "content-encoding": "utf-8",
            "content-type": "application/json",
            "headers": {"lang": "py", "task": task, "id": uuid.uuid4().hex, "argsrepr": "?"},
            "properties": {
                "delivery_mode": 2,
                "priority": 5,
                "delivery_info": {"exchange": "", "routing_key": queue},
                "body_encoding": "base64",
                "delivery_tag": str(uuid.uuid4()),
            },
        }
    )


def push_raw(
    broker_url: str, body: bytes, task: str = "l04.infer", queue: str = "l04.mock"
) -> None:
    """Put ``body`` on ``queue`` as a task message with Celery's headers, whatever it holds.

    On Redis: kombu's envelope (:func:`poison`), pushed onto the list. On RabbitMQ: a plain
    AMQP publish of the bytes to the queue's exchange, the way any client could send them.
    """
    if is_redis_broker(broker_url):
        client = redis.Redis.from_url(broker_url)
        try:
            client.lpush(queue, poison(body, task, queue))
        finally:
            client.close()
        return
    headers = {"lang": "py", "task": task, "id": uuid.uuid4().hex, "argsrepr": "?"}
    with Connection(broker_url, connect_timeout=5) as connection:
        Producer(connection.channel()).publish(
            body,
            exchange=Exchange(queue, type="direct"),
            routing_key=queue,
            content_type="application/json",
            content_encoding="utf-8",
            headers=headers,
            priority=5,
            serializer=None,
            retry=False,
        )
