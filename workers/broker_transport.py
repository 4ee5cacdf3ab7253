"""kombu's Redis transport with the fleet's intake, and four smaller changes.

* **The intake** (:mod:`workers.intake`): messages move from the queue lists into the
  unacknowledged set in one Lua script, up to the worker's free slots per round trip, so no
  message is ever held only in the worker's memory; an idle worker waits on the lists' bells.
  The script is sent where kombu sent its ``BRPOP`` (``_brpop_start``) and its reply read where
  kombu read the ``BRPOP`` reply (``_brpop_read``), so kombu's poller, its reconnects, pauses and
  health checks are unchanged. ``QoS.append`` writes nothing for a message the script recorded.
* **Acknowledgements in batches** (:mod:`workers.ack_batch`): ``QoS.ack`` queues the tag; one
  thread writes what is waiting with one pipeline. (Task events are batched by Celery itself: with
  an event loop, its dispatcher buffers the ``task`` group and publishes ``task.multi`` once per
  loop tick.)
* **Anything on a queue is safe.** A value that is no kombu message stopped the worker or dropped
  its connection, and was lost. The take script moves it to ``l04:intake:poison`` instead, and the
  worker sets it aside in ``l04:dlq`` (:func:`workers.poison.screen` checks what the script does
  not), then removes it from there.
* **A Redis restart no longer stops a busy worker.** When the broker connection is lost, Celery
  5.7 first ``collect()``s the connection, which detaches the transport from it
  (``transport.client = None``), then ``close()``s it, closing the default channel a second time.
  If the first close stopped half way (Redis refused the connection), the second one restores the
  unacknowledged messages, builds a new pool and reads the host from the detached transport:
  ``AttributeError: 'NoneType' object has no attribute 'hostname'``, which Celery treats as
  unrecoverable. The transport here keeps the connection it served
  (:class:`RemembersItsConnection`).
* **One client per channel.** kombu's ``Channel`` builds a new ``redis.Redis`` around its pool for
  every command it sends outside the poller; building one fills a table of some hundred response
  callbacks (about 5% of a worker's wall time at low load). The client made for the current pool
  is reused.

Used for ``redis://``, ``rediss://`` and ``sentinel://`` brokers (``tasks/worker_classes.py``).
A stock kombu worker can consume the same queues beside one on this transport: the lists, the
``unacked`` hash and ``unacked_index`` are kombu's own.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
from functools import cached_property
from queue import Empty
from typing import Any

from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from redis.exceptions import NoScriptError

from config.settings import get_settings
from gateway_core import keys
from gateway_core.queues import QUEUE_BELL_CAP
from workers.ack_batch import AckBatch
from workers.dead_letters import set_aside_sync, set_aside_with
from workers.intake import TAKE_MAX, TAKE_SHA, TAKE_SOURCE, Taken, bells, parse_take, take_args
from workers.poison import PoisonMessage, screen

log = logging.getLogger(__name__)

_SCREENED = frozenset({"BRPOP", "RPOP"})


class ScreeningChannelMixin:
    """A BRPOP or RPOP reply kombu reads itself (``basic_get``; a no-ack consumer's BRPOP) that
    is no kombu message is set aside and reads as empty. The intake's replies are screened where
    they are read (:meth:`Channel._deliver_taken`)."""

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
                if reply and command_name in _SCREENED and not channel._waiting_on_bells:
                    return channel._screened(command_name, reply)
                return reply

        return ScreeningRedis

    _waiting_on_bells = False

    def _screened(self, command: str, reply: Any) -> Any:
        queue, raw = reply if command == "BRPOP" else (None, reply)
        try:
            screen(raw)
        except PoisonMessage as poison:
            name = queue.decode("utf-8", "replace") if isinstance(queue, bytes) else queue
            self._set_aside(raw, f"not a kombu message: {poison}", name)
            return None
        return reply

    def _set_aside(self, raw: Any, reason: str, queue: str | None) -> bool:
        kept = set_aside_sync(get_settings().redis_url, raw, reason, queue=queue)
        if not kept:
            # The job-state Redis is away; the broker has just answered.
            kept = set_aside_with(self._create_client(), raw, reason, queue=queue)  # type: ignore[attr-defined]
        if kept:
            log.error("a value on %s set aside: %s", queue or "a queue", reason)
        else:
            digest = hashlib.sha256(raw if isinstance(raw, bytes) else str(raw).encode())
            log.error(
                "a value on %s (%s, %d bytes, sha256 %s) could not be set aside",
                queue or "a queue",
                reason,
                len(raw),
                digest.hexdigest(),
            )
        return kept


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


class IntakeQoS(kombu_redis.QoS):
    """kombu's QoS, for messages the take script has already recorded, acknowledged in batches."""

    channel: Channel

    def append(self, message: Any, delivery_tag: str) -> None:
        if self.channel.taken_by_script(delivery_tag):
            virtual.QoS.append(self, message, delivery_tag)
        else:
            super().append(message, delivery_tag)

    def ack(self, delivery_tag: str) -> None:
        self.channel.acks.add(delivery_tag)
        virtual.QoS.ack(self, delivery_tag)

    def reject(self, delivery_tag: str, requeue: bool = False) -> None:
        if requeue:
            self.restore_by_tag(delivery_tag, leftmost=True)
            virtual.QoS.ack(self, delivery_tag)
        else:
            self.ack(delivery_tag)

    def restore_by_tag(self, tag: Any, client: Any = None, leftmost: bool = False) -> None:
        """kombu's restore; an entry kombu cannot read is set aside and removed instead.

        kombu's restore reads each entry with Python's json; one it cannot read raised out of
        the restore loop on every sweep (no older entry was restored again) and out of a
        starting worker's first restore ("Unrecoverable error"). The restore's transaction
        aborts before any write, so the entry is still whole here.
        """
        try:
            super().restore_by_tag(tag, client, leftmost)
        except (ValueError, TypeError, KeyError, IndexError) as exc:
            with self.channel.conn_or_acquire(client) as redis_client:
                raw = redis_client.hget(self.unacked_key, tag)
                reason = f"unreadable unacknowledged entry: {type(exc).__name__}"
                if raw is None or self.channel._set_aside(raw, reason, None):
                    with redis_client.pipeline() as pipe:
                        pipe.zrem(self.unacked_index_key, tag).hdel(self.unacked_key, tag)
                        pipe.execute()


class Channel(ScreeningChannelMixin, kombu_redis.Channel):
    QoS = IntakeQoS
    _sync_client: Any = None
    #: What the next intake command is: a take (True), or a wait on the bells (False).
    _take_next = True
    _take_limit = 0
    _poison_checked = False
    #: A no-ack consumer's round: kombu's own BRPOP (see :meth:`_brpop_start`).
    _stock_round = False
    #: After a NOSCRIPT, the next take sends the script itself on the same connection.
    _send_source = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._recorded: set[str] = set()
        self._no_ack_queues: dict[str, str] = {}  # consumer tag -> queue
        super().__init__(*args, **kwargs)
        if self.global_keyprefix:
            raise ValueError(
                "the fleet's broker transport does not support global_keyprefix "
                "(its intake script names kombu's keys itself)"
            )
        # Made here, not on first use: acknowledgements come from several threads at once.
        self.acks = AckBatch(self.conn_or_acquire, self.unacked_key, self.unacked_index_key)

    def _create_client(self, asynchronous: bool = False) -> Any:
        if asynchronous:
            return super()._create_client(asynchronous=True)
        client = self._sync_client
        if client is None or client.connection_pool is not self.pool:
            client = self._sync_client = super()._create_client()
        return client

    @cached_property
    def subclient(self) -> Any:
        """kombu's pub/sub connection (broadcasts: ``celery inspect``, control), which reports a
        lost connection instead of quietly reconnecting inside a blocking read.

        redis-py retries a pub/sub read that failed on a lost connection: it reconnects,
        subscribes again and reads again, blocking. kombu reads it only when the socket is
        readable, so after a Redis restart (the socket readable with its end of file) the read
        it retried on the new connection waited for a broadcast that might never come: the
        consumer thread stood still up to ``socket_timeout`` (30 s), taking no job (seen in the
        Redis-restart kill loop, 2 runs of 25). Without the retry the error reaches kombu and
        Celery, which reconnect the whole consumer as they do for a lost take.
        """
        pubsub = self._create_client(asynchronous=True).pubsub()

        def execute_once(connection: Any, command: Any, *args: Any, **kwargs: Any) -> Any:
            return command(*args, **kwargs)

        pubsub._execute = execute_once
        return pubsub

    def taken_by_script(self, delivery_tag: str) -> bool:
        if delivery_tag in self._recorded:
            self._recorded.discard(delivery_tag)
            return True
        return False

    # -- the intake: sent where kombu sent BRPOP, read where kombu read its reply ----------------

    def _intake_lists(self) -> list[tuple[str, str]]:
        queues = self._queue_cycle.consume(len(self.active_queues))
        steps = self.priority_steps
        return [(self._q_for_pri(queue, step), queue) for step in steps for queue in queues]

    def basic_consume(
        self, queue: str, no_ack: bool, callback: Any, consumer_tag: str, **kwargs: Any
    ) -> Any:
        if no_ack:
            self._no_ack_queues[consumer_tag] = queue
        return super().basic_consume(queue, no_ack, callback, consumer_tag, **kwargs)

    def basic_cancel(self, consumer_tag: str) -> Any:
        self._no_ack_queues.pop(consumer_tag, None)
        return super().basic_cancel(consumer_tag)

    def _brpop_start(self, timeout: float | None = None) -> None:
        if self._no_ack_queues:
            # A no-ack consumer (the reply queue of `celery inspect`, of a control command) takes
            # nothing it must acknowledge: recording its messages as unacknowledged would leave
            # them to be restored, later, onto a queue nobody reads. kombu's BRPOP, as it was.
            self._stock_round = True
            super()._brpop_start(timeout)
            return
        self._stock_round = False
        lists = self._intake_lists()
        if not lists:
            return
        if not self._poison_checked:
            self._poison_checked = True
            self._set_aside_held_poison()
        connection = self.client.connection
        if self._take_next:
            free = self.qos.can_consume_max_estimate()
            self._take_limit = TAKE_MAX if free is None else min(TAKE_MAX, free)
            args = take_args(
                lists, self._take_limit, time.time(), self.unacked_key, self.unacked_index_key
            )
            self._waiting_on_bells = False
            if self._send_source:  # loads it into the cache of the server this connection is on
                self._send_source = False
                connection.send_command("EVAL", TAKE_SOURCE, *args)
            else:
                connection.send_command("EVALSHA", TAKE_SHA, *args)
        else:
            wait = self.brpop_timeout if timeout is None else timeout
            self._waiting_on_bells = True
            connection.send_command("BRPOP", *bells([key for key, _ in lists]), wait or 0)
        self._in_poll = connection
        self._brpop_sent_at = time.monotonic()  # type: ignore[assignment]

    def _brpop_read(self, **options: Any) -> bool:
        if self._stock_round:
            return bool(super()._brpop_read(**options))
        command = "BRPOP" if self._waiting_on_bells else "EVALSHA"
        try:
            try:
                reply = self.client.parse_response(self.client.connection, command, **options)
            except NoScriptError:  # Redis restarted (or failed over): its script cache is empty
                self._send_source = True
                raise Empty() from None
            except self.connection_errors:
                self.client.connection.disconnect()
                raise
            if self._waiting_on_bells:
                self._take_next = True  # a bell, or the wait timed out: look at the lists
                raise Empty()
            return self._deliver_taken(reply)
        finally:
            self._in_poll = None  # type: ignore[assignment]
            self._waiting_on_bells = False
            self._flush_brpop_reauth()

    def _deliver_taken(self, reply: Any) -> bool:
        taken = parse_take(reply)
        # A full batch may have left more behind; a short one emptied the lists: wait on bells.
        self._take_next = len(taken.taken) >= self._take_limit or bool(taken.poison)
        delivered = False
        failure: Exception | None = None
        refused: list[tuple[Taken, str]] = []
        for item in taken.taken:
            try:
                payload = screen(item.raw)
            except PoisonMessage as poison:
                refused.append((item, str(poison)))
                continue
            tag = payload["properties"]["delivery_tag"]
            self._recorded.add(tag)
            try:
                self.connection._deliver(payload, item.queue)
            except Exception as exc:
                # As kombu would for its one message, but only once the rest of the batch is
                # delivered: they are recorded as unacknowledged already and must not wait
                # for the visibility timeout because of another message.
                failure = failure or exc
            finally:
                self._recorded.discard(tag)  # used by QoS.append inside _deliver, or never
            self._queue_cycle.rotate(item.queue)
            delivered = True
        # Values that are no message are set aside once the messages are on their way: a slow
        # dead-letter write must not hold up jobs that are already recorded as taken.
        for item, reason in refused:
            self._contained(self._set_aside_refused, item, reason)
        for raw in taken.poison:
            self._contained(self._set_aside_poison, raw)
        if failure is not None:
            raise failure
        if not delivered:
            raise Empty()
        return True

    @staticmethod
    def _contained(step: Any, *args: Any) -> None:
        try:
            step(*args)
        except Exception as exc:  # what is not set aside now stays where it is, for later
            log.warning("a value could not be set aside now (%s)", type(exc).__name__)

    def _poll_error(self, type: str, **options: Any) -> None:
        if type == "BRPOP":  # the intake's command: its reply must be read as what it is
            with contextlib.suppress(Empty):
                self._brpop_read(**options)
            return
        super()._poll_error(type, **options)

    def _set_aside_poison(self, raw: bytes) -> None:
        """One value of the poison list, set aside by whoever removes it from there: a value is
        dead-lettered once, however many workers look at the list at the same time."""
        try:
            screen(raw)
            reason = "not a kombu message: no delivery tag or delivery info"
        except PoisonMessage as poison:
            reason = f"not a kombu message: {poison}"
        with self.conn_or_acquire() as client:
            if not client.lrem(keys.INTAKE_POISON, 1, raw):
                return  # another worker has it
            if not self._set_aside(raw, reason, None):
                client.rpush(keys.INTAKE_POISON, raw)  # kept for the next look

    def _set_aside_held_poison(self) -> None:
        """Values a worker moved to the poison list but died before setting aside."""
        with self.conn_or_acquire() as client:
            held = client.lrange(keys.INTAKE_POISON, 0, 999)
        for raw in held:
            self._contained(self._set_aside_poison, raw)

    def _set_aside_refused(self, item: Taken, reason: str) -> None:
        """A value the script took as a message that the full screen refuses (not UTF-8, a body
        that is not base64, JSON only Redis's reader accepts...): set aside, then removed from
        the unacknowledged set under the tag the script wrote it under."""
        if not self._set_aside(item.raw, f"not a kombu message: {reason}", item.queue):
            return  # left unacknowledged: restored (or set aside by the restore) later
        with self.conn_or_acquire() as client, client.pipeline() as pipe:
            pipe.zrem(self.unacked_index_key, item.tag).hdel(self.unacked_key, item.tag)
            pipe.execute()

    def _do_restore_message(
        self, payload: Any, exchange: Any, routing_key: Any, pipe: Any, leftmost: bool = False
    ) -> None:
        """kombu's restore, and the restored message's bell rung so an idle worker takes it."""
        super()._do_restore_message(payload, exchange, routing_key, pipe, leftmost)
        try:
            priority = self._get_message_priority(payload, reverse=False)
            for queue in self._lookup(exchange, routing_key):
                bell = keys.queue_bell(self._q_for_pri(queue, priority))
                pipe.lpush(bell, 1)
                pipe.ltrim(bell, 0, QUEUE_BELL_CAP - 1)
        except self.connection_errors:
            raise
        except Exception:  # the message is restored; without a bell it is taken within 1 s
            log.warning("restored message: bell not rung", exc_info=True)

    def close(self) -> None:
        acks = getattr(self, "acks", None)  # None if __init__ stopped before making it
        if acks is not None:
            acks.close()
        super().close()


class Transport(RemembersItsConnection, kombu_redis.Transport):
    Channel = Channel


class SentinelChannel(Channel, kombu_redis.SentinelChannel):
    """For ``sentinel://`` brokers: kombu's SentinelChannel (each pool asks the Sentinels for the
    master) under :class:`Channel`, so that every change :class:`Channel` makes to kombu's
    channel applies on Sentinel too. SentinelChannel overrides only how a pool is made and the
    fanout topics, which :class:`Channel` does not touch."""


class SentinelTransport(RemembersItsConnection, kombu_redis.SentinelTransport):
    Channel = SentinelChannel
