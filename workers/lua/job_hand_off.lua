-- job_hand_off: the running worker moves a job to the next model of its chain (failover).
-- KEYS: job hash, lease, the next model's queue list (the job hash when nothing is pushed), the
--       index of queued jobs.
-- ARGV: worker id, provider, model, queue, message ('' for none), the job id to index ('' for
--       none: a broker that is not Redis), why (the error code that made it fail over;
--       for the timeline, absent: none).
-- Returns 1 when handed off, 0 when this worker no longer owns the job.
-- Edge cases:
--   running, lease ours       -> 1: queued with the new provider, model, queue; failovers + 1;
--                                lease deleted; message pushed; in the index of queued jobs
--   no job id to index ('')   -> 1, not in the index
--   not running               -> 0; nothing changes
--   lease not ours (or gone)  -> 0
--   message pushed            -> its list's bell rung (l04:bell:<list>)
--   handed off                -> timeline entry 'failover' (from, to, queue, code)
-- include: clock
-- include: bell
-- include: timeline
-- include: job
local f = redis.call('HMGET', KEYS[1], 'state')
if f[1] ~= 'running' or redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
local from = redis.call('HMGET', KEYS[1], 'provider', 'model')
timeline_add(KEYS[1], {event='failover', worker=ARGV[1],
                       from=(from[1] or '') .. ':' .. (from[2] or ''),
                       to=ARGV[2] .. ':' .. ARGV[3], queue=ARGV[4],
                       code=(ARGV[7] and ARGV[7] ~= '' and ARGV[7]) or nil})
redis.call('HSET', KEYS[1], 'state', 'queued', 'provider', ARGV[2], 'model', ARGV[3],
           'queue', ARGV[4])
redis.call('HINCRBY', KEYS[1], 'failovers', 1)
redis.call('DEL', KEYS[2])
if ARGV[5] ~= '' then
  redis.call('LPUSH', KEYS[3], ARGV[5])
  ring_bell(KEYS[3])
end
index_queued(KEYS[4], ARGV[6], KEYS[1])
return 1
