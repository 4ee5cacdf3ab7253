-- orphan_check: the orphan sweeper judges the queued jobs whose message its sweep found on no
-- queue list and in no unacknowledged delivery. The sweep reads list after list while workers
-- pop and kombu restores, so one sweep can miss a message in passing: a job is acted on only
-- when the last sweep missed it too; missed once, it is this sweep's suspect.
-- KEYS: the index of queued jobs, the last sweep's suspects, this sweep's suspects, the
--       sweeper's lease.
-- ARGV: the sweeper's token, suspects' ttl ms, '1' on the sweep's last call ('' before it), the
--       job key prefix, min age ms (queued longer than this, by the index), then job ids.
-- Returns {'ok', id, provider, priority, ...} with each job to act on, or {'fenced'}.
-- (The job keys are derived here, so this script is for a single Redis or Sentinel, not Cluster.)
-- Edge cases:
--   queued long enough, the last sweep's suspect too -> returned to act on
--   queued long enough, missed for the first time    -> this sweep's suspect, not returned
--   queued less than min age ago (queued anew meanwhile) -> neither
--   not queued any more (claimed, ended, deferred) or no record -> out of the index, neither
--   the last call                                    -> this sweep's suspects replace the
--                                                       last's (none: the last's deleted)
--   the lease another sweeper's                      -> {'fenced'}; nothing changes
--   the lease the caller's                           -> extended to min age from now
--   the lease lapsed and nobody else's               -> the call works
-- include: clock
local holder = redis.call('GET', KEYS[4])
if holder and holder ~= ARGV[1] then return {'fenced'} end
-- A sweep that judges (and then acts on) many jobs keeps its lease a period past its last call.
if holder then redis.call('PEXPIRE', KEYS[4], ARGV[5]) end
local oldest = now_ms() - tonumber(ARGV[5])
local act, suspects = {'ok'}, 0
for i = 6, #ARGV do
  local id = ARGV[i]
  local f = redis.call('HMGET', ARGV[4] .. '{' .. id .. '}', 'state', 'provider', 'priority')
  local since = tonumber(redis.call('ZSCORE', KEYS[1], id))
  if f[1] ~= 'queued' then
    redis.call('ZREM', KEYS[1], id)
  elseif since and since <= oldest then
    if redis.call('SISMEMBER', KEYS[2], id) == 1 then
      table.insert(act, id)
      table.insert(act, f[2] or '')
      table.insert(act, f[3] or 'normal')
    else
      suspects = suspects + redis.call('SADD', KEYS[3], id)
    end
  end
end
if suspects > 0 then redis.call('PEXPIRE', KEYS[3], ARGV[2]) end
if ARGV[3] == '1' then
  if redis.call('EXISTS', KEYS[3]) == 1 then
    redis.call('RENAME', KEYS[3], KEYS[2])
  else
    redis.call('DEL', KEYS[2])
  end
end
return act
