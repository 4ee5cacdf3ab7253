"""Strict sliding-window rate limits, decided atomically in Redis on the server's clock.

A token bucket whose capacity is a whole minute's limit can admit twice the limit within one
sliding minute (a full bucket spent at the end of one minute, refilled and spent again at the
start of the next): that is how gateways earn provider 429s. Here each limit keeps counts in
``window / buckets`` sub-buckets, and a decision counts every sub-bucket that overlaps the
sliding window, the oldest one whole. Counting whole buckets can only overcount, so **no sliding
window ever holds more than the limit**; in exchange, at saturation at least ``buckets /
(buckets + 1)`` of the limit is used (60/61, 98%, with the defaults).

One decision checks every limit it is given (requests per minute and tokens per minute, per
model and per agent) and takes from none unless all have room. When one is short, it returns
how long until enough of the window has slid by: callers wait exactly that long, not a guess.

The decision is ``workers/lua/rate_limit_admit.lua``, the settlement ``rate_limit_settle.lua``.
Tokens are reserved up front (prompt tokens + max_tokens) and settled with the real usage once
the provider answered (:meth:`RateLimiter.settle`), in the sub-bucket the reservation went to.

Keys share the hash tag of the model they limit (``l04:rl:{provider:model}:...``); per-agent
limits are therefore per agent and model. A virtual key's limits count across all models, under
the key's own tag (``l04:rl:{key:<id>}:...``), so a decision may touch two slots: Redis Cluster
is not supported (see the README).
"""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis

from gateway_core.lua_scripts import register


@dataclass(frozen=True, slots=True)
class Limit:
    """``capacity`` units per window on ``key``; ``amount`` is what this decision takes.

    A ``shared`` limit (a model's, which every agent's jobs compete for) is taken in the order of
    the waiting room; ``kind`` says whether it counts requests ("r") or tokens ("t").
    """

    key: str
    capacity: int
    amount: int
    shared: bool = False
    kind: str = "r"


@dataclass(frozen=True, slots=True)
class Waiter:
    """Who asks, for the waiting room: the job, its priority band (0 first) and its agent."""

    room: str  # key prefix of the room (see :func:`gateway_core.keys.waiting_room`)
    job_id: str
    band: int
    agent: str
    join: bool = True  # False: fail fast, never wait in the room
    deadline_ms: int = 0  # a wait that ends after this is not taken (0: no deadline)


@dataclass(frozen=True, slots=True)
class Decision:
    admitted: bool
    server_time_ms: int
    bucket: int = 0  # where the amounts were recorded (for settle)
    wait_ms: int = 0  # when refused: how long until there is room for this job
    short: str = ""  # when refused: the key of the limit that had no room
    never: bool = False  # the amount exceeds the limit's whole capacity
    waiting: bool = False  # when refused: the job holds its place in the waiting room


class RateLimiter:
    def __init__(self, redis: Redis, window_s: float = 60.0, buckets: int = 60) -> None:
        self._redis = redis
        self.window_ms = int(window_s * 1000)
        self.bucket_ms = max(1, self.window_ms // buckets)
        self._admit = register(redis, "workers", "rate_limit_admit")
        self._settle = register(redis, "workers", "rate_limit_settle")

    async def admit(self, limits: list[Limit], waiter: Waiter | None = None) -> Decision:
        """One decision over every limit; with a ``waiter``, in the order of the waiting room."""
        keys = [limit.key for limit in limits]
        args: list[int | str] = [self.window_ms, self.bucket_ms, len(limits)]
        if waiter is None:
            args += ["", 0, "", 0, 0, 0]
        else:
            keys += [f"{waiter.room}:order", f"{waiter.room}:due", f"{waiter.room}:meta"]
            args += [
                waiter.job_id,
                waiter.band,
                waiter.agent,
                int(waiter.join),
                waiter.deadline_ms,
                self.window_ms,
            ]
        for limit in limits:
            args += [limit.capacity, limit.amount, int(limit.shared), limit.kind]
        raw = await self._admit(keys=keys, args=args)
        if int(raw[0]) == 1:
            return Decision(True, int(raw[1]), bucket=int(raw[2]))
        wait, index = int(raw[2]), int(raw[3]) - 1
        return Decision(
            False,
            int(raw[1]),
            wait_ms=max(wait, 0),
            short=limits[index].key,
            never=wait < 0,
            waiting=int(raw[4]) == 1,
        )

    async def settle(self, keys: list[str], bucket: int, reserved: int, used: int) -> None:
        """Replace a token reservation by the tokens really used."""
        if keys and used != reserved:
            await self._settle(keys=keys, args=[bucket, used - reserved])
