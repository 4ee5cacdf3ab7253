-- webhook_claim: a deliverer takes the webhook deliveries that are due, under a lease: each
-- taken one is re-scored `lease` ms ahead, so that if the deliverer dies it is due again then
-- (and another takes it); a deliverer that finishes settles it first (webhook_settle).
-- KEYS: the outbox (keys.WEBHOOK_OUTBOX). ARGV: at most this many, lease ms.
-- Returns {ms until the next delivery not taken is due (-1: none), member, member, ...}.
-- Edge cases:
--   nothing due                          -> {ms until the earliest is due}; nothing changes
--   empty outbox                         -> {-1}
--   more due than asked                  -> the oldest `count` taken; {0, ...}: more are due
--   a delivery whose lease lapsed        -> due again: taken like a new one
-- include: clock
local now = now_ms()
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
for _, member in ipairs(due) do
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), member)
end
local next_due = -1
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
if first[2] then next_due = math.max(0, tonumber(first[2]) - now) end
local out = {next_due}
for _, member in ipairs(due) do out[#out + 1] = member end
return out
