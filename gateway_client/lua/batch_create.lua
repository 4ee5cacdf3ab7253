-- batch_create: makes a batch's record whole, or nothing, in one step: its fields, its expiry,
-- its place in the batches index and, for a batch the fleet drives (HTTP), in the fleet's set.
-- A process that dies while making a batch leaves either no batch or one its drivers find:
-- never a record without fields or expiry, nor a batch no driver looks at.
-- KEYS: the batch record, the batches index (zset), the fleet's batches (set).
-- ARGV: the batch id, now (seconds), the index's and the record's TTL (seconds), driven by the
--       fleet (0/1), then field, value pairs (status among them).
-- Returns 1 when made, 0 when a record with this id exists (then it is resumed, untouched).
-- Edge cases:
--   no record                            -> 1: fields set, expiry set, in the index (entries
--                                           older than the TTL dropped)
--   no record, driven by the fleet       -> 1: also in the fleet's set
--   a record exists                      -> 0; nothing written
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
local batch, now, ttl = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local fields = {}
for i = 5, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(fields))
redis.call('EXPIRE', KEYS[1], ttl)
redis.call('ZADD', KEYS[2], ARGV[2], batch)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - ttl)
redis.call('EXPIRE', KEYS[2], ttl)
if ARGV[4] == '1' then
  redis.call('SADD', KEYS[3], batch)
end
return 1
