-- job_finish: a worker reports its job's result or error, fenced by the lease: the answer is
-- taken unless the job ended or another worker holds it. A job that is not running here any
-- more (queued or deferred, no lease) still takes it: after a Redis failover that lost the
-- claim, the promoted replica has the job queued, and the answer in hand is the job's answer
-- (refusing it would leave the job to wait out its deadline, its message acknowledged).
-- KEYS: job hash, events stream, lease. ARGV: worker id, channel, new state, event json, ttl.
-- Returns 1 when this call wrote the terminal event, 0 if the job had ended (or is gone),
-- -2 if another worker holds its lease.
-- Edge cases:
--   running, lease ours                     -> 1; finished_by set to this worker
--   running, lease lapsed and not taken     -> 1 (no other worker answered)
--   running, lease another worker's         -> -2; nothing written
--   queued or deferred, no lease (its claim lost in a failover) -> 1: the answer is the job's
--   ended by this same worker (a retried call whose first reply was lost) -> 1, nothing written
--   ended otherwise, or no record           -> 0
--   created with notify (a background response) -> 1; its webhook event in the outbox:
--                                           response.completed, .incomplete (finish_reason
--                                           length) or .failed (gateway_core/lua/webhook.lua)
-- include: clock
-- include: timeline
-- include: job
local f = redis.call('HMGET', KEYS[1], 'state', 'finished_by')
local state = f[1]
if not state then return 0 end
if TERMINAL[state] then
  if f[2] == ARGV[1] then return 1 end
  return 0
end
local holder = redis.call('GET', KEYS[3])
if holder and holder ~= ARGV[1] then return -2 end
redis.call('HSET', KEYS[1], 'finished_by', ARGV[1])
finish(KEYS[1], KEYS[2], KEYS[3], ARGV[2], ARGV[3], ARGV[4], ARGV[5])
return 1
