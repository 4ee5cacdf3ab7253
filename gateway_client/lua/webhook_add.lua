-- webhook_add: adds one webhook event to the outbox (gateway_core.webhooks.WebhookOutbox.add):
-- a batch's end, or any change whose own script does not include webhook.lua.
-- KEYS: none (the outbox and its bell are spelled in webhook.lua). ARGV: event type, object
-- id, virtual key id ('' for none).
-- Returns 1.
-- Edge cases:
--   a new event                  -> 1: in the outbox due now, the bell rung
--   the same event added twice   -> 1: two deliveries of one event id (at least once)
-- include: clock
-- include: webhook
webhook_enqueue(ARGV[1], ARGV[2], ARGV[3])
return 1
