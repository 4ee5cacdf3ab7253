-- files_release: a deleted (or abandoned) file's bytes leave the file store's count.
-- KEYS: usage (hash file id -> bytes), expiries (sorted set), total (integer).
-- ARGV: file id.
-- Returns the bytes released.
-- Edge cases:
--   file counted                          -> its bytes: total lowered, its entries removed
--   file not counted (expired, released)  -> 0; nothing changes
local size = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
if size > 0 then
  redis.call('DECRBY', KEYS[3], size)
end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return size
