-- rate_limit_admit: one decision over every limit of a call (requests and tokens per window,
-- per model and per agent), in the order of the model's waiting room; takes from none unless
-- all have room. Counts live in sub-buckets of bucket ms (field = bucket number, on the
-- server's clock); a bucket partly in the window counts whole, so no window holds more than
-- the limit.
-- KEYS: one hash per limit, then (optionally) the waiting room: order zset, due zset, meta hash.
-- ARGV: window ms, bucket ms, number of limits n, job id, priority band (0 first), agent,
--       join (0/1), deadline ms (0: none), slack ms, then per limit: capacity, amount,
--       shared (0/1), kind ('r' requests | 't' tokens).
-- Returns {1, now ms, bucket} when admitted; {0, now ms, wait ms, index of the short limit
-- (from 1), joined (0/1)} when refused, wait -1 when the amount exceeds the limit's capacity.
-- Waiting room: order scores a job band * 2^40 + tag; the tag of a new job is max(v, the tag
-- of its agent's last job) + 1 (meta fields 'v', 'a:<agent>'), its tokens are 'k:<job>'.
-- Edge cases:
--   every limit has room                 -> {1, now, bucket}: each amount added to the
--                                           current bucket, keys expire in window + 2 buckets
--   an amount of 0                       -> counts nothing on that limit
--   buckets older than the window        -> deleted, not counted
--   one limit short                      -> {0, now, ms until the oldest buckets holding the
--                                           excess left the window, its index, 0}; nothing taken
--   several limits short                 -> the index and wait of the longest wait
--   an amount over a limit's capacity    -> {0, now, -1, its index, 0}; nothing taken
--   room, nobody ahead, limits have room -> admitted; v and the agent's tag set to its tag
--   room, refused, join, wait fits the deadline -> {0, now, wait, index, 1}: in order, due
--                                           at now + wait + slack, its tokens in meta
--   room, refused, the wait passes the deadline -> joined 0; not in the room
--   room, refused, join 0                -> joined 0; not in the room
--   room, in it, then refused without joining -> taken out of the room
--   room, in it, then admitted           -> taken out of the room
--   room, admitted while others wait longer -> the room's meta keeps its longer expiry (their
--                                           tokens and tags outlive this admission)
--   room, jobs ahead (earlier band or tag) -> their requests and tokens count against the
--                                           shared limits (not the others)
--   room, a lower band number waiting    -> ahead of a higher band's job whatever the tags
--   room, more ahead than the window holds -> wait until every bucket left, plus one window
--                                           per capacity of what is still ahead and this call:
--                                           window * ceil((excess - counted) / capacity)
--   room, an entry past its due time     -> dropped from the room before the decision
-- include: clock
local window, bucket_ms, n = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local job, band, agent = ARGV[4], tonumber(ARGV[5]), ARGV[6]
local join, deadline, slack = ARGV[7] == '1', tonumber(ARGV[8]), tonumber(ARGV[9])
local now = now_ms()
local current = math.floor(now / bucket_ms)
local oldest = math.floor((now - window) / bucket_ms)
local BAND = 1099511627776
local room = #KEYS > n
local R, D, H = KEYS[n + 1], KEYS[n + 2], KEYS[n + 3]
local cap, amt, shared, kind = {}, {}, {}, {}
for i = 1, n do
  local base = 9 + 4 * (i - 1)
  cap[i], amt[i] = tonumber(ARGV[base + 1]), tonumber(ARGV[base + 2])
  shared[i], kind[i] = ARGV[base + 3] == '1', ARGV[base + 4]
end
-- The waiting room: who waits ahead of this job for the shared limits.
local myscore, mytag, inroom, mytokens = nil, nil, false, 0
for i = 1, n do if shared[i] and kind[i] == 't' then mytokens = amt[i] end end
if room then
  for _, w in ipairs(redis.call('ZRANGEBYSCORE', D, '-inf', now)) do
    redis.call('ZREM', R, w)
    redis.call('ZREM', D, w)
    redis.call('HDEL', H, 'k:' .. w)
  end
  local s = redis.call('ZSCORE', R, job)
  if s then
    myscore, inroom = tonumber(s), true
    mytag = myscore % BAND
  else
    local v = tonumber(redis.call('HGET', H, 'v') or '0')
    local last = tonumber(redis.call('HGET', H, 'a:' .. agent) or '0')
    mytag = math.max(v, last) + 1
    myscore = band * BAND + mytag
  end
end
local ahead_n, ahead_t = 0, 0
if room then
  local need_r, need_t = 0, 0
  for i = 1, n do
    if shared[i] and kind[i] == 'r' then need_r = math.max(need_r, cap[i]) end
    if shared[i] and kind[i] == 't' then need_t = math.max(need_t, cap[i]) end
  end
  local offset = 0
  while (need_r > 0 and ahead_n < need_r) or (need_t > 0 and ahead_t < need_t) do
    local batch = redis.call('ZRANGEBYSCORE', R, '-inf', '(' .. myscore, 'LIMIT', offset, 200)
    if #batch == 0 then break end
    for _, w in ipairs(batch) do
      ahead_n = ahead_n + 1
      ahead_t = ahead_t + tonumber(redis.call('HGET', H, 'k:' .. w) or '0')
    end
    offset = offset + #batch
  end
end
local totals, counts = {}, {}
for i = 1, n do
  local flat = redis.call('HGETALL', KEYS[i])
  local total, live = 0, {}
  for j = 1, #flat, 2 do
    local b, c = tonumber(flat[j]), tonumber(flat[j + 1])
    if b < oldest then
      redis.call('HDEL', KEYS[i], flat[j])
    else
      total = total + c
      live[#live + 1] = {b, c}
    end
  end
  totals[i], counts[i] = total, live
end
local refused, wait = nil, 0
for i = 1, n do
  if amt[i] > cap[i] then
    refused, wait = i, -1
    break
  end
  local ahead = 0
  if shared[i] then ahead = (kind[i] == 'r') and ahead_n or ahead_t end
  local excess = totals[i] + ahead + amt[i] - cap[i]
  if excess > 0 then
    -- Wait until the oldest buckets holding `excess` have left the window; past what the window
    -- holds, the jobs ahead fill whole windows first.
    table.sort(counts[i], function(a, b) return a[1] < b[1] end)
    local freed, w = 0, nil
    for _, entry in ipairs(counts[i]) do
      freed = freed + entry[2]
      if freed >= excess then
        w = (entry[1] + 1) * bucket_ms + window - now
        break
      end
    end
    if not w then
      local last = now
      if #counts[i] > 0 then last = (counts[i][#counts[i]][1] + 1) * bucket_ms + window end
      -- From `last` the window is empty, and what waits ahead of this call plus the call
      -- itself, (excess - counted) + capacity, is admitted a capacity per window.
      w = last - now + window * math.ceil((excess - totals[i]) / cap[i])
    end
    w = math.max(1, w)
    if w > wait then refused, wait = i, w end
  end
end
if refused then
  local joined = 0
  if room then
    local fits = wait >= 0 and (deadline == 0 or now + wait <= deadline)
    if join and fits then
      redis.call('ZADD', R, myscore, job)
      redis.call('ZADD', D, now + wait + slack, job)
      redis.call('HSET', H, 'k:' .. job, mytokens)
      if not inroom then
        local last = tonumber(redis.call('HGET', H, 'a:' .. agent) or '0')
        redis.call('HSET', H, 'a:' .. agent, math.max(last, mytag))
      end
      local ttl = wait + slack + 2 * window
      for _, k in ipairs({R, D, H}) do
        if redis.call('PTTL', k) < ttl then redis.call('PEXPIRE', k, ttl) end
      end
      joined = 1
    elseif inroom then
      redis.call('ZREM', R, job)
      redis.call('ZREM', D, job)
      redis.call('HDEL', H, 'k:' .. job)
    end
  end
  return {0, now, wait, refused, joined}
end
for i = 1, n do
  if amt[i] > 0 then redis.call('HINCRBY', KEYS[i], current, amt[i]) end
  redis.call('PEXPIRE', KEYS[i], window + 2 * bucket_ms)
end
if room then
  if inroom then
    redis.call('ZREM', R, job)
    redis.call('ZREM', D, job)
    redis.call('HDEL', H, 'k:' .. job)
  end
  local v = tonumber(redis.call('HGET', H, 'v') or '0')
  local last = tonumber(redis.call('HGET', H, 'a:' .. agent) or '0')
  redis.call('HSET', H, 'v', math.max(v, mytag), 'a:' .. agent, math.max(last, mytag))
  if redis.call('PTTL', H) < 2 * window + slack then redis.call('PEXPIRE', H, 2 * window + slack) end
end
return {1, now, current}
