"""Circuit breakers per provider (or model deployment), their state in Redis for every worker.

    CLOSED ──(failure_threshold consecutive retryable failures)──▶ OPEN
    OPEN ──(recovery_timeout elapsed)──▶ HALF_OPEN: at most `probes` calls let through at once
    HALF_OPEN ──(a probe succeeds)──▶ CLOSED      HALF_OPEN ──(a probe fails)──▶ OPEN again

Every transition is one Lua script on the server's clock (``workers/lua/breaker_allow.lua`` and
``breaker_report.lua``), so all workers on all hosts see the same state at once and exactly
``probes`` calls probe a half-open provider. Only retryable failures count (a 400 says nothing
about the provider's health).
"""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis

from gateway_core.breakers import BreakerState, deployment, read_states
from gateway_core.keys import breaker as breaker_key
from gateway_core.lua_scripts import register


@dataclass(frozen=True, slots=True)
class Permit:
    allowed: bool
    state: BreakerState
    retry_in_ms: int = 0
    # Closed with no failure counted: a success has nothing to reset, so it need not be reported
    # (one Redis call fewer per job in the common case).
    clean: bool = False


class CircuitBreakers:
    def __init__(
        self,
        redis: Redis,
        failure_threshold: int = 5,
        recovery_timeout_s: float = 60.0,
        probes: int = 1,
    ) -> None:
        self._redis = redis
        self.failure_threshold = failure_threshold
        self.recovery_ms = int(recovery_timeout_s * 1000)
        self.probes = probes
        # A probe that never reports (its worker died) frees its place after this long.
        self.probe_ttl_ms = max(1000, self.recovery_ms)
        self._allow = register(redis, "workers", "breaker_allow")
        self._report = register(redis, "workers", "breaker_report")

    async def allow(self, *targets: str) -> Permit:
        """May a call go through every one of ``targets``' breakers? One round trip."""
        raw = await self._allow(
            keys=[breaker_key(t) for t in targets],
            args=[self.recovery_ms, self.probes, self.probe_ttl_ms],
        )
        return Permit(bool(int(raw[0])), BreakerState(int(raw[1])), int(raw[2]), raw[3] == 1)

    async def record(self, target: str, success: bool) -> BreakerState:
        ttl = self.recovery_ms * 10 + 60_000
        state = await self._report(
            keys=[breaker_key(target)],
            args=["success" if success else "failure", self.failure_threshold, ttl],
        )
        return BreakerState(int(state))

    async def state(self, target: str) -> BreakerState:
        return (await read_states(self._redis, [target]))[target]

    # A model deployment has a breaker of its own beside its provider's: one failing model opens
    # its own breaker without taking the provider's healthy models down with it, while failures
    # across the provider's models still open the provider's.

    async def allow_call(self, provider: str, model_id: str) -> Permit:
        """A call goes through only when the provider's and the deployment's breakers allow it."""
        return await self.allow(provider, deployment(provider, model_id))

    async def record_call(self, provider: str, model_id: str, success: bool) -> None:
        await self.record(provider, success)
        await self.record(deployment(provider, model_id), success)

    async def is_open(self, provider: str, model_id: str) -> bool:
        states = await read_states(self._redis, [provider, deployment(provider, model_id)])
        return BreakerState.OPEN in states.values()
