"""Bookkeeping writes gathered over a short interval and sent to Redis in one go.

Per-job counters and averages (cache statistics, measured latencies) do not need to reach Redis
within the job: sending them a fraction of a second later, many jobs' worth per round trip, takes
a Redis call off every job's path. A failed flush is logged and dropped; it is bookkeeping.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")


class Coalescer(Generic[T]):
    def __init__(self, flush: Callable[[list[T]], Awaitable[None]], interval_s: float) -> None:
        self._flush = flush
        self._interval_s = interval_s
        self._items: list[T] = []
        self._timer: asyncio.Task[None] | None = None

    def add(self, item: T) -> None:
        """Queue ``item``; called on the event loop. It is flushed within ``interval_s``."""
        self._items.append(item)
        if self._timer is None:
            self._timer = asyncio.create_task(self._flush_later())

    async def _flush_later(self) -> None:
        await asyncio.sleep(self._interval_s)
        self._timer = None
        await self._send()

    async def _send(self) -> None:
        items, self._items = self._items, []
        if not items:
            return
        try:
            await self._flush(items)
        except Exception as exc:
            log.warning("bookkeeping of %d items not written: %s", len(items), type(exc).__name__)

    async def aclose(self) -> None:
        """Flush what is queued now (at shutdown)."""
        if self._timer is not None:
            self._timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._timer
            self._timer = None
        await self._send()
