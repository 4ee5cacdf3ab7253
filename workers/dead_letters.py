"""Messages a worker cannot use are set aside in ``l04:dlq``, never guessed at and never dropped.

Three places find them: the broker transport (bytes on a queue that are no kombu message at all),
Celery's consumer (a kombu message whose body is no task), and the runtime (a task whose envelope
this worker cannot read). All three write the same record (:mod:`gateway_core.dead_letters`): the
code (E4503, unreadable job message; E4406 for a readable one whose job has no record), the
reason, the raw value (capped), and what is known of the message. ``l04 dlq list`` shows them.
The consumer and the transport run in Celery's thread, so they write with a blocking client,
one per Redis URL for the process (not one per message).
"""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Any

import redis
from redis.asyncio import Redis

from config.settings import get_settings
from gateway_core.dead_letters import push, record
from gateway_core.redis_pool import make_sync_redis

log = logging.getLogger(__name__)


async def set_aside(redis_client: Redis, envelope: Any, reason: str, **known: Any) -> None:
    """From the asyncio runtime."""
    async with redis_client.pipeline(transaction=True) as pipe:
        push(pipe, record(reason, envelope, **known))
        await pipe.execute()


@lru_cache(maxsize=4)
def _sync_client(url: str) -> redis.Redis:
    return make_sync_redis(
        url, 4, sentinel=get_settings().sentinel, socket_timeout=5, socket_connect_timeout=5
    )


def set_aside_sync(url: str, raw: Any, reason: str, **known: Any) -> bool:
    """From Celery's consumer thread; never raises (the worker goes on whatever happens here)."""
    return set_aside_with(_sync_client(url), raw, reason, **known)


def set_aside_with(client: redis.Redis, raw: Any, reason: str, **known: Any) -> bool:
    """Through a given blocking client; False (and a log line) if Redis would not take it."""
    try:
        with client.pipeline(transaction=True) as pipe:
            push(pipe, record(reason, raw, **known))
            pipe.execute()
        return True
    except Exception as exc:
        log.error("could not set a message aside (%s): %s", reason, type(exc).__name__)
        return False
