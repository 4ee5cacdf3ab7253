-- semantic_cache_store: stores one semantic-cache entry in its scope, announces it on the
-- scope's log for the other workers, and keeps the scope within its bounds.
-- KEYS: vec (id -> float32 bytes), resp (id -> answer), order (zset id -> stored at, ms),
--       log (stream of the ids added).
-- ARGV: id, vector bytes, answer, ttl s, max entries.
-- Returns how many entries it removed (older than ttl, or the oldest past max entries).
-- Edge cases:
--   room in the scope                  -> 0: vec, resp, order set, {id, at} added to the log,
--                                         the four keys expire in ttl
--   entries older than ttl             -> removed from vec, resp and order; counted
--   past max entries                   -> the oldest removed; counted
--   the same id stored again           -> replaced, stored at now; logged again
-- include: clock
local now = now_ms()
local ttl, max = tonumber(ARGV[4]), tonumber(ARGV[5])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
redis.call('ZADD', KEYS[3], now, ARGV[1])
redis.call('XADD', KEYS[4], 'MAXLEN', '~', 2 * max + 100, '*', 'id', ARGV[1], 'at', now)
local gone = redis.call('ZRANGEBYSCORE', KEYS[3], '-inf', now - ttl * 1000)
local over = redis.call('ZCARD', KEYS[3]) - #gone - max
if over > 0 then
  for _, id in ipairs(redis.call('ZRANGE', KEYS[3], #gone, #gone + over - 1)) do
    table.insert(gone, id)
  end
end
for _, id in ipairs(gone) do
  redis.call('HDEL', KEYS[1], id)
  redis.call('HDEL', KEYS[2], id)
  redis.call('ZREM', KEYS[3], id)
end
for i = 1, 4 do redis.call('EXPIRE', KEYS[i], ttl) end
return #gone
