"""kombu's Redis transport with three changes: values on a queue are checked before kombu reads
them, a channel still reaches Redis after kombu detached it from its connection, and one client
object serves a channel instead of one per command.

* **Anything on a queue is safe.** kombu parses each popped value with ``json.loads`` and a few
  look-ups inside Celery's event loop; bytes that are no kombu message (``not json``, ``[1,2,3]``,
  ``{}``, bad base64...) stopped the worker or dropped its connection, and the value was lost.
  Each BRPOP/RPOP reply is checked first (:func:`workers.poison.screen`); one that fails goes to
  the dead-letter list with the reason and the raw value, and kombu sees an empty reply.
* **A Redis restart no longer stops a busy worker.** When the broker connection is lost, Celery
  5.7 first ``collect()``s the connection, which detaches the transport from it
  (``transport.client = None``), then ``close()``s it, closing the default channel a second time.
  If the first close stopped half way (Redis refused the connection), the second one restores the
  unacknowledged messages, builds a new pool and reads the host from the detached transport:
  ``AttributeError: 'NoneType' object has no attribute 'hostname'``, which Celery treats as
  unrecoverable. An idle worker has nothing to restore, which is why only busy ones died. Each
  channel here keeps the connection it was opened on and reads its parameters from that.
* **One client per channel.** kombu's ``Channel`` builds a new ``redis.Redis`` around its pool for
  every unacked-index update, acknowledgement and task-event publish; building one fills a table
  of some hundred response callbacks (about 5% of a worker's wall time at low load, on Celery's
  consumer thread). The client made for the current pool is reused.

Used for ``redis://`` and ``rediss://`` brokers (``tasks/app.py``).
"""

from __future__ import annotations

import logging
from typing import Any

from kombu.transport import redis as kombu_redis

from workers.dead_letters import set_aside_sync
from workers.poison import PoisonMessage, screen

log = logging.getLogger(__name__)

_SCREENED = frozenset({"BRPOP", "RPOP"})


class ScreeningChannelMixin:
    """A BRPOP or RPOP reply that is no kombu message is set aside and reads as empty."""

    def _get_client(self) -> Any:
        base = super()._get_client()  # type: ignore[misc]
        if not isinstance(base, type):  # kombu's prefixed client is a partial: leave it be
            return base
        channel = self

        class ScreeningRedis(base):  # type: ignore[misc,valid-type]
            def parse_response(self, connection: Any, command_name: Any, **options: Any) -> Any:
                reply = super().parse_response(connection, command_name, **options)
                if reply and command_name in _SCREENED:
                    return channel._screened(command_name, reply)
                return reply

        return ScreeningRedis

    def _screened(self, command: str, reply: Any) -> Any:
        queue, raw = reply if command == "BRPOP" else (None, reply)
        try:
            screen(raw)
        except PoisonMessage as poison:
            queue_name = queue.decode("utf-8", "replace") if isinstance(queue, bytes) else queue
            from config.settings import get_settings

            reason = f"not a kombu message: {poison}"
            set_aside_sync(get_settings().redis_url, raw, reason, queue=queue_name)
            log.error("a value on %s set aside: %s", queue_name or "a queue", poison)
            return None
        return reply


class ReattachingChannelMixin:
    """Connection parameters from the connection the channel was opened on, even when detached."""

    connection: Any

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Set before kombu's __init__, which may already build a pool.
        transport = args[0] if args else kwargs["connection"]
        self._opened_on = transport.client
        super().__init__(*args, **kwargs)

    def _connparams(self, asynchronous: bool = False) -> Any:
        transport = self.connection
        if transport.client is not None or self._opened_on is None:
            return super()._connparams(asynchronous)  # type: ignore[misc]
        transport.client = self._opened_on
        try:
            return super()._connparams(asynchronous)  # type: ignore[misc]
        finally:
            transport.client = None


class Channel(ScreeningChannelMixin, ReattachingChannelMixin, kombu_redis.Channel):
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
