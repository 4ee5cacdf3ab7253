-- orphan_candidates: the orphan sweeper reads the jobs queued at least min age ago from the index
-- of queued jobs, a page at a time, oldest first. Pages go by rank (no scores to format, so 20
-- times cheaper than ZSCAN), and each starts after the previous page's last job where that job
-- is now: claims that take older jobs out meanwhile skip nothing.
-- KEYS: the index of queued jobs.
-- ARGV: min age ms, the previous page's last job ('' for the first page), its score, how many.
-- Returns {the page's last score, job id, ...}, or {''} when no job is left to read.
-- Edge cases:
--   the first page                        -> the oldest jobs queued at least min age ago
--   a later page, its last job still there -> the jobs after it
--   a later page, its last job gone (claimed) -> from the first job of its score on: some
--                                             read again, none skipped
--   no job (left) queued long enough      -> {''}
-- include: clock
local old_enough = redis.call('ZCOUNT', KEYS[1], '-inf', now_ms() - tonumber(ARGV[1]))
local start = 0
if ARGV[2] ~= '' then
  start = redis.call('ZRANK', KEYS[1], ARGV[2])
  if start then
    start = start + 1
  else
    start = redis.call('ZCOUNT', KEYS[1], '-inf', '(' .. ARGV[3])
  end
end
local stop = math.min(start + tonumber(ARGV[4]), old_enough) - 1
if stop < start then return {''} end
local page = redis.call('ZRANGE', KEYS[1], start, stop)
table.insert(page, 1, redis.call('ZSCORE', KEYS[1], page[#page]))
return page
