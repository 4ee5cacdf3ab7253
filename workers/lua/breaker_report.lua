-- breaker_report: a call's outcome updates one breaker (a provider's or a deployment's).
-- KEYS: breaker hash. ARGV: outcome ('success' | 'failure'), failure threshold, ttl ms.
-- Only retryable failures are reported as failures. State: 0 closed, 1 half-open, 2 open.
-- Returns the state after the report.
-- Edge cases:
--   success, no hash (closed, clean)          -> 0; nothing written
--   success, failures counted, open or half-open -> 0; the hash deleted (closed)
--   failure, closed, below the threshold      -> 0; failures + 1, the hash expires in ttl ms
--   failure reaching the threshold            -> 2: opened_at now, failures 0, probes 0
--   failure while half-open (a probe failed)  -> 2: opened_at now, probes 0, expires in ttl ms
--   failure while open                        -> 2; nothing changes
-- include: clock
local state = tonumber(redis.call('HGET', KEYS[1], 'state') or 0)
if ARGV[1] == 'success' then
  if state ~= 0 or redis.call('HGET', KEYS[1], 'failures') then
    redis.call('DEL', KEYS[1])
  end
  return 0
end
if state == 1 then
  redis.call('HSET', KEYS[1], 'state', 2, 'opened_at', now_ms(), 'probes', 0)
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return 2
end
if state == 2 then return 2 end
local failures = redis.call('HINCRBY', KEYS[1], 'failures', 1)
redis.call('PEXPIRE', KEYS[1], ARGV[3])
if failures >= tonumber(ARGV[2]) then
  redis.call('HSET', KEYS[1], 'state', 2, 'opened_at', now_ms(), 'probes', 0, 'failures', 0)
  return 2
end
return 0
