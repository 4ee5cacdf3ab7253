"""Celery's consumer, with poison messages set aside and a quick return after a broker outage.

* Celery logs and acknowledges a message it cannot decode, or whose task it does not know: the
  message is gone. Here the raw body (capped), its headers and the reason go to ``l04:dlq`` first,
  where ``l04 dlq list`` shows them and ``l04 dlq replay`` resends what can be read. The worker
  goes on either way. (Values that are no kombu message at all never get this far: the broker
  transport sets them aside, see :mod:`workers.broker_transport`.)
* After losing the broker, kombu retries the connection at 2, 4, 6... seconds, up to 30 s apart,
  so a worker could sit idle for half a minute after Redis came back. It retries every
  ``RECONNECT_MAX_S`` at most here: a connection attempt to a server that is down costs nothing.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from celery.worker.consumer import Consumer

from config.settings import get_settings
from workers.dead_letters import set_aside_sync

log = logging.getLogger(__name__)

RECONNECT_FIRST_S = 0.5
RECONNECT_MAX_S = 2.0


def _set_aside_raw(message: Any, reason: str) -> None:
    try:
        headers = message.headers or {}
        known = {
            "task_id": headers.get("id"),
            "task": headers.get("task"),
            "content_type": message.content_type,
        }
        raw = message.body
    except Exception:  # a message too broken to describe is still kept, as text
        known, raw = {}, repr(message)
    set_aside_sync(get_settings().redis_url, raw, reason, **known)


class DeadLetteringConsumer(Consumer):
    def ensure_connected(self, conn: Any) -> Any:
        conn.ensure_connection = functools.partial(
            conn.ensure_connection,
            interval_start=RECONNECT_FIRST_S,
            interval_step=RECONNECT_FIRST_S,
            interval_max=RECONNECT_MAX_S,
        )
        return super().ensure_connected(conn)

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
