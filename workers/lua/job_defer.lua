-- job_defer: the running worker parks a job over a rate limit until the server's clock passes
-- now + wait; no worker holds it meanwhile. The attempt it used is given back (it never reached
-- the provider).
-- KEYS: job hash, lease, the deferred set. ARGV: worker id, wait ms, message, list, job id,
--       the limit's name (for the timeline; absent: none).
-- Returns 1 when deferred, 0 when this worker no longer owns the job.
-- Edge cases:
--   running, lease ours       -> 1: state deferred, attempt - 1, deferrals + 1, in the set
--   not running               -> 0; nothing changes
--   lease not ours (or gone)  -> 0
--   deferred                  -> timeline entry 'deferred' (worker, limit, wait_ms)
-- include: clock
-- include: timeline
local f = redis.call('HMGET', KEYS[1], 'state')
if f[1] ~= 'running' or redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
local ready = math.floor(now_seconds() * 1000) + tonumber(ARGV[2])
redis.call('HSET', KEYS[1], 'state', 'deferred', 'ready_ms', ready,
           'requeue', ARGV[3], 'requeue_to', ARGV[4])
redis.call('HINCRBY', KEYS[1], 'attempt', -1)
redis.call('HINCRBY', KEYS[1], 'deferrals', 1)
redis.call('DEL', KEYS[2])
redis.call('ZADD', KEYS[3], ready, ARGV[5])
timeline_add(KEYS[1], {event='deferred', worker=ARGV[1], wait_ms=tonumber(ARGV[2]),
                       limit=(ARGV[6] ~= '' and ARGV[6]) or nil})
return 1
