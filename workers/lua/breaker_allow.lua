-- breaker_allow: may a call go through every one of its breakers (provider, then deployment)?
-- KEYS: breaker hashes, the provider's first. ARGV: recovery ms, probes, probe ttl ms.
-- Breakers are asked in order; one after a breaker that refused is not asked, so it gives no
-- probe away. State: 0 closed, 1 half-open, 2 open.
-- Returns {allowed (0/1), state, retry in ms, clean}: the state and wait of the breaker that
-- refused (or of the last one), clean = 1 when every breaker is closed with no failure counted.
-- Edge cases:
--   no hash (closed, never failed)          -> {1, 0, 0, 1}; nothing written
--   closed with failures counted            -> {1, 0, 0, 0}
--   open, recovery not over                 -> {0, 2, ms until it is, 0}
--   open, recovery over                     -> {1, 1, 0, 0}: half-open, probes 1, the hash
--                                              expires in recovery + probe ttl ms
--   half-open, every probe taken            -> {0, 1, probe ttl ms, 0}
--   first breaker refuses                   -> {0, ...}; the next breaker is not asked
--   first allows, second refuses            -> {0, ...} of the second
--   first gives a probe, second refuses     -> {0, ...} of the second; the probe given back
-- include: clock
local function allow(key, now)
  local f = redis.call('HMGET', key, 'state', 'opened_at', 'probes', 'failures')
  local state, opened, probing = tonumber(f[1] or 0), tonumber(f[2] or 0), tonumber(f[3] or 0)
  if state == 0 then return 1, 0, 0, tonumber(f[4] or 0) == 0 end
  if state == 2 then
    local reopen_at = opened + tonumber(ARGV[1])
    if now < reopen_at then return 0, 2, reopen_at - now, false end
    redis.call('HSET', key, 'state', 1, 'probes', 0)
    state, probing = 1, 0
  end
  if probing < tonumber(ARGV[2]) then
    redis.call('HINCRBY', key, 'probes', 1)
    redis.call('PEXPIRE', key, tonumber(ARGV[1]) + tonumber(ARGV[3]))
    return 1, 1, 0, false
  end
  return 0, 1, tonumber(ARGV[3]), false
end
local now = now_ms()
local all_clean = 1
local given = {}  -- the breakers that gave this call a probe
local allowed, state, wait, clean
for i = 1, #KEYS do
  allowed, state, wait, clean = allow(KEYS[i], now)
  if not clean then all_clean = 0 end
  if allowed == 0 then
    -- No call is made: a probe an earlier breaker gave it goes back for the next call.
    for _, key in ipairs(given) do redis.call('HINCRBY', key, 'probes', -1) end
    return {0, state, wait, 0}
  end
  if state == 1 then table.insert(given, KEYS[i]) end
end
return {1, state, wait, all_clean}
