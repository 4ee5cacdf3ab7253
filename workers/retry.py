"""When to call a provider again: retryable errors only, backing off, never past the deadline."""

from __future__ import annotations

import random

from gateway_core.errors import GatewayError

MAX_CALL_ATTEMPTS = 3
BACKOFF_BASE_S = 0.25
BACKOFF_CAP_S = 8.0
RETRY_AFTER_CAP_S = 60.0


def retry_delay(error: GatewayError, call_attempt: int, time_left: float) -> float | None:
    """Seconds to wait before call number ``call_attempt + 1``, or None to give up.

    Exponential backoff with full jitter; a provider's Retry-After (capped) wins when longer.
    """
    if not error.retryable or call_attempt >= MAX_CALL_ATTEMPTS:
        return None
    delay = random.uniform(0, min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** (call_attempt - 1)))
    if error.retry_after is not None:
        delay = max(delay, min(error.retry_after, RETRY_AFTER_CAP_S))
    if delay >= time_left:
        return None
    return delay
