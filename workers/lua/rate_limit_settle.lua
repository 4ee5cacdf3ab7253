-- rate_limit_settle: replaces a token reservation by the tokens the call really used, in the
-- sub-bucket the reservation went to.
-- KEYS: the token-limit hashes of the reservation. ARGV: bucket, delta (used - reserved).
-- Returns 1.
-- Edge cases:
--   bucket present, used less (delta < 0)  -> its count lowered by the difference
--   bucket present, used more (delta > 0)  -> its count raised
--   the count falls to 0 or below          -> the bucket's field deleted
--   bucket gone (left the window, or expired) -> nothing written (not brought back)
for _, key in ipairs(KEYS) do
  if redis.call('HEXISTS', key, ARGV[1]) == 1 then
    local left = redis.call('HINCRBY', key, ARGV[1], ARGV[2])
    if left <= 0 then redis.call('HDEL', key, ARGV[1]) end
  end
end
return 1
