-- webhook_settle: a deliverer ends its turn with a delivery it took (webhook_claim): removes it
-- and adds what is left to do, each (member, due in ms) a retry of one target.
-- KEYS: the outbox, its bell (keys.WEBHOOK_BELL). ARGV: the member taken, then pairs of (ms from now, new member).
-- Returns 1 when the taken member was still there (what is left was added), 0 when it was not:
-- another deliverer took it after this one's lease lapsed and settles it itself.
-- Edge cases:
--   delivered to every target           -> ARGV holds the member only: removed, 1
--   some targets failed                 -> removed, one retry each added, due then, 1; the bell
--                                          rung (an idle deliverer sees the new due time)
--   gone (settled by another)           -> 0; nothing added (one retry schedule per delivery)
-- include: clock
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then return 0 end
local now = now_ms()
for i = 2, #ARGV, 2 do
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[i]), ARGV[i + 1])
end
if #ARGV > 1 then
  redis.call('LPUSH', KEYS[2], '1')
  redis.call('LTRIM', KEYS[2], 0, 63)
  redis.call('EXPIRE', KEYS[2], 60)
end
return 1
