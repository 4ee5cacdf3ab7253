"""Lossless, in-order delivery of a job's events to the caller.

Redis pub/sub only reaches whoever listens at that instant, so it is used as a doorbell: each
announcement carries the event and its number ``n``. The job's stream is the record. For each job
being watched the listener remembers the next ``n`` it expects and the last stream id it saw:

* an announcement with the expected ``n`` is delivered at once (the fast path: one hop);
* a smaller ``n`` is a duplicate and is dropped;
* a larger ``n`` means something was missed, so the stream is read from the last id seen.

Two ways to hear about a job:

* **The inbox** (jobs this process submits). The listener subscribes once to its own inbox
  channel; each job it submits records that channel, and every announcement of the job is
  repeated there. The watch is registered before the job exists, so nothing can be missed and the
  job costs no subscribe, no stream read and no unsubscribe.
* **The job's channel** (any other job, or a resumed stream). Subscribing happens before the first
  read of the stream, so an event written in between is caught by one or the other.

After a dropped connection the listener subscribes again and reads every watched stream from its
last id; idle watches are also re-read, in one pipelined round trip, every ``poll_interval``
seconds as a last resort. One pub/sub connection serves every job a client waits on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from dataclasses import dataclass, field

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway_core import keys
from gateway_core.job_records import (
    JobEvent,
    JobRecords,
    parse_announcement,
    parse_inbox_announcement,
)

log = logging.getLogger(__name__)

_CONNECTION_ERRORS = (RedisConnectionError, RedisTimeoutError, OSError)

#: Put on a watch's queue when the job ended at or before the point its caller resumes from
#: (``stream(after_sequence=n)`` with ``n`` at or past the last event): nothing more will come.
FEED_ENDED = JobEvent(-1, "", {"type": "feed-ended"})
# A submitted job's events wait this long after its end for its handle to ask for them.
_UNCLAIMED_GRACE_S = 10.0
# Idle watches re-read per pipelined round trip.
_POLL_BATCH = 500


@dataclass(eq=False)
class _Watch:
    job_id: str
    next_n: int = 0
    last_id: str = "0-0"
    queue: asyncio.Queue[JobEvent] = field(default_factory=asyncio.Queue)
    last_activity: float = 0.0
    catching_up: bool = False
    # Registered at submit, through the inbox, and no handle has taken it yet.
    unclaimed: bool = False
    # The inbox was subscribed when it was registered: nothing can have been missed.
    trusted: bool = False
    ended_at: float | None = None  # when its terminal event arrived
    give_up_at: float = float("inf")  # an unclaimed watch is let go of then


class EventListener:
    def __init__(self, redis: Redis, store: JobRecords, *, poll_interval: float = 5.0) -> None:
        self._redis = redis
        self._store = store
        self._poll_interval = poll_interval
        self.inbox = keys.client_inbox(uuid.uuid4().hex)
        self._inbox_confirmed = False
        self._watches: dict[str, set[_Watch]] = {}
        self._by_inbox: dict[str, _Watch] = {}  # job id -> its unclaimed inbox watch
        self._subscribed: set[str] = set()  # jobs whose own channel is subscribed
        self._pubsub: PubSub | None = None
        self._confirmations: dict[str, asyncio.Future[None]] = {}
        self._reader: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()  # set when a subscription is made
        self._background: set[asyncio.Task[None]] = set()
        self._next_poll = 0.0
        # redis-py's PubSub connects lazily and unguarded: concurrent first subscribes would each
        # open a connection and all but one would be orphaned. Changes go through this lock.
        self._subscription_lock = asyncio.Lock()
        self._closed = False

    # -- public -------------------------------------------------------------------------------

    async def expect(self, job_id: str, lifetime_s: float) -> str:
        """Before submitting ``job_id``: start watching it through this process's inbox.

        Returns the inbox channel, for the job's ``reply_to``. Call :meth:`forget` if the job was
        not created after all. Events no handle asks for are let go of a few seconds after the
        job ends, or ``lifetime_s`` (the job's deadline and grace) from now.
        """
        if not self._inbox_confirmed:
            await self._subscribe(self.inbox)
        if job_id not in self._by_inbox and job_id not in self._watches:
            now = asyncio.get_running_loop().time()
            watch = _Watch(
                job_id,
                last_activity=now,
                unclaimed=True,
                # Without a confirmed inbox (Redis just restarted) the handle reads the stream
                # when it opens, which catches whatever the inbox missed.
                trusted=self._inbox_confirmed,
                give_up_at=now + lifetime_s + _UNCLAIMED_GRACE_S,
            )
            self._by_inbox[job_id] = watch
            self._watches.setdefault(job_id, set()).add(watch)
        return self.inbox

    def forget(self, job_id: str) -> None:
        """The job ``expect`` was called for was not created by this submit."""
        watch = self._by_inbox.pop(job_id, None)
        if watch is not None:
            self._drop(watch)

    async def open(self, job_id: str, after_n: int = -1) -> Subscription:
        """Start watching ``job_id``: events with ``n > after_n`` arrive in order."""
        loop = asyncio.get_running_loop()
        inboxed = self._by_inbox.pop(job_id, None)
        if inboxed is not None:
            inboxed.unclaimed = False
            if after_n == -1 and inboxed.trusted:
                return Subscription(self, inboxed)  # the fast path: nothing to do
            self._drop(inboxed)
        watch = _Watch(job_id, next_n=after_n + 1, last_activity=loop.time())
        self._watches.setdefault(job_id, set()).add(watch)
        try:
            if job_id not in self._subscribed:
                self._subscribed.add(job_id)
                await self._subscribe(keys.job_channel(job_id))
            await self._catch_up(watch)
        except BaseException:
            await self._release(watch)
            raise
        return Subscription(self, watch)

    async def _release(self, watch: _Watch) -> None:
        self._drop(watch)
        # Unclaimed inbox watches of the job hear through the inbox, not the job's channel.
        remaining = self._watches.get(watch.job_id, ())
        if watch.job_id in self._subscribed and all(w.unclaimed for w in remaining):
            self._subscribed.discard(watch.job_id)
            await self._unsubscribe(keys.job_channel(watch.job_id))

    def _drop(self, watch: _Watch) -> None:
        group = self._watches.get(watch.job_id)
        if group is None:
            return
        group.discard(watch)
        if not group:
            del self._watches[watch.job_id]

    async def close(self) -> None:
        self._closed = True
        for task in list(self._background):
            task.cancel()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                await self._pubsub.aclose()
        self._pubsub = None

    # -- subscription -------------------------------------------------------------------------

    async def _ensure_reader(self) -> PubSub:
        if self._pubsub is None:
            self._pubsub = self._redis.pubsub()
        if self._reader is None or self._reader.done():
            self._reader = asyncio.create_task(self._read_forever(), name="l04-event-listener")
        return self._pubsub

    async def _subscribe(self, channel: str) -> None:
        """Subscribe and wait for the server's confirmation (concurrent callers share both)."""
        confirmed = self._confirmations.get(channel)
        creator = confirmed is None
        if confirmed is None:
            confirmed = asyncio.get_running_loop().create_future()
            self._confirmations[channel] = confirmed
            try:
                async with self._subscription_lock:
                    pubsub = await self._ensure_reader()
                    await pubsub.subscribe(channel)
                    self._wake.set()
            except (RuntimeError, *_CONNECTION_ERRORS):
                # The reader reconnects and the poll catches up; the stream read still runs.
                # (RuntimeError: redis-py reconnecting the pub/sub connection for this subscribe
                # while the reader waits on it, right after a Redis restart.)
                log.debug("subscribe to %s failed for now", channel)
                confirmed.set_result(None)  # whoever shares it goes on, unconfirmed
                del self._confirmations[channel]
                return
        try:
            # Reading the stream only after the server confirmed the subscription closes the gap
            # between "read the record" and "hear about new entries".
            await asyncio.wait_for(asyncio.shield(confirmed), timeout=5.0)
        except TimeoutError:
            log.debug("subscribe to %s not confirmed yet", channel)
        finally:
            if creator and self._confirmations.get(channel) is confirmed:
                del self._confirmations[channel]

    async def _unsubscribe(self, channel: str) -> None:
        if self._pubsub is None or self._closed:
            return
        # Best effort: a broken connection drops its subscriptions anyway, and redis-py can fail
        # in several ways on a connection the server has just closed.
        with contextlib.suppress(*_CONNECTION_ERRORS, AttributeError, RuntimeError):
            async with self._subscription_lock:
                pubsub = self._pubsub
                if pubsub is not None:  # close() may have run meanwhile
                    await pubsub.unsubscribe(channel)

    # -- delivery -----------------------------------------------------------------------------

    def _deliver(self, watch: _Watch, event: JobEvent) -> bool:
        """Deliver ``event`` if it is the next one; False when there is a gap before it."""
        if event.n < watch.next_n:
            if event.is_terminal and watch.ended_at is None:
                watch.ended_at = asyncio.get_running_loop().time()
                watch.queue.put_nowait(FEED_ENDED)
            return True
        if event.n > watch.next_n:
            return False
        watch.next_n = event.n + 1
        watch.last_id = event.stream_id
        now = asyncio.get_running_loop().time()
        watch.last_activity = now
        if event.is_terminal:
            watch.ended_at = now
        watch.queue.put_nowait(event)
        return True

    async def _catch_up(self, watch: _Watch) -> None:
        await self._catch_up_many([watch])

    async def _catch_up_many(self, watches: list[_Watch]) -> None:
        watches = [w for w in watches if not w.catching_up]
        for watch in watches:
            watch.catching_up = True
        try:
            found = await self._store.events_after_many([(w.job_id, w.last_id) for w in watches])
            now = asyncio.get_running_loop().time()
            for watch, events in zip(watches, found, strict=True):
                for event in events:
                    self._deliver(watch, event)
                watch.last_activity = now
        finally:
            for watch in watches:
                watch.catching_up = False

    def _spawn_catch_up(self, watches: list[_Watch]) -> None:
        for start in range(0, len(watches), _POLL_BATCH):
            task = asyncio.create_task(self._catch_up_quietly(watches[start : start + _POLL_BATCH]))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _catch_up_quietly(self, watches: list[_Watch]) -> None:
        with contextlib.suppress(*_CONNECTION_ERRORS):
            await self._catch_up_many(watches)

    def _on_message(self, message: dict[str, object]) -> None:
        kind = message.get("type")
        channel = _text(message.get("channel"))
        if kind == "subscribe":
            if channel == self.inbox:
                self._inbox_confirmed = True
            confirmed = self._confirmations.get(channel)
            if confirmed is not None and not confirmed.done():
                confirmed.set_result(None)
            return
        if kind != "message":
            return
        if channel == self.inbox:
            channel, event = parse_inbox_announcement(message.get("data"))
        else:
            event = parse_announcement(message.get("data"))
        job_id = _job_id_of(channel)
        if job_id is None:
            return
        behind = [w for w in self._watches.get(job_id, ()) if not self._deliver(w, event)]
        if behind:
            self._spawn_catch_up(behind)

    async def _read_forever(self) -> None:
        backoff = 0.05
        while not self._closed:
            pubsub = self._pubsub
            if pubsub is None:
                return
            try:
                if not pubsub.subscribed:
                    # Idle: wake at once when a subscription is made (its confirmation is
                    # what the subscriber waits for), else now and then for the idle poll.
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), timeout=0.05)
                    self._wake.clear()
                    self._poll_idle()
                    continue
                message = await pubsub.get_message(ignore_subscribe_messages=False, timeout=0.2)
                backoff = 0.05
                if message is not None:
                    self._on_message(message)
                self._poll_idle()
            except asyncio.CancelledError:
                raise
            except _CONNECTION_ERRORS:
                log.warning("lost the Redis pub/sub connection; reconnecting")
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                await self._reconnect()
            except Exception:
                # Never let the one reader die: every waiting caller depends on it.
                log.exception("event listener error; starting a fresh connection")
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 2.0)
                await self._reconnect()

    async def _reconnect(self) -> None:
        async with self._subscription_lock:
            await self._reconnect_locked()

    async def _reconnect_locked(self) -> None:
        old = self._pubsub
        self._pubsub = self._redis.pubsub()
        self._inbox_confirmed = False
        if old is not None:
            with contextlib.suppress(Exception):
                await old.aclose()
        channels = [self.inbox] + [keys.job_channel(job_id) for job_id in self._subscribed]
        try:
            await self._pubsub.subscribe(*channels)
        except _CONNECTION_ERRORS:
            return
        # Whatever was announced while the connection was down is in the streams.
        self._spawn_catch_up([w for group in self._watches.values() for w in group])

    def _poll_idle(self) -> None:
        """Now and then: re-read idle watches, and let go of answers no handle came for."""
        now = asyncio.get_running_loop().time()
        if now < self._next_poll:
            return
        self._next_poll = now + min(1.0, self._poll_interval / 4)
        idle = []
        for job_id, watch in list(self._by_inbox.items()):
            answered = watch.ended_at is not None and now - watch.ended_at >= _UNCLAIMED_GRACE_S
            if answered or now >= watch.give_up_at:
                del self._by_inbox[job_id]
                self._drop(watch)
        for group in self._watches.values():
            for watch in group:
                stale = now - watch.last_activity >= self._poll_interval
                if stale and watch.ended_at is None and not watch.catching_up:
                    watch.last_activity = now
                    idle.append(watch)
        if idle:
            self._spawn_catch_up(idle)


class Subscription:
    """One caller's view of one job's events. ``next`` is safe to time out and call again."""

    def __init__(self, listener: EventListener, watch: _Watch) -> None:
        self._listener = listener
        self._watch = watch

    async def next(self, timeout: float | None = None) -> JobEvent:
        """The next event; TimeoutError if none arrives within ``timeout`` seconds."""
        # asyncio.timeout, not wait_for, which can swallow a cancel on 3.11.
        async with asyncio.timeout(timeout):
            return await self._watch.queue.get()

    async def close(self) -> None:
        await self._listener._release(self._watch)

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _job_id_of(channel: str) -> str | None:
    start, end = channel.find("{"), channel.rfind("}")
    if start < 0 or end <= start:
        return None
    return channel[start + 1 : end]
