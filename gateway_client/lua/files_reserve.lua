-- files_reserve: counts bytes of a file against the file store's cap, or refuses them.
-- KEYS: usage (hash file id -> bytes), expiries (sorted set file id -> expires at, seconds),
-- total (integer). ARGV: file id, bytes to add, cap (bytes), now (seconds), the file's expiry
-- (seconds), force (1: count them even past the cap).
-- Returns 1 when counted, 0 when the cap would be passed (nothing counted).
-- Files whose expiry has passed leave the count first (at most 100 per call), so a store that
-- filled with files nobody deleted frees itself as they expire.
-- Edge cases:
--   bytes fit under the cap               -> 1: total, the file's bytes and expiry grow/set
--   bytes would pass the cap              -> 0; nothing counted
--   bytes would pass the cap, force       -> 1: counted anyway (a batch's output files)
--   expired files in the count            -> their bytes leave the total before the check
local expired = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[4], 'LIMIT', 0, 100)
for _, id in ipairs(expired) do
  local size = tonumber(redis.call('HGET', KEYS[1], id) or '0')
  redis.call('DECRBY', KEYS[3], size)
  redis.call('HDEL', KEYS[1], id)
  redis.call('ZREM', KEYS[2], id)
end
local total = tonumber(redis.call('GET', KEYS[3]) or '0')
local add = tonumber(ARGV[2])
if total + add > tonumber(ARGV[3]) and ARGV[6] ~= '1' then
  return 0
end
redis.call('INCRBY', KEYS[3], add)
redis.call('HINCRBY', KEYS[1], ARGV[1], add)
redis.call('ZADD', KEYS[2], ARGV[5], ARGV[1])
return 1
