-- The job's timeline (gateway_core.keys.job_timeline, read by `l04 trace`): a list of JSON
-- entries {"t": server ms, "event": ..., ...}, one per step of the job's life, written by the
-- script that makes the step, so the timeline is exactly as true as the record. Needs clock.lua
-- before it. An entry that comes with its `t` keeps it: a step that also stamps the record
-- (created_ms, finished_ms) reads the clock once, so the two agree to the millisecond.
-- The key is the job hash's name plus ':timeline', derived here (the same hash tag, so the
-- same slot, but not declared as a key of the script: like the bells, for one Redis or
-- Sentinel). It expires with the record: when it is made, at the record's expiry; when the job
-- ends (`ttl` given), with the record, `ttl` seconds later. At most TIMELINE_CAP entries: past that, the entry
-- after the first TIMELINE_HEAD goes (the job's first steps and its latest are kept), counted in
-- the record's `timeline_dropped`, so a job redelivered or deferred many times cannot grow it
-- unbounded.
local TIMELINE_CAP = 64
local TIMELINE_HEAD = 8
local function timeline_add(job, entry, ttl)
  local key = job .. ':timeline'
  entry['t'] = entry['t'] or now_ms()
  local n = redis.call('RPUSH', key, cjson.encode(entry))
  if n > TIMELINE_CAP then
    redis.call('LSET', key, TIMELINE_HEAD, '')
    redis.call('LREM', key, 1, '')
    redis.call('HINCRBY', job, 'timeline_dropped', 1)
  end
  if ttl then
    redis.call('EXPIRE', key, ttl)
  elseif n == 1 then
    local left = redis.call('PTTL', job)
    if left <= 0 then left = 86400000 end -- a record with no expiry: a day, never for good
    redis.call('PEXPIRE', key, left)
  end
end
