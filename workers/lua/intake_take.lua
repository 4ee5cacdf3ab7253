-- intake_take: a worker takes up to N messages off its queues and records them as unacknowledged,
-- in one atomic step, so that no message is ever held only in a process's memory.
-- KEYS: kombu's unacked hash, its unacked_index sorted set, the poison list, then the queues'
--       priority lists, highest priority first (kombu's order: every queue's step 0, then 5...).
-- ARGV: the most messages to take, the time to record them at (seconds, the worker's clock, as
--       kombu's QoS.append records it), then the queue name of each list (same order as KEYS[4..]).
-- Returns a flat array: queue, delivery tag, message ... for the messages taken (oldest first
--   within a list, lists in KEYS order); a value that is no kombu message is moved to the poison
--   list instead and returned as '', '', value (the worker sets it aside in l04:dlq, then removes
--   it). A message Redis's JSON reader accepts and Python's refuses (cjson takes 0x10, 1., a raw
--   TAB in a string...) is taken; the worker's screen sets it aside and removes it by its tag.
-- Each message taken is kombu's unacked entry [message, exchange, routing_key] under its delivery
-- tag, and the tag scored with the time in unacked_index: exactly what kombu's QoS.append writes,
-- so that kombu's own restore puts it back if the worker dies before acknowledging it.
-- Edge cases:
--   empty lists                                  -> {}; nothing written
--   more messages than N                         -> N taken, the rest stay in order
--   a higher and a lower priority list           -> the higher one's messages first
--   N = 0                                        -> {}; nothing taken
--   a value that is not JSON                     -> to the poison list, returned as '', value
--   JSON without properties.delivery_tag         -> to the poison list
--   delivery_info without exchange / routing_key -> to the poison list
--   a value over the size limit                  -> to the poison list, not decoded
--   more than 100 poison values                  -> the first 100; the rest wait for the next call
--   unacked, its index or the poison list of another type -> an error before anything is taken
--                                                    (a script is not rolled back: a message
--                                                    popped and then not written would be lost)
local MAX_BYTES = 1048576
local MAX_POISON = 100
local EXPECTED = {'hash', 'zset', 'list'}
for i = 1, 3 do
  local kind = redis.call('TYPE', KEYS[i])['ok']
  if kind ~= 'none' and kind ~= EXPECTED[i] then
    return redis.error_reply('WRONGTYPE intake_take: ' .. KEYS[i] .. ' is a ' .. kind)
  end
end
local limit = tonumber(ARGV[1])
local now = ARGV[2]
local taken, poisoned, out = 0, 0, {}

local function envelope(raw)
  if #raw > MAX_BYTES then return nil end
  local ok, msg = pcall(cjson.decode, raw)
  if not ok or type(msg) ~= 'table' then return nil end
  local props = msg['properties']
  if type(props) ~= 'table' then return nil end
  local tag, info = props['delivery_tag'], props['delivery_info']
  if type(tag) ~= 'string' or tag == '' or type(info) ~= 'table' then return nil end
  local exchange, routing_key = info['exchange'], info['routing_key']
  if type(exchange) ~= 'string' or type(routing_key) ~= 'string' then return nil end
  return tag, exchange, routing_key
end

for i = 4, #KEYS do
  local queue = ARGV[i - 1]
  while taken < limit and poisoned < MAX_POISON do
    local raw = redis.call('RPOP', KEYS[i])
    if not raw then break end
    local tag, exchange, routing_key = envelope(raw)
    if tag then
      redis.call('HSET', KEYS[1], tag,
                 '[' .. raw .. ',' .. cjson.encode(exchange) .. ',' .. cjson.encode(routing_key) .. ']')
      redis.call('ZADD', KEYS[2], now, tag)
      out[#out + 1] = queue
      out[#out + 1] = tag
      out[#out + 1] = raw
      taken = taken + 1
    else
      redis.call('RPUSH', KEYS[3], raw)
      poisoned = poisoned + 1
      out[#out + 1] = ''
      out[#out + 1] = ''
      out[#out + 1] = raw
    end
  end
  if taken >= limit or poisoned >= MAX_POISON then break end
end
return out
