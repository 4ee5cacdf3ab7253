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

Tokens are reserved up front (prompt tokens + max_tokens) and settled with the real usage once
the provider answered (:meth:`RateLimiter.settle`), in the sub-bucket the reservation went to.

Keys share the hash tag of the model they limit (``l04:rl:{provider:model}:...``), so all the
keys of one decision live in one Redis Cluster slot; per-agent limits are therefore per agent
and model.
"""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis

# KEYS: one hash per limit. ARGV: window_ms, bucket_ms, then per limit: capacity, amount.
# Returns {1, now_ms, bucket} when admitted, {0, now_ms, wait_ms, index of the short limit}.
_ADMIT = """
local window, bucket_ms = tonumber(ARGV[1]), tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local current = math.floor(now / bucket_ms)
local oldest = math.floor((now - window) / bucket_ms)
local totals, counts = {}, {}
for i, key in ipairs(KEYS) do
  local flat = redis.call('HGETALL', key)
  local total, live = 0, {}
  for j = 1, #flat, 2 do
    local b, n = tonumber(flat[j]), tonumber(flat[j + 1])
    if b < oldest then
      redis.call('HDEL', key, flat[j])
    else
      total = total + n
      live[#live + 1] = {b, n}
    end
  end
  totals[i], counts[i] = total, live
end
for i = 1, #KEYS do
  local capacity, amount = tonumber(ARGV[1 + 2 * i]), tonumber(ARGV[2 + 2 * i])
  if amount > capacity then return {0, now, -1, i} end
  local excess = totals[i] + amount - capacity
  if excess > 0 then
    -- Wait until the oldest buckets holding at least `excess` have left the window.
    table.sort(counts[i], function(a, b) return a[1] < b[1] end)
    local freed = 0
    for _, entry in ipairs(counts[i]) do
      freed = freed + entry[2]
      if freed >= excess then
        local leaves_at = (entry[1] + 1) * bucket_ms + window
        return {0, now, math.max(1, leaves_at - now), i}
      end
    end
    return {0, now, window, i}
  end
end
for i, key in ipairs(KEYS) do
  local amount = tonumber(ARGV[2 + 2 * i])
  if amount > 0 then redis.call('HINCRBY', key, current, amount) end
  redis.call('PEXPIRE', key, window + 2 * bucket_ms)
end
return {1, now, current}
"""

# KEYS: the token-limit hashes of the reservation. ARGV: bucket, delta.
_SETTLE = """
for _, key in ipairs(KEYS) do
  if redis.call('HEXISTS', key, ARGV[1]) == 1 then
    local left = redis.call('HINCRBY', key, ARGV[1], ARGV[2])
    if left <= 0 then redis.call('HDEL', key, ARGV[1]) end
  end
end
return 1
"""


@dataclass(frozen=True, slots=True)
class Limit:
    """``capacity`` units per window on ``key``; ``amount`` is what this decision takes."""

    key: str
    capacity: int
    amount: int


@dataclass(frozen=True, slots=True)
class Decision:
    admitted: bool
    server_time_ms: int
    bucket: int = 0  # where the amounts were recorded (for settle)
    wait_ms: int = 0  # when refused: how long until there is room
    short: str = ""  # when refused: the key of the limit that had no room
    never: bool = False  # the amount exceeds the limit's whole capacity


class RateLimiter:
    def __init__(self, redis: Redis, window_s: float = 60.0, buckets: int = 60) -> None:
        self._redis = redis
        self.window_ms = int(window_s * 1000)
        self.bucket_ms = max(1, self.window_ms // buckets)
        self._admit = redis.register_script(_ADMIT)
        self._settle = redis.register_script(_SETTLE)

    async def admit(self, limits: list[Limit]) -> Decision:
        args: list[int] = [self.window_ms, self.bucket_ms]
        for limit in limits:
            args += [limit.capacity, limit.amount]
        raw = await self._admit(keys=[limit.key for limit in limits], args=args)
        if int(raw[0]) == 1:
            return Decision(True, int(raw[1]), bucket=int(raw[2]))
        wait, index = int(raw[2]), int(raw[3]) - 1
        return Decision(
            False, int(raw[1]), wait_ms=max(wait, 0), short=limits[index].key, never=wait < 0
        )

    async def settle(self, keys: list[str], bucket: int, reserved: int, used: int) -> None:
        """Replace a token reservation by the tokens really used."""
        if keys and used != reserved:
            await self._settle(keys=keys, args=[bucket, used - reserved])
