-- job_append: the running worker adds an event (a streamed chunk) to the job's stream.
-- KEYS: job hash, events stream, lease. ARGV: worker id, channel, event json.
-- Returns the event's n (from 0), -1 if the job is no longer running, -2 if another worker
-- holds its lease.
-- Edge cases:
--   running, lease ours      -> n; announced on the channel (and the producer's inbox)
--   not running (ended ...)  -> -1; nothing written
--   lease another worker's   -> -2; nothing written
--   lease lapsed, not taken  -> -2 (GET returns nil, not ours)
--   the job's first event    -> timeline entry 'first_chunk' (worker, attempt)
-- include: clock
-- include: timeline
-- include: job
local f = redis.call('HMGET', KEYS[1], 'state', 'expire_at_ms')
if f[1] ~= 'running' then return -1 end
if redis.call('GET', KEYS[3]) ~= ARGV[1] then return -2 end
local n = emit(KEYS[1], KEYS[2], ARGV[2], f[2], ARGV[3])
if n == 0 then
  timeline_add(KEYS[1], {event='first_chunk', worker=ARGV[1],
                         attempt=tonumber(redis.call('HGET', KEYS[1], 'attempt'))})
end
return n
