-- latency_record: a worker folds the call latencies it measured into the fleet's moving
-- averages, every model in one call: value = value * (1 - weight) + sample * weight.
-- KEYS: the latency hash (model -> average ms).
-- ARGV: weight, keep s, then for each model: its name, how many samples follow, the samples in
--       ms, oldest first.
-- Returns 1.
-- Edge cases:
--   a model's first sample              -> the sample is its average ('%.3f')
--   a model with an average             -> each sample folded in, oldest first
--   several models in one call          -> each model's own average; the hash expires in keep s
--   a model sent with 0 samples         -> its average kept
--   0 samples and no average yet        -> a script error (the caller never sends that)
local w = tonumber(ARGV[1])
local i = 3
while i <= #ARGV do
  local model, count = ARGV[i], tonumber(ARGV[i + 1])
  local value = tonumber(redis.call('HGET', KEYS[1], model))
  for j = i + 2, i + 1 + count do
    local sample = tonumber(ARGV[j])
    if value then value = value * (1 - w) + sample * w else value = sample end
  end
  redis.call('HSET', KEYS[1], model, string.format('%.3f', value))
  i = i + 2 + count
end
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
