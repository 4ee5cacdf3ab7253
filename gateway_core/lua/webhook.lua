-- Helpers that add events to the webhook outbox (gateway_core.keys.WEBHOOK_OUTBOX; the Python
-- side is gateway_core/webhooks.py). Needs clock.lua before it. An event is OpenAI's thin one:
-- {"id": "evt_...", "object": "event", "created_at": <s>, "type": "...", "data": {"id": "..."}}.
-- Its id is derived from its type and object (one event of each type per object), so an event
-- added twice is one webhook-id at the receiver. The outbox member also names the virtual key
-- ("k", '' for none): the deliverer sends the event to the global URL and to that key's own.
-- The keys are spelled here, not passed in: like the queue bells, for one Redis, not Cluster.
local function webhook_enqueue(event_type, object_id, key_id)
  local created = now_whole_seconds()
  local event = cjson.encode({
    id = 'evt_' .. string.sub(redis.sha1hex(event_type .. '\n' .. object_id), 1, 32),
    object = 'event', created_at = created, type = event_type, data = {id = object_id}})
  local member = cjson.encode({e = event, k = key_id or '', n = 0, f = now_ms()})
  redis.call('ZADD', 'l04:webhooks:outbox', now_ms(), member)
  redis.call('LPUSH', 'l04:webhooks:bell', '1')
  redis.call('LTRIM', 'l04:webhooks:bell', 0, 63)
  redis.call('EXPIRE', 'l04:webhooks:bell', 60)
end

-- A job that ends with a `notify` field ("response:<object id>", set at creation) adds its
-- event: succeeded -> response.completed (response.incomplete when its answer stopped at the
-- token limit, finish_reason "length"); failed and expired -> response.failed; cancelled ->
-- response.cancelled. A job without the field adds nothing.
local function webhook_job_ended(job, state_to, event_json)
  local f = redis.call('HMGET', job, 'notify', 'key_id')
  if not f[1] then return end
  local kind, object_id = string.match(f[1], '^(%a+):(.+)$')
  if kind ~= 'response' then return end
  local event_type = 'response.failed'
  if state_to == 'succeeded' then
    event_type = 'response.completed'
    local ok, decoded = pcall(cjson.decode, event_json)
    if ok and type(decoded) == 'table' and type(decoded.response) == 'table'
        and decoded.response.finish_reason == 'length' then
      event_type = 'response.incomplete'
    end
  elseif state_to == 'cancelled' then
    event_type = 'response.cancelled'
  end
  webhook_enqueue(event_type, object_id, f[2])
end
