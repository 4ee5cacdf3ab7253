-- batch_record: stores one line's answer of a batch, once: the first answer wins, so a resumed
-- or repeated run cannot write a line twice.
-- KEYS: the batch record, its done hash (line index -> output line).
-- ARGV: line index, output line, the count to raise ('completed' | 'failed'), ttl s.
-- Returns 1 when this call stored the line, 0 when it had an answer or the batch is gone.
-- Edge cases:
--   line not answered yet              -> 1: line stored, the count + 1; the record and done
--                                         expire in ttl (the batch was touched)
--   line answered already              -> 0; nothing changes
--   no batch record (expired, deleted) -> 0; nothing written (no record of a count alone)
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if redis.call('HSETNX', KEYS[2], ARGV[1], ARGV[2]) == 0 then return 0 end
redis.call('HINCRBY', KEYS[1], ARGV[3], 1)
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[4])
return 1
