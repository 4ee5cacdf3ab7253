-- job_cancel: anyone ends a job that has not ended, with the error event given.
-- KEYS: job hash, events stream, lease. ARGV: channel, new state, event json, ttl seconds.
-- Returns 1 when this call wrote the terminal event, 0 when the job had ended or is gone.
-- Edge cases:
--   queued, running or deferred  -> 1: event written, state set, lease deleted, keys expire
--   already ended                -> 0; nothing written (one terminal event per job)
--   no record                    -> 0
--   created with notify          -> 1; response.cancelled in the webhook outbox
-- include: clock
-- include: timeline
-- include: job
local state = redis.call('HGET', KEYS[1], 'state')
if not state or TERMINAL[state] then return 0 end
finish(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2], ARGV[3], ARGV[4])
return 1
