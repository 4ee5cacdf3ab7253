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

# KEYS: one hash per limit, then (optionally) the waiting room: order zset, due zset, hash.
# ARGV: window_ms, bucket_ms, number of limits, job id, priority band, agent, join (0/1),
# deadline_ms (0: none), slack_ms, then per limit: capacity, amount, shared (0/1), kind (r/t).
# Returns {1, now_ms, bucket} when admitted; {0, now_ms, wait_ms, index of the short limit, joined}
# when refused (wait_ms -1: the amount exceeds the limit's whole capacity).
_ADMIT = """
local window, bucket_ms, n = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local job, band, agent = ARGV[4], tonumber(ARGV[5]), ARGV[6]
local join, deadline, slack = ARGV[7] == '1', tonumber(ARGV[8]), tonumber(ARGV[9])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local current = math.floor(now / bucket_ms)
local oldest = math.floor((now - window) / bucket_ms)
local BAND = 1099511627776
local room = #KEYS > n
local R, D, H = KEYS[n + 1], KEYS[n + 2], KEYS[n + 3]
local cap, amt, shared, kind = {}, {}, {}, {}
for i = 1, n do
  local base = 9 + 4 * (i - 1)
  cap[i], amt[i] = tonumber(ARGV[base + 1]), tonumber(ARGV[base + 2])
  shared[i], kind[i] = ARGV[base + 3] == '1', ARGV[base + 4]
end
-- The waiting room: who waits ahead of this job for the shared limits.
local myscore, mytag, inroom, mytokens = nil, nil, false, 0
for i = 1, n do if shared[i] and kind[i] == 't' then mytokens = amt[i] end end
if room then
  for _, w in ipairs(redis.call('ZRANGEBYSCORE', D, '-inf', now)) do
    redis.call('ZREM', R, w)
    redis.call('ZREM', D, w)
    redis.call('HDEL', H, 'k:' .. w)
  end
  local s = redis.call('ZSCORE', R, job)
  if s then
    myscore, inroom = tonumber(s), true
    mytag = myscore % BAND
  else
    local v = tonumber(redis.call('HGET', H, 'v') or '0')
    local last = tonumber(redis.call('HGET', H, 'a:' .. agent) or '0')
    mytag = math.max(v, last) + 1
    myscore = band * BAND + mytag
  end
end
local ahead_n, ahead_t = 0, 0
if room then
  local need_r, need_t = 0, 0
  for i = 1, n do
    if shared[i] and kind[i] == 'r' then need_r = math.max(need_r, cap[i]) end
    if shared[i] and kind[i] == 't' then need_t = math.max(need_t, cap[i]) end
  end
  local offset = 0
  while (need_r > 0 and ahead_n < need_r) or (need_t > 0 and ahead_t < need_t) do
    local batch = redis.call('ZRANGEBYSCORE', R, '-inf', '(' .. myscore, 'LIMIT', offset, 200)
    if #batch == 0 then break end
    for _, w in ipairs(batch) do
      ahead_n = ahead_n + 1
      ahead_t = ahead_t + tonumber(redis.call('HGET', H, 'k:' .. w) or '0')
    end
    offset = offset + #batch
  end
end
local totals, counts = {}, {}
for i = 1, n do
  local flat = redis.call('HGETALL', KEYS[i])
  local total, live = 0, {}
  for j = 1, #flat, 2 do
    local b, c = tonumber(flat[j]), tonumber(flat[j + 1])
    if b < oldest then
      redis.call('HDEL', KEYS[i], flat[j])
    else
      total = total + c
      live[#live + 1] = {b, c}
    end
  end
  totals[i], counts[i] = total, live
end
local refused, wait = nil, 0
for i = 1, n do
  if amt[i] > cap[i] then
    refused, wait = i, -1
    break
  end
  local ahead = 0
  if shared[i] then ahead = (kind[i] == 'r') and ahead_n or ahead_t end
  local excess = totals[i] + ahead + amt[i] - cap[i]
  if excess > 0 then
    -- Wait until the oldest buckets holding `excess` have left the window; past what the window
    -- holds, the jobs ahead fill whole windows first.
    table.sort(counts[i], function(a, b) return a[1] < b[1] end)
    local freed, w = 0, nil
    for _, entry in ipairs(counts[i]) do
      freed = freed + entry[2]
      if freed >= excess then
        w = (entry[1] + 1) * bucket_ms + window - now
        break
      end
    end
    if not w then
      local last = now
      if #counts[i] > 0 then last = (counts[i][#counts[i]][1] + 1) * bucket_ms + window end
      w = last - now + window * math.ceil((excess - totals[i]) / cap[i] - 1)
    end
    w = math.max(1, w)
    if w > wait then refused, wait = i, w end
  end
end
if refused then
  local joined = 0
  if room then
    local fits = wait >= 0 and (deadline == 0 or now + wait <= deadline)
    if join and fits then
      redis.call('ZADD', R, myscore, job)
      redis.call('ZADD', D, now + wait + slack, job)
      redis.call('HSET', H, 'k:' .. job, mytokens)
      if not inroom then
        local last = tonumber(redis.call('HGET', H, 'a:' .. agent) or '0')
        redis.call('HSET', H, 'a:' .. agent, math.max(last, mytag))
      end
      local ttl = wait + slack + 2 * window
      for _, k in ipairs({R, D, H}) do
        if redis.call('PTTL', k) < ttl then redis.call('PEXPIRE', k, ttl) end
      end
      joined = 1
    elseif inroom then
      redis.call('ZREM', R, job)
      redis.call('ZREM', D, job)
      redis.call('HDEL', H, 'k:' .. job)
    end
  end
  return {0, now, wait, refused, joined}
end
for i = 1, n do
  if amt[i] > 0 then redis.call('HINCRBY', KEYS[i], current, amt[i]) end
  redis.call('PEXPIRE', KEYS[i], window + 2 * bucket_ms)
end
if room then
  if inroom then
    redis.call('ZREM', R, job)
    redis.call('ZREM', D, job)
    redis.call('HDEL', H, 'k:' .. job)
  end
  local v = tonumber(redis.call('HGET', H, 'v') or '0')
  local last = tonumber(redis.call('HGET', H, 'a:' .. agent) or '0')
  redis.call('HSET', H, 'v', math.max(v, mytag), 'a:' .. agent, math.max(last, mytag))
  redis.call('PEXPIRE', H, 2 * window + slack)
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
        self._admit = redis.register_script(_ADMIT)
        self._settle = redis.register_script(_SETTLE)

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
