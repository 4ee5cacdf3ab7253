-- batch_move: moves a batch to a status if it is in one of the given ones, and stamps when.
-- A batch made with a `notify` field ("batch:<object id>", BatchStore.create's notify) that
-- moves to completed, failed, expired or cancelled adds its webhook event (batch.<status>) to
-- the outbox in this same script (gateway_core/lua/webhook.lua), with its `key_id`.
-- KEYS: the batch record. ARGV: from statuses (comma separated), to status, timestamp field,
-- now (the caller's clock, seconds).
-- Returns 1 when moved, 0 when the status was another.
-- Edge cases:
--   status one of the from statuses    -> 1: status set, the timestamp field stamped
--   status another                     -> 0; nothing changes
--   no record                          -> 0; nothing written
--   moved to an end, with notify       -> 1; batch.<status> added to the webhook outbox
-- include: clock
-- include: webhook
local ENDS = {completed=true, failed=true, expired=true, cancelled=true}
local state = redis.call('HGET', KEYS[1], 'status')
for s in string.gmatch(ARGV[1], '[^,]+') do
  if s == state then
    redis.call('HSET', KEYS[1], 'status', ARGV[2], ARGV[3], ARGV[4])
    if ENDS[ARGV[2]] then
      local f = redis.call('HMGET', KEYS[1], 'notify', 'key_id')
      local object_id = f[1] and string.match(f[1], '^batch:(.+)$')
      if object_id then webhook_enqueue('batch.' .. ARGV[2], object_id, f[2]) end
    end
    return 1
  end
end
return 0
