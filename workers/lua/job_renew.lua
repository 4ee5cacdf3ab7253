-- job_renew: a worker renews the leases of the jobs it runs (its heartbeat).
-- KEYS: job hash, lease, job hash, lease, ... ARGV: worker id, lease ms.
-- Returns the indexes (0-based, per job) of the jobs this worker no longer owns.
-- Edge cases:
--   lease ours                                        -> renewed
--   lease gone, job running here (Redis restarted)    -> lease taken back
--   lease gone, job answered by this worker just now  -> kept (not lost)
--   lease another worker's, or job ended elsewhere, cancelled, expired, or gone -> lost
local lost = {}
for i = 1, #KEYS, 2 do
  local job, lease = KEYS[i], KEYS[i + 1]
  local holder = redis.call('GET', lease)
  if holder == ARGV[1] then
    redis.call('PEXPIRE', lease, ARGV[2])
  else
    local f = redis.call('HMGET', job, 'state', 'worker')
    if not holder and f[1] == 'running' and f[2] == ARGV[1] then
      redis.call('SET', lease, ARGV[1], 'PX', ARGV[2])
    elseif (f[1] == 'succeeded' or f[1] == 'failed') and f[2] == ARGV[1] then
      -- answered by this very worker a moment ago: nothing to stop (its usage record is due)
    else
      table.insert(lost, (i - 1) / 2)
    end
  end
end
return lost
