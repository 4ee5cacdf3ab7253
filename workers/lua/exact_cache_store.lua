-- exact_cache_store: stores one exact-cache answer and keeps the cache within its bounds (the
-- Redis runs with noeviction): index entries older than ttl are dropped, and past max entries
-- the oldest are deleted.
-- KEYS: the entry, the index (zset: entry key -> stored at, ms).
-- ARGV: value, ttl s, max entries.
-- Returns 1.
-- Edge cases:
--   room in the cache                  -> the entry set with ttl, indexed at now; the index
--                                         expires in ttl
--   the same entry stored again        -> its value replaced, indexed at now (once)
--   index entries older than ttl       -> dropped from the index
--   past max entries                   -> the oldest entries deleted and dropped from the index
-- include: clock
local now = now_ms()
local ttl = tonumber(ARGV[2])
redis.call('SET', KEYS[1], ARGV[1], 'EX', ttl)
redis.call('ZADD', KEYS[2], now, KEYS[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - ttl * 1000)
local over = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[3])
if over > 0 then
  for _, old in ipairs(redis.call('ZRANGE', KEYS[2], 0, over - 1)) do redis.call('DEL', old) end
  redis.call('ZREMRANGEBYRANK', KEYS[2], 0, over - 1)
end
redis.call('EXPIRE', KEYS[2], ttl)
return 1
