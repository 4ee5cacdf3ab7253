"""Redis clients for the fleet: bounded pools that wait for a free connection under bursts.

A burst of thousands of submits (or of a worker's jobs) must queue for a connection, not fail:
redis-py's plain pool raises once ``max_connections`` are in use, its blocking pool waits.
"""

from __future__ import annotations

from redis.asyncio import BlockingConnectionPool, Redis

DEFAULT_MAX_CONNECTIONS = 256
WAIT_FOR_CONNECTION_S = 30


def make_redis(url: str, max_connections: int = DEFAULT_MAX_CONNECTIONS) -> Redis:
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=WAIT_FOR_CONNECTION_S,
        socket_connect_timeout=5,
        socket_keepalive=True,
        health_check_interval=10,
        retry_on_timeout=True,
    )
    return Redis(connection_pool=pool)
