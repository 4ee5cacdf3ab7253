"""Workers probe the providers they serve and leave the answer in Redis for ``health_check``.

A producer holds no provider credentials, so it cannot ask a provider itself; the workers can,
with the adapters' own health calls (OpenAI ``/v1/models``, Anthropic, Ollama ``/api/tags``,
the Claude Code executable). Each answer expires after a few intervals, so a provider nobody
serves any more shows as unknown rather than healthy.
"""

from __future__ import annotations

import asyncio
import logging
import time

from redis.asyncio import Redis

from gateway_core import keys
from gateway_core.errors import GatewayError
from workers.providers import ProviderSet

log = logging.getLogger(__name__)

PROBE_INTERVAL_S = 30.0


class ProviderHealthProbe:
    def __init__(self, redis: Redis, providers: ProviderSet, served: list[str]) -> None:
        self._redis = redis
        self._providers = providers
        self._served = served

    async def probe_once(self) -> None:
        for provider in self._served:
            started = time.monotonic()
            try:
                await asyncio.wait_for(self._providers.get(provider).health(), timeout=10)
                fields = {"healthy": "1", "error": ""}
            except (GatewayError, TimeoutError) as exc:
                code = exc.code if isinstance(exc, GatewayError) else "E4202"
                fields = {"healthy": "0", "error": code}
            except Exception as exc:
                fields = {"healthy": "0", "error": type(exc).__name__}
            fields["checked_at"] = repr(time.time())
            fields["ms"] = repr(round((time.monotonic() - started) * 1000, 1))
            key = keys.provider_health(provider)
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.hset(key, mapping=dict(fields))  # type: ignore[arg-type]
                pipe.expire(key, int(PROBE_INTERVAL_S * 3))
                await pipe.execute()

    async def run_forever(self) -> None:
        while True:
            try:
                await self.probe_once()
            except Exception as exc:
                log.warning("provider health probe failed: %s", type(exc).__name__)
            await asyncio.sleep(PROBE_INTERVAL_S)
