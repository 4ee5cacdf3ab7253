-- job_note: the running worker adds a step to the job's timeline that no transition makes (a
-- provider call retried after a retryable error), fenced by its lease.
-- KEYS: job hash, lease. ARGV: worker id, entry json (an object with an "event").
-- Returns 1 when written, 0 when this worker no longer runs the job.
-- Edge cases:
--   running, lease ours          -> 1: the entry, with the server time and the worker, appended
--   entry with its own "t"       -> 1: the server time replaces it
--   not running, or lease not ours (or gone) -> 0; nothing written
--   entry not a JSON object      -> 0; nothing written
-- include: clock
-- include: timeline
if redis.call('HGET', KEYS[1], 'state') ~= 'running' then return 0 end
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
local ok, entry = pcall(cjson.decode, ARGV[2])
if not ok or type(entry) ~= 'table' or type(entry.event) ~= 'string' then return 0 end
entry.worker = ARGV[1]
entry.t = nil -- the server's time, never the caller's
timeline_add(KEYS[1], entry)
return 1
