"""Quotas in tokens and in cost, per period, kept in Redis for the whole fleet: an agent's (from
the catalog) and a virtual key's (its ``token_quota`` / ``cost_quota``), each under its owner
(the agent's DID, or ``key:<id>``: :func:`gateway_core.keys.key_scope`).

A quota is a budget, not a rate: once spent it stays spent until its period ends, so a job over
it fails at once with E4402 instead of waiting. Like tokens per minute, a job reserves its
estimate (prompt tokens + max_tokens, and their price) before the call and settles with the real
usage after it, so concurrent jobs cannot overspend together. Cost is kept in micro-USD (integers
are exact in Redis). Periods are aligned to the epoch on the server's clock: a daily quota resets
at 00:00 UTC.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from redis.asyncio import Redis

from gateway_core import keys
from gateway_core.lua_scripts import register

MICRO = 1_000_000


@dataclass(frozen=True, slots=True)
class QuotaRefusal:
    which: str  # "tokens" or "cost"
    used: float
    quota: float
    resets_in_s: int


@dataclass(frozen=True, slots=True)
class QuotaReservation:
    key: str
    tokens: int
    micro_usd: int


class Quotas:
    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._reserve = register(redis, "workers", "quota_reserve")

    async def reserve(
        self,
        owner: str,
        period_s: int,
        token_quota: int | None,
        cost_quota: float | None,
        tokens: int,
        cost: float,
    ) -> QuotaReservation | QuotaRefusal:
        micro = round(cost * MICRO)
        period = int(time.time() // period_s)
        for _ in range(3):
            raw = await self._reserve(
                keys=[keys.quota(owner, period)],
                args=[
                    period,
                    period_s,
                    token_quota or 0,
                    round((cost_quota or 0) * MICRO),
                    tokens,
                    micro,
                ],
            )
            if int(raw[0]) != -1:
                break
            period = int(raw[1])  # the server's clock decides the period
        if int(raw[0]) == 1:
            return QuotaReservation(keys.quota(owner, int(raw[1])), tokens, micro)
        which = raw[1].decode() if isinstance(raw[1], bytes) else str(raw[1])
        scale = MICRO if which == "cost" else 1
        return QuotaRefusal(which, int(raw[2]) / scale, int(raw[3]) / scale, int(raw[4]))

    async def settle(self, reservation: QuotaReservation, tokens: int, cost: float) -> None:
        """Replace the reservation by what the call really used (0 when it failed)."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hincrby(reservation.key, "tokens", tokens - reservation.tokens)
            pipe.hincrby(reservation.key, "micro_usd", round(cost * MICRO) - reservation.micro_usd)
            await pipe.execute()
