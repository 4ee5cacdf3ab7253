-- job_create: a producer creates a job once, and queues its message with it.
-- KEYS: job hash, then the queue's priority lists (to count its depth), then the list to push
--       the message onto (the job hash again when there is no message to push).
-- ARGV: expire_at_ms, max queue depth, message ('' for none), then field, value pairs.
-- Returns 'created', 'full', or the state of the job that already has this id.
-- Edge cases:
--   new job, room in the queue        -> 'created', state queued, attempt 0, message pushed
--   a job with this id exists         -> its state; nothing written, nothing pushed
--   the queue's lists hold max depth  -> 'full'; nothing written
--   no message ('')                   -> 'created', nothing pushed (another broker publishes)
--   message pushed                    -> its list's bell rung (l04:bell:<list>)
-- include: clock
-- include: bell
local state = redis.call('HGET', KEYS[1], 'state')
if state then return state end
local depth = 0
for i = 2, #KEYS - 1 do depth = depth + redis.call('LLEN', KEYS[i]) end
if depth >= tonumber(ARGV[2]) then return 'full' end
redis.call('HSET', KEYS[1], 'state', 'queued', 'attempt', 0,
           'created_ms', math.floor(now_seconds() * 1000), unpack(ARGV, 4))
redis.call('PEXPIREAT', KEYS[1], ARGV[1])
if ARGV[3] ~= '' then
  redis.call('LPUSH', KEYS[#KEYS], ARGV[3])
  ring_bell(KEYS[#KEYS])
end
return 'created'
