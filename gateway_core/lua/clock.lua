-- The Redis server's clock: one clock for every worker and producer on every host.
local function now_seconds()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function now_whole_seconds()
  return tonumber(redis.call('TIME')[1])
end
