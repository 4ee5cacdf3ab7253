"""One process hammering a rate limit; prints each admission as a JSON line (for the tests)."""

import asyncio
import json
import random
import sys
import time

from redis.asyncio import Redis

from workers.control.rate_limiter import Limit, RateLimiter


async def main(url: str, mode: str, seconds: float, window_s: float, capacity: int) -> None:
    redis = Redis.from_url(url)
    limiter = RateLimiter(redis, window_s=window_s, buckets=60)
    key = f"l04:rl:{{mock:mock}}:{mode}"
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        reserved = 500 if mode == "tpm" else 1
        decision = await limiter.admit([Limit(key, capacity, reserved)])
        if not decision.admitted:
            await asyncio.sleep(decision.wait_ms / 1000)
            continue
        used = reserved
        if mode == "tpm":
            used = random.randint(100, 500)
            await limiter.settle([key], decision.bucket, reserved, used)
        print(json.dumps([decision.server_time_ms, used]), flush=True)
    await redis.aclose()


if __name__ == "__main__":
    url, mode, seconds, window, capacity = sys.argv[1:6]
    asyncio.run(main(url, mode, float(seconds), float(window), int(capacity)))
