"""Circuit breakers per provider (or model deployment), their state in Redis for every worker.

    CLOSED ──(failure_threshold consecutive retryable failures)──▶ OPEN
    OPEN ──(recovery_timeout elapsed)──▶ HALF_OPEN: at most `probes` calls let through at once
    HALF_OPEN ──(a probe succeeds)──▶ CLOSED      HALF_OPEN ──(a probe fails)──▶ OPEN again

Every transition is one Lua script on the server's clock, so all workers on all hosts see the
same state at once and exactly ``probes`` calls probe a half-open provider. Only retryable
failures count (a 400 says nothing about the provider's health).
"""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis

from gateway_core.breakers import BreakerState, deployment, read_states
from gateway_core.keys import breaker as breaker_key

__all__ = ["BreakerState", "CircuitBreakers", "Permit", "deployment"]

_PRELUDE = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"""

# KEYS: breaker hashes, the provider's first. ARGV: recovery_ms, probes, probe_ttl_ms.
# A call is allowed when every breaker allows it, asked in order (a breaker after one that refused
# is not asked, so it gives no probe away). Returns {allowed (0/1), state, retry_in_ms, clean}:
# the state and wait of the breaker that refused (or of the last), and clean = 1 when every
# breaker is closed with no failure counted.
_ALLOW = (
    _PRELUDE
    + """
local function allow(key, now)
  local f = redis.call('HMGET', key, 'state', 'opened_at', 'probes', 'failures')
  local state, opened, probing = tonumber(f[1] or 0), tonumber(f[2] or 0), tonumber(f[3] or 0)
  if state == 0 then return 1, 0, 0, tonumber(f[4] or 0) == 0 end
  if state == 2 then
    local reopen_at = opened + tonumber(ARGV[1])
    if now < reopen_at then return 0, 2, reopen_at - now, false end
    redis.call('HSET', key, 'state', 1, 'probes', 0)
    state, probing = 1, 0
  end
  if probing < tonumber(ARGV[2]) then
    redis.call('HINCRBY', key, 'probes', 1)
    redis.call('PEXPIRE', key, tonumber(ARGV[1]) + tonumber(ARGV[3]))
    return 1, 1, 0, false
  end
  return 0, 1, tonumber(ARGV[3]), false
end
local now = now_ms()
local all_clean = 1
local allowed, state, wait, clean
for i = 1, #KEYS do
  allowed, state, wait, clean = allow(KEYS[i], now)
  if not clean then all_clean = 0 end
  if allowed == 0 then return {0, state, wait, 0} end
end
return {1, state, wait, all_clean}
"""
)

# KEYS: breaker hash. ARGV: outcome ('success' | 'failure'), threshold, ttl_ms.
# Returns the state after the report.
_REPORT = (
    _PRELUDE
    + """
local state = tonumber(redis.call('HGET', KEYS[1], 'state') or 0)
if ARGV[1] == 'success' then
  if state ~= 0 or redis.call('HGET', KEYS[1], 'failures') then
    redis.call('DEL', KEYS[1])
  end
  return 0
end
if state == 1 then
  redis.call('HSET', KEYS[1], 'state', 2, 'opened_at', now_ms(), 'probes', 0)
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return 2
end
if state == 2 then return 2 end
local failures = redis.call('HINCRBY', KEYS[1], 'failures', 1)
redis.call('PEXPIRE', KEYS[1], ARGV[3])
if failures >= tonumber(ARGV[2]) then
  redis.call('HSET', KEYS[1], 'state', 2, 'opened_at', now_ms(), 'probes', 0, 'failures', 0)
  return 2
end
return 0
"""
)


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
        self._allow = redis.register_script(_ALLOW)
        self._report = redis.register_script(_REPORT)

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
