"""Delivers usage events from the Redis outbox to L01, at least once, without slowing a job.

A worker appends each answer's ``inference_completed`` event to the stream ``l04:usage`` (the
outbox); every worker process runs this shipper, one consumer of the group ``l01``. An event is
acknowledged only after L01 answered 2xx, so an L01 outage loses nothing: events wait in the
outbox (a durable Redis stream) and go out when L01 is back, with a backoff meanwhile. Events a
dead worker had read but not delivered are claimed by another after ``RECLAIM_IDLE_MS``. Each
event carries ``event_id`` (and the ``Idempotency-Key`` header): a redelivered event has the same
id, so L01 can drop the duplicate.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import httpx
from redis.asyncio import Redis
from redis.exceptions import ResponseError

from config.settings import GatewaySettings
from gateway_core import keys

log = logging.getLogger(__name__)

GROUP = "l01"
BATCH = 50
RECLAIM_IDLE_MS = 30_000
BACKOFF_START_S = 0.5
BACKOFF_MAX_S = 30.0
# L01's answers that no retry can change: the event is dropped (and logged). Auth errors and 404
# are not among them: they are configuration, fixed by an operator, and the events wait.
REJECTED = frozenset({400, 413, 422})


class L01Shipper:
    def __init__(self, redis: Redis, settings: GatewaySettings, consumer: str) -> None:
        self._redis = redis
        self._consumer = consumer
        self._url = settings.l01_base_url.rstrip("/") + settings.l01_events_path
        headers = {"Content-Type": "application/json"}
        if settings.l01_api_key is not None:
            key = settings.l01_api_key.get_secret_value()
            headers["Authorization"] = f"Bearer {key}"
            headers["X-API-Key"] = key
        self._client = httpx.AsyncClient(headers=headers, timeout=10.0)

    async def _ensure_group(self) -> None:
        try:
            await self._redis.xgroup_create(keys.USAGE_OUTBOX, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def ship_once(self, block_ms: int = 1000) -> int:
        """Deliver one batch: events left by dead consumers first, then new ones."""
        claimed: Any = await self._redis.xautoclaim(
            keys.USAGE_OUTBOX, GROUP, self._consumer, RECLAIM_IDLE_MS, "0-0", count=BATCH
        )
        entries = [(i, f) for i, f in claimed[1] if f]
        if not entries:
            fresh: Any = await self._redis.xreadgroup(
                GROUP, self._consumer, {keys.USAGE_OUTBOX: ">"}, count=BATCH, block=block_ms
            )
            entries = fresh[0][1] if fresh else []
        if not entries:
            return 0
        pending = await self._deliver(entries)
        # While L01 fails, the rest stay pending for this consumer: retry them with a backoff
        # (new events wait in the outbox meanwhile, in order behind them).
        backoff = BACKOFF_START_S
        while pending:
            log.warning("L01 unreachable: %d usage events wait in the outbox", len(pending))
            await asyncio.sleep(backoff)
            backoff = min(BACKOFF_MAX_S, backoff * 2)
            pending = await self._deliver(pending)
        return len(entries)

    async def _deliver(self, entries: list[Any]) -> list[Any]:
        """Post every entry; acknowledge and delete the delivered ones; return the others."""
        delivered = await asyncio.gather(*(self._post(fields) for _, fields in entries))
        done = [entry_id for (entry_id, _), ok in zip(entries, delivered, strict=True) if ok]
        if done:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.xack(keys.USAGE_OUTBOX, GROUP, *done)
                pipe.xdel(keys.USAGE_OUTBOX, *done)
                await pipe.execute()
        return [entry for entry, ok in zip(entries, delivered, strict=True) if not ok]

    async def _post(self, fields: dict[Any, Any]) -> bool:
        raw = fields.get(b"e") or fields.get("e")
        body = raw.decode() if isinstance(raw, bytes) else str(raw)
        event_id = json.loads(body).get("event_id", "")
        try:
            response = await self._client.post(
                self._url, content=body, headers={"Idempotency-Key": event_id}
            )
        except httpx.HTTPError as exc:
            log.debug("L01 post failed: %s", type(exc).__name__)
            return False
        if response.status_code == 409:  # L01 already has this event
            return True
        if response.status_code in REJECTED:
            log.error("L01 rejected usage event %s (%d): dropped", event_id, response.status_code)
            return True
        return response.is_success

    async def run_forever(self) -> None:
        while True:
            try:
                await self._ensure_group()
                break
            except Exception as exc:
                log.warning("usage outbox not ready: %s", type(exc).__name__)
                await asyncio.sleep(1.0)
        while True:
            try:
                await self.ship_once()
            except asyncio.CancelledError:
                raise
            except ResponseError as exc:
                if "NOGROUP" in str(exc):  # the outbox expired and came back: a new group
                    await self._ensure_group()
                    continue
                log.warning("shipping usage events failed: %s", type(exc).__name__)
                await asyncio.sleep(1.0)
            except Exception as exc:
                log.warning("shipping usage events failed: %s", type(exc).__name__)
                await asyncio.sleep(1.0)

    async def aclose(self) -> None:
        await self._client.aclose()
