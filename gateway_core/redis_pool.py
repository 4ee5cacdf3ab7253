"""Every Redis client of the fleet, built here from a URL: bounded pools that wait under bursts.

A burst of thousands of submits (or of a worker's jobs) must queue for a connection, not fail:
redis-py's plain pool raises once ``max_connections`` are in use, its blocking pool waits.

A ``sentinel://`` URL (see :mod:`gateway_core.redis_url`) gives a client of the master that
redis-py's ``Sentinel.master_for`` names: each new connection asks the Sentinels where the
master is, and a connection to a demoted master (``READONLY``) is dropped, so after a failover
the client follows the new master. Its pool is the same blocking pool as for a plain URL.
Lua scripts (:func:`gateway_core.lua_scripts.register`) need nothing more: redis-py's
``Script`` loads a script again when the new master answers ``NOSCRIPT``.

:func:`make_redis` builds an asyncio client, :func:`make_sync_redis` a blocking one.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import redis
import redis.asyncio
import redis.asyncio.sentinel
import redis.sentinel
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry

from gateway_core.redis_url import (
    SentinelOptions,
    check_redis_url,
    check_sentinel_options,
    is_sentinel_url,
    parse_sentinel_url,
)

# A Redis call takes well under a millisecond, so a few dozen connections serve thousands of jobs.
DEFAULT_MAX_CONNECTIONS = 64
WAIT_FOR_CONNECTION_S = 30
# How long a question to a Sentinel may take: a dead one must not stall finding the master.
SENTINEL_SOCKET_TIMEOUT_S = 2


@lru_cache(maxsize=1)
def _driver_info() -> Any:
    """redis-py's client identity, built once.

    Without it, redis-py 8 reads its own version from the package metadata (an email-format
    parse) for every new connection: a burst of new connections spent ~8% of a worker's CPU there.
    """
    try:
        from redis.driver_info import DriverInfo
    except ImportError:  # redis-py before 7
        return None
    return DriverInfo()


def _pool_settings(max_connections: int, options: dict[str, Any]) -> dict[str, Any]:
    return {
        "max_connections": max_connections,
        "timeout": WAIT_FOR_CONNECTION_S,
        "socket_connect_timeout": 5,
        "socket_keepalive": True,
        "health_check_interval": 10,
        "retry_on_timeout": True,
        **({"driver_info": info} if (info := _driver_info()) is not None else {}),
        **options,
    }


def _sentinel_kwargs(sentinel: SentinelOptions | None, no_retry: Any) -> dict[str, Any]:
    """How to talk to the Sentinels themselves (kombu's ``sentinel_kwargs``)."""
    kwargs: dict[str, Any] = {
        "socket_connect_timeout": SENTINEL_SOCKET_TIMEOUT_S,
        "socket_timeout": SENTINEL_SOCKET_TIMEOUT_S,
        # One try per Sentinel: the next Sentinel is the retry. With redis-py's default (three
        # retries with backoff, each) a client facing three unreachable or refusing Sentinels
        # took 24 s to fail every command.
        "retry": no_retry,
    }
    if sentinel is not None and sentinel.password:
        kwargs["password"] = sentinel.password
    return kwargs


def _sentinel_target(
    url: str, variable: str, sentinel: SentinelOptions | None
) -> tuple[list[tuple[str, int]], str, dict[str, Any]]:
    """The Sentinels' addresses, the master's name, and how to log in to the master."""
    sentinel = sentinel or SentinelOptions()
    check_sentinel_options(url, sentinel, variable)
    target = parse_sentinel_url(url, variable)
    login: dict[str, Any] = {"db": target.db}
    if target.username:
        login["username"] = target.username
    if target.password:
        login["password"] = target.password
    return list(target.sentinels), str(sentinel.master), login


class _AsyncBlockingSentinelPool(
    redis.asyncio.sentinel.SentinelConnectionPool, BlockingConnectionPool
):
    """The master's connections, found through the Sentinels; a burst waits for one."""


class _SyncBlockingSentinelPool(
    redis.sentinel.SentinelConnectionPool, redis.BlockingConnectionPool
):
    """The blocking counterpart of :class:`_AsyncBlockingSentinelPool`."""


class AsyncSentinelRedis(Redis):
    """An asyncio client of a Sentinel master; closing it also closes its Sentinel connections."""

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        await super().aclose(close_connection_pool)
        await self.connection_pool.sentinel_manager.aclose()  # type: ignore[attr-defined]


class SyncSentinelRedis(redis.Redis):
    """A blocking client of a Sentinel master; closing it also closes its Sentinel connections."""

    def close(self) -> None:
        super().close()
        self.connection_pool.sentinel_manager.close()  # type: ignore[attr-defined]


def make_redis(
    url: str,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    *,
    sentinel: SentinelOptions | None = None,
    variable: str = "REDIS_URL",
    **options: Any,
) -> Redis:
    """An asyncio client with its own bounded pool; ``options`` override the connection settings.

    ``sentinel`` (``settings.sentinel``) is needed for a ``sentinel://`` URL; a malformed URL
    is E4004 naming ``variable``.
    """
    check_redis_url(url, variable)
    settings = _pool_settings(max_connections, options)
    if not is_sentinel_url(url):
        pool = BlockingConnectionPool.from_url(url, **settings)
        return Redis.from_pool(pool)  # the client owns the pool: aclose() closes its connections
    sentinels, master, login = _sentinel_target(url, variable, sentinel)
    manager = redis.asyncio.sentinel.Sentinel(
        sentinels, sentinel_kwargs=_sentinel_kwargs(sentinel, AsyncRetry(NoBackoff(), 0))
    )
    client = manager.master_for(
        master,
        redis_class=AsyncSentinelRedis,
        connection_pool_class=_AsyncBlockingSentinelPool,
        **settings,
        **login,
    )
    assert isinstance(client, AsyncSentinelRedis)
    return client


def make_sync_redis(
    url: str,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    *,
    sentinel: SentinelOptions | None = None,
    variable: str = "REDIS_URL",
    **options: Any,
) -> redis.Redis:
    """The blocking counterpart of :func:`make_redis`, for code outside the event loop."""
    check_redis_url(url, variable)
    settings = _pool_settings(max_connections, options)
    if not is_sentinel_url(url):
        return redis.Redis.from_pool(redis.BlockingConnectionPool.from_url(url, **settings))
    sentinels, master, login = _sentinel_target(url, variable, sentinel)
    manager = redis.sentinel.Sentinel(
        sentinels, sentinel_kwargs=_sentinel_kwargs(sentinel, Retry(NoBackoff(), 0))
    )
    client = manager.master_for(
        master,
        redis_class=SyncSentinelRedis,
        connection_pool_class=_SyncBlockingSentinelPool,
        **settings,
        **login,
    )
    assert isinstance(client, SyncSentinelRedis)
    return client
