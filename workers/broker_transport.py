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
  unrecoverable. An idle worker has nothing to restore, which is why only busy ones died. The
  transport here keeps the connection it served (:class:`RemembersItsConnection`).
* **One client per channel.** kombu's ``Channel`` builds a new ``redis.Redis`` around its pool for
  every unacked-index update, acknowledgement and task-event publish; building one fills a table
  of some hundred response callbacks (about 5% of a worker's wall time at low load, on Celery's
  consumer thread). The client made for the current pool is reused.

Used for ``redis://`` and ``rediss://`` brokers (``tasks/app.py``).
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

from kombu.transport import redis as kombu_redis

from config.settings import get_settings
from workers.dead_letters import set_aside_sync, set_aside_with
from workers.poison import PoisonMessage, screen

log = logging.getLogger(__name__)

_SCREENED = frozenset({"BRPOP", "RPOP"})


class ScreeningChannelMixin:
    """A BRPOP or RPOP reply that is no kombu message is set aside and reads as empty."""

    def _get_client(self) -> Any:
        base = super()._get_client()  # type: ignore[misc]
        if not isinstance(base, type):
            # kombu's client for a global_keyprefix is a partial, not a class to extend. The
            # fleet never sets one; say so rather than run unscreened without a word.
            log.warning("broker transport: a global_keyprefix client: queue values unscreened")
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
            reason = f"not a kombu message: {poison}"
            kept = set_aside_sync(get_settings().redis_url, raw, reason, queue=queue_name)
            if not kept:
                # The job-state Redis is away; the broker's just answered this pop.
                kept = set_aside_with(self._create_client(), raw, reason, queue=queue_name)  # type: ignore[attr-defined]
            if kept:
                log.error("a value on %s set aside: %s", queue_name or "a queue", poison)
            else:
                digest = hashlib.sha256(raw if isinstance(raw, bytes) else str(raw).encode())
                log.error(
                    "a value on %s (%s, %d bytes, sha256 %s) could not be set aside: lost",
                    queue_name or "a queue",
                    poison,
                    len(raw),
                    digest.hexdigest(),
                )
            return None
        return reply


class RemembersItsConnection:
    """A transport whose ``client`` (the kombu connection it serves) outlives kombu's detach.

    kombu sets ``transport.client = None`` when it collects a connection, to break a reference
    cycle; a channel closed after that (Celery 5.7 closes it again) still needs the connection's
    host and password to restore its messages, and so does an acknowledgement sent through an old
    channel from another thread. The last connection is kept and answered instead of None. No
    state is changed on the way, so threads reading it at the same time all see the same value.
    """

    _last_client: Any = None

    @property
    def client(self) -> Any:
        return self._last_client

    @client.setter
    def client(self, value: Any) -> None:
        if value is not None:
            self._last_client = value


class Channel(ScreeningChannelMixin, kombu_redis.Channel):
    _sync_client: Any = None

    def _create_client(self, asynchronous: bool = False) -> Any:
        if asynchronous:
            return super()._create_client(asynchronous=True)
        client = self._sync_client
        if client is None or client.connection_pool is not self.pool:
            client = self._sync_client = super()._create_client()
        return client


class Transport(RemembersItsConnection, kombu_redis.Transport):
    Channel = Channel


class SentinelChannel(Channel, kombu_redis.SentinelChannel):
    """For ``sentinel://`` brokers: kombu's SentinelChannel (each pool asks the Sentinels for the
    master) under :class:`Channel`, so that every change :class:`Channel` makes to kombu's
    channel applies on Sentinel too. SentinelChannel overrides only how a pool is made and the
    fanout topics, which :class:`Channel` does not touch."""


class SentinelTransport(RemembersItsConnection, kombu_redis.SentinelTransport):
    Channel = SentinelChannel
