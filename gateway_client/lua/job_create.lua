-- job_create: a producer creates a job once, and queues its message with it.
-- KEYS: job hash, then the queue's priority lists (to count its depth), then the list to push
--       the message onto (the job hash again when there is no message to push), then the index
--       of queued jobs.
-- ARGV: expire_at_ms, max queue depth, message ('' for none), the job id to index ('' for none:
--       a broker that is not Redis), then field, value pairs.
-- Returns 'created', 'full', or the state of the job that already has this id.
-- Edge cases:
--   new job, room in the queue        -> 'created', state queued, attempt 0, message pushed
--   a job with this id exists         -> its state; nothing written, nothing pushed
--   the queue's lists hold max depth  -> 'full'; nothing written
--   no message ('')                   -> 'created', nothing pushed (another broker publishes)
--   message pushed                    -> its list's bell rung (l04:bell:<list>)
--   a job id to index                 -> 'created', in the index at the server's time; the
--                                        index's expiry raised to the record's, never lowered
--   no job id to index ('')           -> 'created', not in the index
--   created                           -> timeline entry 'created' (provider, model, queue,
--                                        priority), at the record's created_ms
-- include: clock
-- include: bell
-- include: timeline
-- include: job
local state = redis.call('HGET', KEYS[1], 'state')
if state then return state end
local depth = 0
for i = 2, #KEYS - 2 do depth = depth + redis.call('LLEN', KEYS[i]) end
if depth >= tonumber(ARGV[2]) then return 'full' end
local now = now_ms()
redis.call('HSET', KEYS[1], 'state', 'queued', 'attempt', 0, 'created_ms', now, unpack(ARGV, 5))
redis.call('PEXPIREAT', KEYS[1], ARGV[1])
local made = redis.call('HMGET', KEYS[1], 'provider', 'model', 'queue', 'priority')
timeline_add(KEYS[1], {t=now, event='created', provider=made[1] or nil, model=made[2] or nil,
                       queue=made[3] or nil, priority=made[4] or nil})
if ARGV[3] ~= '' then
  redis.call('LPUSH', KEYS[#KEYS - 1], ARGV[3])
  ring_bell(KEYS[#KEYS - 1])
end
index_queued(KEYS[#KEYS], ARGV[4], KEYS[1])
return 'created'
