"""Delivers webhook events from the Redis outbox, at least once, without slowing a job.

Every worker process runs one :class:`WebhookDeliverer` (like the L01 shipper): delivery goes on
whatever HTTP servers exist, and as many deliverers run as workers do. The outbox
(``keys.WEBHOOK_OUTBOX``, :mod:`gateway_core.webhooks`) is a sorted set of deliveries scored by
when each is due. A deliverer takes the due ones under a lease (``webhook_claim.lua``: their
score moves a lease ahead), posts each in its own task (at most :data:`CONCURRENCY` at once, each
attempt bounded by ``L04_WEBHOOK_TIMEOUT``, so a slow receiver holds one slot, never the others),
then settles it (``webhook_settle.lua``): gone when delivered (2xx), else a retry due after a
capped, jittered exponential backoff, until ``L04_WEBHOOK_RETRY_HOURS`` after the event, when it
is dropped with a log line and ``l04_webhook_deliveries_total{outcome="dropped"}``. A deliverer
that dies holding a delivery leaves it to whichever deliverer takes it when its lease lapses.

Why a sorted set and not the L01 shipper's stream: each delivery has its own retry time for up
to 72 hours, and a receiver that is down must not hold up another's events; a stream's consumer
group retries its pending entries in order, the head blocking the rest.

An event first goes to every target there is: ``L04_WEBHOOK_URL`` (all events) and the webhook of
the virtual key the object was made with (``l04 keys create --webhook-url``); a target that fails
gets its own retry, the others are done. Every attempt carries the event's id as ``webhook-id``
and is signed afresh with its own ``webhook-timestamp``. Secrets and URLs are never logged.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from typing import Any

import httpx
from redis.asyncio import Redis

from config.settings import GatewaySettings
from gateway_core import keys, metrics
from gateway_core.lua_scripts import register
from gateway_core.virtual_keys import VirtualKeyStore
from gateway_core.webhooks import signed_headers

log = logging.getLogger(__name__)

#: Deliveries in flight per worker process.
CONCURRENCY = 32
#: A taken delivery is due again this long after its attempt's timeout (its deliverer died).
LEASE_MARGIN_S = 5.0
#: The longest wait between two attempts of one delivery.
BACKOFF_MAX_S = 3600.0
#: The longest an idle deliverer waits before it looks at the outbox again (new events ring the
#: bell and wake it at once; retries falling due do not).
IDLE_WAIT_S = 1.0

GLOBAL = "g"  # a delivery's target: L04_WEBHOOK_URL
KEY = "k"  # a delivery's target: its virtual key's own webhook


def backoff_s(attempts: int, base_s: float) -> float:
    """The wait before the next attempt after ``attempts`` failed ones: ``base_s`` doubling,
    capped at :data:`BACKOFF_MAX_S`, times a random factor in [0.5, 1) (jitter, so that the
    retries of an outage do not all arrive at once)."""
    plain = min(BACKOFF_MAX_S, base_s * 2 ** min(attempts - 1, 40))
    return plain * (0.5 + random.random() / 2)


class WebhookDeliverer:
    def __init__(self, redis: Redis, settings: GatewaySettings) -> None:
        self._redis = redis
        self._keys = VirtualKeyStore(redis, typed_errors=False)
        secret = settings.webhook_secret
        self._global = (
            (settings.webhook_url, secret.get_secret_value())
            if settings.webhook_url is not None and secret is not None
            else None
        )
        self._retry_ms = settings.webhook_retry_hours * 3_600_000
        self._backoff_s = settings.webhook_backoff_s
        self._lease_ms = int((settings.webhook_timeout + LEASE_MARGIN_S) * 1000)
        self._client = httpx.AsyncClient(timeout=settings.webhook_timeout, follow_redirects=False)
        self._claim = register(redis, "workers", "webhook_claim")
        self._settle = register(redis, "workers", "webhook_settle")
        self._tasks: set[asyncio.Task[None]] = set()

    async def deliver_once(self) -> int:
        """Take the due deliveries there is room for and start each; wait a little when there
        are none. Returns how many were started."""
        free = CONCURRENCY - len(self._tasks)
        if free <= 0:
            await asyncio.wait(self._tasks, timeout=IDLE_WAIT_S, return_when="FIRST_COMPLETED")
            return 0
        raw: Any = await self._claim(keys=[keys.WEBHOOK_OUTBOX], args=[free, self._lease_ms])
        next_due_ms = int(raw[0])
        for member in raw[1:]:
            task = asyncio.create_task(self._deliver(_text(member)))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        if len(raw) > 1:
            return len(raw) - 1
        metrics.WEBHOOK_OUTBOX_PENDING.set(await self._redis.zcard(keys.WEBHOOK_OUTBOX))
        wait = IDLE_WAIT_S if next_due_ms < 0 else min(IDLE_WAIT_S, next_due_ms / 1000)
        if wait > 0:
            await self._redis.brpop([keys.WEBHOOK_BELL], timeout=max(0.01, wait))
        return 0

    async def _deliver(self, member: str) -> None:
        try:
            await self._deliver_member(member)
        except Exception as exc:  # its lease lapses and it is tried again
            log.warning("webhook delivery failed: %s", type(exc).__name__)

    async def _deliver_member(self, member: str) -> None:
        try:
            delivery = json.loads(member)
            body: str = delivery["e"]
            event = json.loads(body)
            event_type = str(event["type"])
        except (ValueError, KeyError, TypeError):  # not ours: never retried, never a crash
            log.error("webhook outbox: a delivery that is no event; dropped")
            metrics.WEBHOOK_DELIVERIES.labels("unknown", "dropped").inc()
            await self._settle(keys=[keys.WEBHOOK_OUTBOX, keys.WEBHOOK_BELL], args=[member])
            return
        key_id = str(delivery.get("k") or "")
        if "t" in delivery:
            targets = [str(delivery["t"])]
        else:  # a new event: every target there is
            targets = [GLOBAL] if self._global is not None else []
            if key_id and await self._keys.webhook(key_id) is not None:
                targets.append(KEY)
        outcomes = await asyncio.gather(
            *(self._attempt(target, key_id, str(event.get("id", "")), body) for target in targets)
        )
        attempts = int(delivery.get("n", 0)) + 1
        expired = time.time() * 1000 - float(delivery.get("f", 0)) >= self._retry_ms
        left: list[str] = []
        for target, outcome in zip(targets, outcomes, strict=True):
            if outcome == "retry" and expired:
                outcome = "dropped"
                log.error(
                    "webhook %s %s to %s: no 2xx in %d attempts over L04_WEBHOOK_RETRY_HOURS; "
                    "dropped",
                    event_type,
                    event.get("id"),
                    _where(target, key_id),
                    attempts,
                )
            metrics.WEBHOOK_DELIVERIES.labels(event_type, outcome).inc()
            if outcome == "retry":
                wait_ms = round(backoff_s(attempts, self._backoff_s) * 1000)
                left += [str(wait_ms), json.dumps({**delivery, "t": target, "n": attempts})]
        if not targets:
            metrics.WEBHOOK_DELIVERIES.labels(event_type, "dropped").inc()
            log.debug("webhook %s: no URL to send it to", event_type)
        await self._settle(keys=[keys.WEBHOOK_OUTBOX, keys.WEBHOOK_BELL], args=[member, *left])

    async def _attempt(self, target: str, key_id: str, webhook_id: str, body: str) -> str:
        """One signed POST: ``delivered`` (2xx), ``retry``, or ``dropped`` (the key's webhook
        is gone, or the global URL is no longer configured)."""
        where: tuple[str, str] | None
        where = self._global if target == GLOBAL else await self._keys.webhook(key_id)
        if where is None:
            log.warning("webhook %s to %s: no such target any more; dropped", webhook_id, target)
            return "dropped"
        url, secret = where
        headers = signed_headers(secret, webhook_id, int(time.time()), body)
        try:
            async with self._client.stream("POST", url, content=body, headers=headers) as answer:
                status = answer.status_code
        except Exception as exc:  # httpx.HTTPError, and InvalidURL, idna.IDNAError...
            # Any failure of the attempt is a retry: an attempt that raised was never settled
            # and came back every lease, forever, and took the other target's outcome with it.
            log.info(
                "webhook %s to %s: %s; retried later",
                webhook_id,
                _where(target, key_id),
                type(exc).__name__,
            )
            return "retry"
        if 200 <= status < 300:
            return "delivered"
        log.info(
            "webhook %s to %s: HTTP %d; retried later", webhook_id, _where(target, key_id), status
        )
        return "retry"

    async def run_forever(self) -> None:
        while True:
            try:
                await self.deliver_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("webhook outbox unreadable: %s", type(exc).__name__)
                await asyncio.sleep(IDLE_WAIT_S)

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await self._client.aclose()


def _where(target: str, key_id: str) -> str:
    """A target as logs name it: never its URL (it may carry a token), never its secret."""
    return "L04_WEBHOOK_URL" if target == GLOBAL else f"the webhook of key {key_id}"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
