"""Celery's consumer, with poison messages set aside in the dead-letter list instead of dropped.

Celery logs and acknowledges a message it cannot decode, or whose task it does not know: the
message is gone. Here the raw body (capped), its headers and the reason go to ``l04:dlq`` first,
where ``l04 dlq list`` shows them and ``l04 dlq replay`` resends what can be read. The worker
goes on either way.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from celery.worker.consumer import Consumer

from config.settings import get_settings
from gateway_client import keys
from gateway_client.redis_pool import make_sync_redis
from workers.dead_letters import DEAD_LETTER_TTL_S, MAX_DEAD_LETTERS

log = logging.getLogger(__name__)
MAX_BODY = 65_536


def _set_aside_raw(message: Any, reason: str) -> None:
    try:
        body = message.body
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body)
        headers = message.headers or {}
        record = json.dumps(
            {
                "reason": reason,
                "task_id": headers.get("id"),
                "task": headers.get("task"),
                "envelope": text[:MAX_BODY],
                "content_type": message.content_type,
                "at": time.time(),
            }
        )
        settings = get_settings()
        client = make_sync_redis(settings.redis_url, sentinel=settings.sentinel, socket_timeout=5)
        try:
            with client.pipeline(transaction=True) as pipe:
                pipe.lpush(keys.DEAD_LETTERS, record)
                pipe.ltrim(keys.DEAD_LETTERS, 0, MAX_DEAD_LETTERS - 1)
                pipe.expire(keys.DEAD_LETTERS, DEAD_LETTER_TTL_S)
                pipe.execute()
        finally:
            client.close()
    except Exception as exc:  # the worker must go on whatever happens here
        log.error("could not set a poison message aside: %s", type(exc).__name__)


class DeadLetteringConsumer(Consumer):
    def create_task_handler(self, *args: Any, **kwargs: Any) -> Any:
        """Celery's handler, but a message it chokes on is set aside instead of ending the worker.

        Celery treats any other exception raised while a message is turned into a request (a
        body that is JSON but not ``[args, kwargs, embed]``, say) as unrecoverable: the worker
        shuts down, the message is restored, and the next worker dies on it too.
        """
        handle = super().create_task_handler(*args, **kwargs)

        def on_task_received(message: Any) -> Any:
            try:
                return handle(message)
            except (ValueError, TypeError, AttributeError, IndexError, KeyError) as exc:
                _set_aside_raw(message, f"invalid task message: {type(exc).__name__}: {exc}")
                log.error("poison message set aside: %s", type(exc).__name__)
                message.ack()
                return None

        return on_task_received

    def on_decode_error(self, message: Any, exc: Exception) -> None:
        _set_aside_raw(message, f"undecodable message: {type(exc).__name__}")
        super().on_decode_error(message, exc)

    def on_unknown_task(self, body: Any, message: Any, exc: Exception) -> None:
        _set_aside_raw(message, f"unknown task: {exc}")
        super().on_unknown_task(body, message, exc)

    def on_invalid_task(self, body: Any, message: Any, exc: Exception) -> None:
        _set_aside_raw(message, f"invalid task message: {exc}")
        super().on_invalid_task(body, message, exc)

    def on_unknown_message(self, body: Any, message: Any) -> None:
        _set_aside_raw(message, "not a task message")
        super().on_unknown_message(body, message)
