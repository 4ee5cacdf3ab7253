"""Redis trouble seen by a producer becomes a typed, retryable error: E4407, job store unavailable.

redis-py raises ``ConnectionError``, ``TimeoutError`` (and ``BusyLoadingError`` while a restarted
server loads its append-only file); a caller of the gateway must see a :class:`GatewayError` it
can retry on (the HTTP front door answers 503), never a library's exception.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway_core.errors import JobStoreUnavailable

STORE_ERRORS = (RedisConnectionError, RedisTimeoutError, ConnectionError, TimeoutError)
RETRY_AFTER_S = 1.0


def store_unavailable(exc: BaseException) -> JobStoreUnavailable:
    return JobStoreUnavailable(
        f"the job store (Redis) is unavailable: {type(exc).__name__}; retry shortly",
        details={"retry_after": RETRY_AFTER_S},
    )


@contextmanager
def job_store_errors() -> Iterator[None]:
    """Inside: a Redis connection failure raises E4407 instead."""
    try:
        yield
    except STORE_ERRORS as exc:
        raise store_unavailable(exc) from exc
