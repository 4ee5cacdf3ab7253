-- orphan_scan: the orphan sweeper strikes off the jobs whose message it finds, one chunk of a
-- queue list or of kombu's unacknowledged messages at a time, so that no call holds Redis long.
-- A message names its job in headers.id (tasks/message.py; kombu's own publish writes the same
-- envelope): the first "id" key of its JSON (the body before it is base64, no quote in it);
-- kombu keeps a delivered message in `unacked` as [message, exchange, routing key].
-- KEYS: the sweep's set of jobs not seen yet, a queue list or kombu's `unacked` hash.
-- ARGV: 'list' or 'hash', where to start (a list index from the head, or an HSCAN cursor), how
--       many values to read (at most 5000).
-- Returns {where to go on ('' when the list or hash is read to its end), values read,
--          jobs still not seen}.
-- Edge cases:
--   a list's message of a job not seen yet   -> the job struck off
--   a value of another job, or no message     -> nothing changes
--   the list read to its end (fewer than asked, or none) -> ''
--   the unacked hash (values [message, exchange, routing key]) -> its jobs struck off; the
--                                               next cursor, '' at the end
local ids, values, nxt = {}, {}, ''
local count = tonumber(ARGV[3])
if ARGV[1] == 'list' then
  local start = tonumber(ARGV[2])
  values = redis.call('LRANGE', KEYS[2], start, start + count - 1)
  if #values == count then nxt = tostring(start + count) end
else
  local reply = redis.call('HSCAN', KEYS[2], ARGV[2], 'COUNT', count)
  if reply[1] ~= '0' then nxt = reply[1] end
  for i = 2, #reply[2], 2 do table.insert(values, reply[2][i]) end
end
for _, value in ipairs(values) do
  -- json.dumps's own spacing, found by a plain search (a pattern costs 8 times as much); any
  -- other spacing by the pattern.
  local _, at = string.find(value, '"id": "', 1, true)
  local id
  if at then
    id = string.match(value, '^([^"\\]+)"', at + 1)
  else
    id = string.match(value, '"id"%s*:%s*"([^"\\]+)"')
  end
  if id then table.insert(ids, id) end
end
for i = 1, #ids, 1000 do
  redis.call('SREM', KEYS[1], unpack(ids, i, math.min(i + 999, #ids)))
end
return {nxt, #values, redis.call('SCARD', KEYS[1])}
