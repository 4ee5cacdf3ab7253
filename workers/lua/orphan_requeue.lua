-- orphan_requeue: the orphan sweeper puts a queued job whose message two sweeps found nowhere
-- back on its queue, once; a job whose message is lost again (or for which no message can be
-- built) fails with E4206, its terminal event announced as every other.
-- KEYS: job hash, events stream, lease, the index of queued jobs, the sweeper's lease, the list
--       to push the message onto (the job hash when nothing is pushed).
-- ARGV: job id, the sweeper's token, channel, result ttl seconds, message ('' for none: another
--       broker, the caller publishes), requeues allowed per job (0: fail it), min age ms.
-- Returns 'requeued', 'failed', 'skipped' (not queued, or queued anew meanwhile), 'fenced'.
-- Edge cases:
--   queued long enough, requeued fewer times than allowed -> 'requeued': orphaned + 1, message
--                                        pushed at the end workers pop first (it has waited its
--                                        turn), queued anew in the index (at the server time)
--   no message ('')                   -> 'requeued'; nothing pushed
--   message pushed                    -> its list's bell rung (l04:bell:<list>)
--   requeued                          -> timeline entry 'requeued' (why)
--   requeued as often as allowed (or 0 allowed) -> 'failed': E4206 written, out of the index
--   queued less than min age ago, or not in the index -> 'skipped'; nothing changes
--   not queued any more, or no record -> 'skipped'; out of the index
--   the sweeper's lease another's     -> 'fenced'; nothing changes
--   the sweeper's lease the caller's  -> extended to min age from now
-- include: clock
-- include: bell
-- include: timeline
-- include: job
local holder = redis.call('GET', KEYS[5])
if holder and holder ~= ARGV[2] then return 'fenced' end
-- A sweep that puts many jobs back keeps its lease a period past its last one.
if holder then redis.call('PEXPIRE', KEYS[5], ARGV[7]) end
local f = redis.call('HMGET', KEYS[1], 'state', 'orphaned')
if f[1] ~= 'queued' then
  redis.call('ZREM', KEYS[4], ARGV[1])
  return 'skipped'
end
local since = tonumber(redis.call('ZSCORE', KEYS[4], ARGV[1]))
if not since or since > now_ms() - tonumber(ARGV[7]) then return 'skipped' end
local orphaned = tonumber(f[2] or 0)
if orphaned >= tonumber(ARGV[6]) then
  local message = 'the job\'s queue message was lost ' .. (orphaned + 1) .. ' times'
  if orphaned == 0 then message = 'the job\'s queue message was lost and cannot be rebuilt' end
  redis.call('ZREM', KEYS[4], ARGV[1])
  finish(KEYS[1], KEYS[2], KEYS[3], ARGV[3], 'failed', error_event('E4206', message, false),
         ARGV[4])
  return 'failed'
end
redis.call('HINCRBY', KEYS[1], 'orphaned', 1)
timeline_add(KEYS[1], {event='requeued', why='its queue message was lost'})
if ARGV[5] ~= '' then
  redis.call('RPUSH', KEYS[6], ARGV[5])
  ring_bell(KEYS[6])
end
index_queued(KEYS[4], ARGV[1], KEYS[1])
return 'requeued'
