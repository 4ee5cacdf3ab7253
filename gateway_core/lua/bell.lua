-- A queue list's bell (gateway_core.keys.queue_bell): one token per message pushed, at most
-- QUEUE_BELL_CAP (gateway_core.queues) kept. A worker with free slots waits on its lists' bells
-- with BRPOP, so an idle worker wakes when a message arrives without polling the lists; a lost
-- or extra token costs one empty take, never a message. The key is derived here, not passed in
-- as a key: like the queue lists themselves, bells are for one Redis (or Sentinel), not Cluster.
local function ring_bell(list)
  local bell = 'l04:bell:' .. list
  redis.call('LPUSH', bell, '1')
  redis.call('LTRIM', bell, 0, 63)
end
