-- job_expire: anyone ends a job whose deadline (plus grace) passed on the server's clock.
-- KEYS: job hash, events stream, lease. ARGV: channel, ttl seconds, grace seconds.
-- Returns 1 when this call wrote the deadline error, 0 when the job had ended or is gone,
-- -3 when the deadline plus grace has not passed yet.
-- Edge cases:
--   queued past the deadline           -> 1, E4404
--   running past the deadline          -> 1, E4205
--   waited for a rate limit (deferred) -> 1, E4401
--   deadline + grace not passed        -> -3; nothing written
--   no deadline field                  -> -3
--   already ended, or no record        -> 0
--   created with notify                -> 1; response.failed in the webhook outbox
-- include: clock
-- include: timeline
-- include: job
local f = redis.call('HMGET', KEYS[1], 'state', 'deadline')
local state, deadline = f[1], tonumber(f[2])
if not state or TERMINAL[state] then return 0 end
if not deadline or now_seconds() < deadline + tonumber(ARGV[3]) then return -3 end
finish(KEYS[1], KEYS[2], KEYS[3], ARGV[1], 'expired', deadline_event(state, KEYS[1]), ARGV[2])
return 1
