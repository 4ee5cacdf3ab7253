-- quota_reserve: an agent reserves a call's tokens and cost against its quotas for the period.
-- Periods are aligned to the epoch on the server's clock (period = floor(now / period s)).
-- KEYS: the quota hash of the period the caller expects.
-- ARGV: that period, period s, token quota (0: none), cost quota in micro-USD (0: none),
--       tokens, micro-USD.
-- Returns {1, period} when reserved, {0, which ('tokens' | 'cost'), used, quota, resets in s}
-- when refused, {-1, period} when the server's clock is in another period than the caller's
-- (ask again with that one).
-- Edge cases:
--   within both quotas                  -> {1, period}: tokens and micro_usd added, the hash
--                                          expires in period s + 3600
--   reaching a quota exactly            -> reserved (only going over refuses)
--   quotas 0 (none)                     -> reserved whatever was used
--   tokens would go over                -> {0, 'tokens', used, quota, resets in s}; nothing added
--   cost would go over (tokens fine)    -> {0, 'cost', used, quota, resets in s}; nothing added
--   the caller's period is not the server's -> {-1, the server's period}; nothing written
-- include: clock
local period_s = tonumber(ARGV[2])
local now = now_whole_seconds()
local period = math.floor(now / period_s)
if period ~= tonumber(ARGV[1]) then return {-1, period} end
local key = KEYS[1]
local f = redis.call('HMGET', key, 'tokens', 'micro_usd')
local used_t, used_c = tonumber(f[1] or '0'), tonumber(f[2] or '0')
local quota_t, quota_c = tonumber(ARGV[3]), tonumber(ARGV[4])
local want_t, want_c = tonumber(ARGV[5]), tonumber(ARGV[6])
local resets = (period + 1) * period_s - now
if quota_t > 0 and used_t + want_t > quota_t then
  return {0, 'tokens', used_t, quota_t, resets}
end
if quota_c > 0 and used_c + want_c > quota_c then
  return {0, 'cost', used_c, quota_c, resets}
end
redis.call('HINCRBY', key, 'tokens', want_t)
redis.call('HINCRBY', key, 'micro_usd', want_c)
redis.call('EXPIRE', key, period_s + 3600)
return {1, period}
