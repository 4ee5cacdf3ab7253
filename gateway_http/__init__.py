"""The HTTP front door (``l04 serve``): OpenAI- and Anthropic-compatible APIs over the fleet.

A producer like any other: every request becomes a job through :mod:`gateway_client`, and the
server keeps no state of its own (keys, idempotency, limits and answers all live in Redis), so
any number of servers on any hosts answer the same requests the same way.
"""
