"""Messages a worker cannot use are set aside in ``l04:dlq``, never guessed at and never dropped.

Three places find them: the broker transport (bytes on a queue that are no kombu message at all),
Celery's consumer (a kombu message whose body is no task), and the runtime (a task whose envelope
this worker cannot read). All three write the same record through :func:`dead_letter`: the code
(E4503, unreadable job message; E4406 for a readable one whose job has no record), the reason, the
raw value (capped), and what is known of the message. ``l04 dlq list`` shows them.
"""

from __future__ import annotations

import json
import logging
import time
from functools import lru_cache
from typing import Any

import redis
from redis.asyncio import Redis

from config.settings import get_settings
from gateway_core import keys
from gateway_core.redis_pool import make_sync_redis

log = logging.getLogger(__name__)

MAX_DEAD_LETTERS = 10_000
DEAD_LETTER_TTL_S = 7 * 24 * 3600
#: The most of a raw value a record keeps (a queue may hold a value of any size).
MAX_RAW_CHARS = 65_536


def dead_letter(reason: str, raw: Any, *, code: str = "E4503", **known: Any) -> str:
    """The record kept for one message: its code, why, when, the raw value (capped) and what is
    known. No caller gets the code: no job of record could be failed with it."""
    if isinstance(raw, bytes):
        size = len(raw)
        text = raw[: MAX_RAW_CHARS * 4].decode("utf-8", "replace")
    elif isinstance(raw, str):
        size, text = len(raw), raw
    else:
        try:
            text = json.dumps(raw)
        except (TypeError, ValueError):
            text = repr(raw)
        size = len(text)
    record = {
        "code": code,
        "reason": reason,
        **{k: v for k, v in known.items() if v is not None},
        "envelope": text[:MAX_RAW_CHARS],
        "size": size,
        "at": time.time(),
    }
    return json.dumps(record, default=str)


def _push(pipe: Any, record: str) -> None:
    pipe.lpush(keys.DEAD_LETTERS, record)
    pipe.ltrim(keys.DEAD_LETTERS, 0, MAX_DEAD_LETTERS - 1)
    pipe.expire(keys.DEAD_LETTERS, DEAD_LETTER_TTL_S)


async def set_aside(redis_client: Redis, envelope: Any, reason: str, **known: Any) -> None:
    """From the asyncio runtime."""
    async with redis_client.pipeline(transaction=True) as pipe:
        _push(pipe, dead_letter(reason, envelope, **known))
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
            _push(pipe, dead_letter(reason, raw, **known))
            pipe.execute()
        return True
    except Exception as exc:
        log.error("could not set a message aside (%s): %s", reason, type(exc).__name__)
        return False
