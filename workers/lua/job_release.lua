-- job_release: puts the deferred jobs whose time has come back on their queues.
-- KEYS: the deferred set, the index of queued jobs.
-- ARGV: how many at most, the job key prefix, '1' to record the jobs in the index ('' not: a
--       broker that is not Redis).
-- Returns id, provider, priority for each job moved; with a broker other than this Redis (no
-- stored message) the caller publishes them.
-- (The job keys are derived here, so this script is for a single Redis or Sentinel, not Cluster.)
-- Edge cases:
--   due, still deferred         -> queued; its stored message pushed back onto its list; in
--                                  the index of queued jobs
--   due, not to be indexed ('') -> queued, not in the index
--   due, no stored message      -> queued; returned for the caller to publish
--   due, no longer deferred (cancelled, expired, gone) -> dropped from the set, not returned
--   not due yet                 -> left in the set
--   more due than the limit     -> the first `limit`; the rest wait for the next call
--   stored message pushed back  -> its list's bell rung (l04:bell:<list>)
--   released                    -> timeline entry 'released' (the wait is over, queued again)
-- include: clock
-- include: bell
-- include: timeline
-- include: job
local now = math.floor(now_seconds() * 1000)
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
local moved = {}
for _, id in ipairs(due) do
  redis.call('ZREM', KEYS[1], id)
  local job = ARGV[2] .. '{' .. id .. '}'
  local f = redis.call('HMGET', job, 'state', 'requeue', 'requeue_to', 'provider', 'priority')
  if f[1] == 'deferred' then
    redis.call('HSET', job, 'state', 'queued')
    if f[2] and f[2] ~= '' then
      redis.call('LPUSH', f[3], f[2])
      ring_bell(f[3])
      redis.call('HDEL', job, 'requeue')
    end
    if ARGV[3] == '1' then index_queued(KEYS[2], id, job) end
    timeline_add(job, {event='released'})
    table.insert(moved, id)
    table.insert(moved, f[4] or '')
    table.insert(moved, f[5] or 'normal')
  end
end
return moved
