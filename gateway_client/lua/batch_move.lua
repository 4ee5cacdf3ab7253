-- batch_move: moves a batch to a status if it is in one of the given ones, and stamps when.
-- KEYS: the batch record. ARGV: from statuses (comma separated), to status, timestamp field,
-- now (the caller's clock, seconds).
-- Returns 1 when moved, 0 when the status was another.
-- Edge cases:
--   status one of the from statuses    -> 1: status set, the timestamp field stamped
--   status another                     -> 0; nothing changes
--   no record                          -> 0; nothing written
local state = redis.call('HGET', KEYS[1], 'status')
for s in string.gmatch(ARGV[1], '[^,]+') do
  if s == state then
    redis.call('HSET', KEYS[1], 'status', ARGV[2], ARGV[3], ARGV[4])
    return 1
  end
end
return 0
