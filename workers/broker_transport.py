"""kombu's Redis transport, keeping one client object per channel instead of one per command.

kombu's Redis ``Channel`` builds a new ``redis.Redis`` object around its shared connection pool
for every unacked-index update, acknowledgement and task-event publish. Building one fills a
case-insensitive table of some hundred response callbacks; py-spy put about 5% of a worker's
wall time there at low load, on Celery's consumer thread, which every job waits for. A client
object holds no state beyond its pool, so the one made for the current pool is reused (a new
pool after a reconnect gets a new client).

Used for ``redis://`` and ``rediss://`` brokers (``tasks/app.py``); Sentinel keeps kombu's own.
"""

from __future__ import annotations

from typing import Any

from kombu.transport import redis as kombu_redis


class Channel(kombu_redis.Channel):
    _sync_client: Any = None

    def _create_client(self, asynchronous: bool = False) -> Any:
        if asynchronous:
            return super()._create_client(asynchronous=True)
        client = self._sync_client
        if client is None or client.connection_pool is not self.pool:
            client = self._sync_client = super()._create_client()
        return client


class Transport(kombu_redis.Transport):
    Channel = Channel


class SentinelChannel(Channel, kombu_redis.SentinelChannel):
    """For ``sentinel://`` brokers: kombu's SentinelChannel (each pool asks the Sentinels for the
    master) under :class:`Channel`, so that every change :class:`Channel` makes to kombu's
    channel applies on Sentinel too. SentinelChannel overrides only how a pool is made and the
    fanout topics, which :class:`Channel` does not touch."""


class SentinelTransport(kombu_redis.SentinelTransport):
    Channel = SentinelChannel
