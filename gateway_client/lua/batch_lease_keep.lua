-- batch_lease_keep: renews or releases a batch driver's lease, only for the holder's token.
-- KEYS: the lease. ARGV: the holder's token, milliseconds to renew for (0: release).
-- Returns 1 when renewed or released, 0 when the lease is not this token's.
-- Edge cases:
--   lease held by the token, renew        -> 1: expiry set to ARGV[2] ms from now
--   lease held by the token, release      -> 1: the lease deleted
--   lease held by another token           -> 0; its holder's lease untouched
--   no lease (lapsed)                     -> 0; nothing written (the holder has lost it)
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
if tonumber(ARGV[2]) > 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
else
  redis.call('DEL', KEYS[1])
end
return 1
