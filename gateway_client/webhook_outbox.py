"""Adds webhook events to the outbox from outside a job's transitions: a batch's end.

A job's events are added by the Lua script that ends it (``gateway_core/lua/webhook.lua``, via
the job's ``notify`` field); this is the same helper for anything else, one script per event.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from gateway_core.lua_scripts import register
from gateway_core.webhooks import EVENT_TYPES


class WebhookOutbox:
    """Adds events to the outbox outside a job's transitions (a batch's end).

    :meth:`add` is one Lua script; a status change that must be atomic with its event does it
    in its own script by including ``gateway_core/lua/webhook.lua`` (``-- include: webhook``,
    after ``-- include: clock``) and calling ``webhook_enqueue(type, object_id, key_id)``.
    """

    def __init__(self, redis: Redis) -> None:
        self._add = register(redis, "gateway_client", "webhook_add")

    async def add(
        self, event_type: str, object_id: str, key_id: str | None = None, *, client: Any = None
    ) -> None:
        """Add one event. ``client``: a pipeline (``transaction=True``) to queue it in, so that
        it runs in the same MULTI as the change that causes it."""
        if event_type not in EVENT_TYPES:
            raise ValueError(f"{event_type!r} is not a webhook event type")
        if not object_id:
            raise ValueError("an event needs its object's id")
        await self._add(keys=[], args=[event_type, object_id, key_id or ""], client=client)
