"""Lossless, in-order delivery of a job's events to the caller.

Redis pub/sub only reaches whoever listens at that instant, so it is used as a doorbell: each
announcement carries the event and its number ``n``. The job's stream is the record. For each job
being watched the listener remembers the next ``n`` it expects and the last stream id it saw:

* an announcement with the expected ``n`` is delivered at once (the fast path: one hop);
* a smaller ``n`` is a duplicate and is dropped;
* a larger ``n`` means something was missed, so the stream is read from the last id seen.

Subscribing happens before the first read of the stream, so an event written in between is caught
by one or the other. After a dropped connection the listener subscribes again and reads every
watched stream from its last id; an idle watch is also re-read every ``poll_interval`` seconds as
a last resort. One pub/sub connection serves every job a client waits on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway_client import keys
from gateway_client.job_store import JobEvent, JobStore, parse_announcement

log = logging.getLogger(__name__)

_CONNECTION_ERRORS = (RedisConnectionError, RedisTimeoutError, OSError)


@dataclass(eq=False)
class _Watch:
    job_id: str
    next_n: int = 0
    last_id: str = "0-0"
    queue: asyncio.Queue[JobEvent] = field(default_factory=asyncio.Queue)
    last_activity: float = 0.0
    catching_up: bool = False


class EventListener:
    def __init__(self, redis: Redis, store: JobStore, *, poll_interval: float = 1.0) -> None:
        self._redis = redis
        self._store = store
        self._poll_interval = poll_interval
        self._watches: dict[str, set[_Watch]] = {}
        self._pubsub: PubSub | None = None
        self._confirmations: dict[str, asyncio.Future[None]] = {}
        self._reader: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()  # set when a subscription is made
        self._background: set[asyncio.Task[None]] = set()
        # redis-py's PubSub connects lazily and unguarded: concurrent first subscribes would each
        # open a connection and all but one would be orphaned. Changes go through this lock.
        self._subscription_lock = asyncio.Lock()
        self._closed = False

    # -- public -------------------------------------------------------------------------------

    async def open(self, job_id: str, after_n: int = -1) -> Subscription:
        """Start watching ``job_id``: events with ``n > after_n`` arrive in order."""
        loop = asyncio.get_running_loop()
        watch = _Watch(job_id, next_n=after_n + 1, last_activity=loop.time())
        first = job_id not in self._watches
        self._watches.setdefault(job_id, set()).add(watch)
        try:
            if first:
                await self._subscribe(job_id)
            await self._catch_up(watch)
        except BaseException:
            await self._release(watch)
            raise
        return Subscription(self, watch)

    async def _release(self, watch: _Watch) -> None:
        group = self._watches.get(watch.job_id)
        if group is None:
            return
        group.discard(watch)
        if not group:
            del self._watches[watch.job_id]
            await self._unsubscribe(watch.job_id)

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

    async def _subscribe(self, job_id: str) -> None:
        channel = keys.job_channel(job_id)
        confirmed = asyncio.get_running_loop().create_future()
        self._confirmations[channel] = confirmed
        try:
            async with self._subscription_lock:
                pubsub = await self._ensure_reader()
                await pubsub.subscribe(channel)
                self._wake.set()
            # Reading the stream only after the server confirmed the subscription closes the gap
            # between "read the record" and "hear about new entries".
            await asyncio.wait_for(asyncio.shield(confirmed), timeout=5.0)
        except (TimeoutError, RuntimeError, *_CONNECTION_ERRORS):
            # The reader reconnects and the poll catches up; the stream read below still runs.
            # (RuntimeError: redis-py reconnecting the pub/sub connection for this subscribe
            # while the reader waits on it, right after a Redis restart.)
            log.debug("subscribe to %s not confirmed yet", channel)
        finally:
            self._confirmations.pop(channel, None)

    async def _unsubscribe(self, job_id: str) -> None:
        if self._pubsub is None or self._closed:
            return
        # Best effort: a broken connection drops its subscriptions anyway, and redis-py can fail
        # in several ways on a connection the server has just closed.
        with contextlib.suppress(*_CONNECTION_ERRORS, AttributeError, RuntimeError):
            async with self._subscription_lock:
                pubsub = self._pubsub
                if pubsub is not None:  # close() may have run meanwhile
                    await pubsub.unsubscribe(keys.job_channel(job_id))

    # -- delivery -----------------------------------------------------------------------------

    def _deliver(self, watch: _Watch, event: JobEvent) -> bool:
        """Deliver ``event`` if it is the next one; False when there is a gap before it."""
        if event.n < watch.next_n:
            return True
        if event.n > watch.next_n:
            return False
        watch.next_n = event.n + 1
        watch.last_id = event.stream_id
        watch.last_activity = asyncio.get_running_loop().time()
        watch.queue.put_nowait(event)
        return True

    async def _catch_up(self, watch: _Watch) -> None:
        if watch.catching_up:
            return
        watch.catching_up = True
        try:
            for event in await self._store.events_after(watch.job_id, watch.last_id):
                self._deliver(watch, event)
            watch.last_activity = asyncio.get_running_loop().time()
        finally:
            watch.catching_up = False

    def _spawn_catch_up(self, watch: _Watch) -> None:
        task = asyncio.create_task(self._catch_up_quietly(watch))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _catch_up_quietly(self, watch: _Watch) -> None:
        with contextlib.suppress(*_CONNECTION_ERRORS):
            await self._catch_up(watch)

    def _on_message(self, message: dict[str, object]) -> None:
        kind = message.get("type")
        channel = message.get("channel")
        channel = channel.decode() if isinstance(channel, bytes) else str(channel)
        if kind == "subscribe":
            confirmed = self._confirmations.get(channel)
            if confirmed is not None and not confirmed.done():
                confirmed.set_result(None)
            return
        if kind != "message":
            return
        job_id = _job_id_of(channel)
        if job_id is None:
            return
        event = parse_announcement(message.get("data"))
        for watch in list(self._watches.get(job_id, ())):
            if not self._deliver(watch, event):
                self._spawn_catch_up(watch)

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
        if old is not None:
            with contextlib.suppress(Exception):
                await old.aclose()
        channels = [keys.job_channel(job_id) for job_id in self._watches]
        try:
            if channels:
                await self._pubsub.subscribe(*channels)
        except _CONNECTION_ERRORS:
            return
        # Whatever was announced while the connection was down is in the streams.
        for group in list(self._watches.values()):
            for watch in list(group):
                self._spawn_catch_up(watch)

    def _poll_idle(self) -> None:
        now = asyncio.get_running_loop().time()
        for group in list(self._watches.values()):
            for watch in list(group):
                if now - watch.last_activity >= self._poll_interval and not watch.catching_up:
                    watch.last_activity = now
                    self._spawn_catch_up(watch)


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


def _job_id_of(channel: str) -> str | None:
    start, end = channel.find("{"), channel.rfind("}")
    if start < 0 or end <= start:
        return None
    return channel[start + 1 : end]
