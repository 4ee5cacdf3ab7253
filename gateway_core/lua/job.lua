-- Helpers of the job's scripts (gateway_core/job_states.py draws the state machine).
-- Needs clock.lua and timeline.lua before it.
-- include: webhook
local TERMINAL = {succeeded=true, failed=true, cancelled=true, expired=true}

-- Appends an event to the job's stream, then announces it on the job's channel as
-- "<n>\n<stream id>\n<event json>" and on its producer's inbox (reply_to) with the channel in
-- front. Returns n, the event's index from 0 (a listener tells a gap from a duplicate by it).
local function emit(job, events_key, channel, expire_at_ms, event_json)
  local n = redis.call('XLEN', events_key)
  local id = redis.call('XADD', events_key, '*', 'n', n, 'e', event_json)
  if n == 0 and expire_at_ms then redis.call('PEXPIREAT', events_key, expire_at_ms) end
  local announcement = n .. '\n' .. id .. '\n' .. event_json
  redis.call('PUBLISH', channel, announcement)
  local inbox = redis.call('HGET', job, 'reply_to')
  if inbox then redis.call('PUBLISH', inbox, channel .. '\n' .. announcement) end
  return n
end

local function error_event(code, message, retryable)
  return cjson.encode({type='error', error={code=code, message=message, retryable=retryable}})
end

-- The error of a job whose deadline passed in `state`.
local function deadline_event(state, job)
  if state ~= 'running' and redis.call('HEXISTS', job, 'deferrals') == 1 then
    return error_event('E4401', 'deadline passed while the job waited for a rate limit', false)
  elseif state == 'queued' then
    return error_event('E4404', 'deadline passed before a worker started the job', false)
  end
  return error_event('E4205', 'deadline passed while the job was running', false)
end

-- Writes the job's one terminal event and ends it: state, lease gone, keys kept for ttl seconds;
-- a job created with `notify` adds its webhook event to the outbox in the same script.
local function finish(job, events, lease, channel, state_to, event_json, ttl)
  local expire_at = redis.call('HGET', job, 'expire_at_ms')
  emit(job, events, channel, expire_at, event_json)
  local now = now_ms()
  redis.call('HSET', job, 'state', state_to, 'finished_ms', now)
  webhook_job_ended(job, state_to, event_json)
  redis.call('DEL', lease)
  redis.call('EXPIRE', job, ttl)
  redis.call('EXPIRE', events, ttl)
  -- The timeline's last entry: how it ended (an error event's code; who answered, if a worker).
  local code = nil
  if state_to ~= 'succeeded' then
    local ok, decoded = pcall(cjson.decode, event_json)
    if ok and type(decoded) == 'table' and type(decoded.error) == 'table' then
      code = decoded.error.code
    end
  end
  timeline_add(job, {t=now, event='ended', state=state_to, code=code,
                     worker=redis.call('HGET', job, 'finished_by') or nil}, ttl)
end

-- Records the job in the index of queued jobs (the orphan sweeper's: workers/orphans.py) with the
-- server time it became queued; nothing when job_id is '' (a broker that is not Redis keeps no
-- index). The index's expiry is raised to the record's, so it never outlives the longest-lived
-- record in it and never drops one that is still there.
local function index_queued(index, job_id, job)
  if job_id == '' then return end
  redis.call('ZADD', index, now_ms(), job_id)
  local left = redis.call('PTTL', job)
  if left > redis.call('PTTL', index) then redis.call('PEXPIRE', index, left) end
end
