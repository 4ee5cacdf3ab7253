-- job_claim: a worker takes a job to run it, under a lease that fences every other worker.
-- KEYS: job hash, events stream, lease, the index of queued jobs.
-- ARGV: worker id, lease ms, channel, result ttl seconds, max deliveries (L04_MAX_DELIVERIES),
--       job id.
-- Returns {'run', attempt, request, provider, model, stream, deadline, created_ms,
--          events so far, now ms, chain json, priority, kind, virtual key id ('' for none),
--          traceparent, tracestate (the caller's trace context, '' for none)},
--          or {outcome, detail} (kind: 'chat' for a record without one, as every job before
--          embeddings):
-- Edge cases:
--   queued                                -> run, attempt 1, started_ms set, lease set
--   running, its lease lapsed (worker died) -> run, attempt + 1
--   running, lease held                   -> {'busy', lease ms left}; nothing changes
--   ended                                 -> {'terminal', state}
--   deferred (waits for a rate limit)     -> {'deferred', 'deferred'}
--   deadline passed                       -> {'expired', state}: the deadline error written
--   the attempt would pass max deliveries -> {'lost', attempts}: E4206 written, state failed
--   failed over before (attempts - failovers under max) -> run: hand-offs are no lost starts
--   no record                             -> {'gone'}
--   submitted with a virtual key          -> run, the key's id (it was '' above)
--   submitted inside a trace              -> run, its traceparent and tracestate last, the same
--                                            on every attempt and after a hand-off (kept)
--   in the index of queued jobs           -> taken out of it, whatever the outcome
--   run                                   -> timeline entry 'claimed' (worker, attempt; after a
--                                            lapsed lease: redelivered, previous_worker)
-- include: clock
-- include: timeline
-- include: job
-- Whatever happens next, the job is no longer waiting for a message: out of the queued index.
redis.call('ZREM', KEYS[4], ARGV[6])
local f = redis.call('HMGET', KEYS[1], 'state', 'deadline', 'attempt', 'failovers')
local state, deadline = f[1], tonumber(f[2])
-- Starts that ended in no answer and no hand-off: each worker that took the job died with it.
-- (A deferral gives its attempt back; a hand-off to the next model counts in failovers.)
local attempts = tonumber(f[3] or 0) - tonumber(f[4] or 0)
if not state then return {'gone'} end
if TERMINAL[state] then return {'terminal', state} end
if state == 'deferred' then return {'deferred', state} end
local now = now_seconds()
if deadline and now >= deadline then
  finish(KEYS[1], KEYS[2], KEYS[3], ARGV[3], 'expired', deadline_event(state, KEYS[1]), ARGV[4])
  return {'expired', state}
end
if state == 'running' and redis.call('EXISTS', KEYS[3]) == 1 then
  return {'busy', tostring(redis.call('PTTL', KEYS[3]))}
end
if attempts >= tonumber(ARGV[5]) then
  -- Every worker that took this job so far lost it (died, or was killed): it stops here.
  local message = 'the job was started ' .. attempts .. ' times and no worker finished it'
  finish(KEYS[1], KEYS[2], KEYS[3], ARGV[3], 'failed', error_event('E4206', message, false),
         ARGV[4])
  return {'lost', tostring(attempts)}
end
redis.call('SET', KEYS[3], ARGV[1], 'PX', ARGV[2])
local attempt = redis.call('HINCRBY', KEYS[1], 'attempt', 1)
local claimed_ms = now_ms() -- one read: started_ms, the timeline entry and the reply agree
if attempt == 1 then redis.call('HSET', KEYS[1], 'started_ms', claimed_ms) end
-- A running job claimed again: its worker's lease lapsed (the worker died or stalled).
local previous = state == 'running' and redis.call('HGET', KEYS[1], 'worker') or nil
timeline_add(KEYS[1], {t=claimed_ms, event='claimed', worker=ARGV[1], attempt=attempt,
                       redelivered=state == 'running' or nil, previous_worker=previous})
redis.call('HSET', KEYS[1], 'state', 'running', 'worker', ARGV[1])
local r = redis.call('HMGET', KEYS[1], 'request', 'provider', 'model', 'stream', 'deadline',
                     'created_ms', 'chain', 'priority', 'kind', 'key_id', 'traceparent',
                     'tracestate')
return {'run', tostring(attempt), r[1], r[2], r[3], r[4], r[5], r[6],
        tostring(redis.call('XLEN', KEYS[2])), tostring(claimed_ms), r[7] or '[]', r[8] or 'normal',
        r[9] or 'chat', r[10] or '', r[11] or '', r[12] or ''}
