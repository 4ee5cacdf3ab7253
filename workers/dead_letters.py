"""Job messages a worker cannot read are set aside here, never guessed at."""

from __future__ import annotations

import json
import time
from typing import Any

from redis.asyncio import Redis

from gateway_client import keys

MAX_DEAD_LETTERS = 10_000
DEAD_LETTER_TTL_S = 7 * 24 * 3600


async def set_aside(redis: Redis, envelope: Any, reason: str, task_id: str | None = None) -> None:
    try:
        body = json.dumps(envelope)[:65536]
    except (TypeError, ValueError):
        body = repr(envelope)[:65536]
    record = json.dumps({"reason": reason, "task_id": task_id, "envelope": body, "at": time.time()})
    async with redis.pipeline(transaction=True) as pipe:
        pipe.lpush(keys.DEAD_LETTERS, record)
        pipe.ltrim(keys.DEAD_LETTERS, 0, MAX_DEAD_LETTERS - 1)
        pipe.expire(keys.DEAD_LETTERS, DEAD_LETTER_TTL_S)
        await pipe.execute()
