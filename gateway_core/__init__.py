"""The contract every part of the L04 gateway shares: errors, messages, request and response,
the wire format, Redis keys and connections, queue names, tokens, redaction, metrics, and the
job's state machine. It imports no other package of the project; all of them build on it.

Users import these names from :mod:`gateway_client`, which re-exports them.
"""

__version__ = "0.1.0"
