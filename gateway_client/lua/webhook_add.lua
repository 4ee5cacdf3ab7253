-- webhook_add: adds one webhook event to the outbox (gateway_client.webhook_outbox.WebhookOutbox):
-- a batch's end, or any change whose own script does not include webhook.lua.
-- KEYS: none (the outbox and its bell are spelled in webhook.lua). ARGV: event type, object
-- id, virtual key id ('' for none).
-- Returns 1.
-- Edge cases:
--   a new event                  -> 1: in the outbox due now, the bell rung
--   the same event added twice   -> 1: one event id, delivered once or twice (once when both
--                                   came in the same second: one member)
-- include: clock
-- include: webhook
webhook_enqueue(ARGV[1], ARGV[2], ARGV[3])
return 1
