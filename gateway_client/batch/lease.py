"""Who drives an HTTP batch: a lease in Redis (``SET NX PX`` with a token, renewed by its holder).

One holder at a time; a holder that dies stops renewing, the lease lapses after one period and
another server takes it. Renewing or releasing checks the token (Lua ``batch_lease_keep``), so a
holder that lost its lease (paused past the period) finds out instead of renewing another's.
"""

from __future__ import annotations

import uuid

from redis.asyncio import Redis

from gateway_core import keys
from gateway_core.lua_scripts import register


class BatchLease:
    def __init__(self, redis: Redis, batch_id: str, period_s: float) -> None:
        self.redis = redis
        self.batch_id = batch_id
        self.period_ms = max(1, int(period_s * 1000))
        self.token = uuid.uuid4().hex
        self._keep = register(redis, "gateway_client", "batch_lease_keep")

    @property
    def key(self) -> str:
        return keys.batch_lease(self.batch_id)

    async def take(self) -> bool:
        """True if this lease is now this holder's (nobody held it)."""
        return bool(await self.redis.set(self.key, self.token, nx=True, px=self.period_ms))

    async def renew(self) -> bool:
        """True if still held (and renewed for a period); False: another holder may drive."""
        return int(await self._keep(keys=[self.key], args=[self.token, self.period_ms])) == 1

    async def release(self) -> bool:
        return int(await self._keep(keys=[self.key], args=[self.token, 0])) == 1
