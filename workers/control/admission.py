"""Admission of one provider call: the quotas, then every rate limit, in one decision each.

Limits come from the catalog (a model's ``limits``, an agent's entry under ``[agents]``), from
the RATE_LIMIT_* defaults (see :meth:`GatewaySettings.default_model_limits`) and from the virtual
key the job was submitted with, if any (:mod:`gateway_core.virtual_keys`: its requests and
tokens per minute, one bucket per key across all models, and its token and cost quotas). A key
without limits adds none. A call over a rate
limit is not failed: :class:`Deferred` tells the pipeline how long to park the job, and the job
keeps its place in the model's waiting room meanwhile (HIGH before NORMAL before LOW, agents in
turn within a priority). Only a wait that would end past the job's deadline, or a request that
asked to ``fail_fast``, ends in E4401. A spent quota ends in E4402 at once.

A job's key is read from Redis (kept a second per process, :class:`KeyCache`). A key revoked or
expired after the job was submitted does not stop it: the job was admitted at submit, and the
front door refuses the key's new requests. A key whose record is gone fails the job with E4408.
The key's ``models`` are applied at submit (the producer leaves out of the chain every model the
key may not use); a call to one anyway is refused here with E4409 before the provider is called.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from redis.asyncio import Redis

from config.catalog import Catalog, ModelSpec
from config.settings import GatewaySettings
from gateway_core import keys, metrics
from gateway_core.errors import KeyRefused, QuotaExhausted, RateLimited
from gateway_core.response import TokenUsage
from gateway_core.virtual_keys import KeyCache, VirtualKey, VirtualKeyStore
from workers.control.quota import QuotaReservation, Quotas
from workers.control.rate_limiter import Limit, RateLimiter, Waiter

PRIORITY_BANDS = {"high": 0, "normal": 1, "low": 2}


def _refused(agent_did: str) -> None:
    metrics.RATE_LIMIT_REJECTIONS.labels(metrics.agent_label(agent_did), "refused").inc()


class AdmittedRequest(Protocol):
    """What admission reads of a request: a chat request (``InferenceRequest``) or an
    embeddings one (``EmbeddingRequest``, whose ``max_tokens`` is 0: it writes no tokens)."""

    @property
    def agent_did(self) -> str: ...

    @property
    def max_tokens(self) -> int: ...

    @property
    def fail_fast(self) -> bool: ...


class Deferred(Exception):
    """The call is over a rate limit: park the job for ``wait_ms`` and try again."""

    def __init__(self, wait_ms: int, limit: str, agent_did: str) -> None:
        super().__init__(f"over {limit}, wait {wait_ms} ms")
        self.wait_ms = wait_ms
        self.limit = limit
        self.agent_did = agent_did


@dataclass(frozen=True, slots=True)
class Ticket:
    """An admitted call: what it reserved, to settle once the provider answered."""

    bucket: int = 0
    token_keys: tuple[str, ...] = ()
    reserved_tokens: int = 0
    quotas: tuple[QuotaReservation, ...] = ()  # the agent's, the key's


class Admission:
    def __init__(self, redis: Redis, catalog: Catalog, settings: GatewaySettings) -> None:
        self._catalog = catalog
        self._settings = settings
        self._limiter = RateLimiter(redis, window_s=settings.rate_limit_window)
        self._quotas = Quotas(redis)
        self._keys = KeyCache(VirtualKeyStore(redis, typed_errors=False))

    async def virtual_key(self, key_id: str | None) -> VirtualKey | None:
        """The record of the job's key (None without one), or E4408 if it no longer exists."""
        if not key_id:
            return None
        key = await self._keys.get(key_id)
        if key is None:
            raise KeyRefused(
                f"the job's virtual key {key_id} does not exist", details={"key_id": key_id}
            )
        return key

    def limits(
        self, spec: ModelSpec, agent: str, tokens: int, vkey: VirtualKey | None = None
    ) -> dict[str, Limit]:
        """The limits a call of ``tokens`` (estimated) takes from, by a readable name."""
        default_rpm, default_tpm = self._settings.default_model_limits()
        model_rpm = spec.limits.requests_per_minute or default_rpm
        model_tpm = spec.limits.tokens_per_minute or default_tpm
        found: dict[str, Limit] = {}
        key = keys.rate_limit
        if model_rpm:
            found["model requests per minute"] = Limit(
                key(spec.provider, spec.model_id, "rpm"), model_rpm, 1, shared=True, kind="r"
            )
        if model_tpm:
            found["model tokens per minute"] = Limit(
                key(spec.provider, spec.model_id, "tpm"),
                model_tpm,
                tokens,
                shared=True,
                kind="t",
            )
        own = self._catalog.agent_limits(agent)
        if own and own.requests_per_minute:
            found["agent requests per minute"] = Limit(
                key(spec.provider, spec.model_id, "rpm", agent), own.requests_per_minute, 1
            )
        if own and own.tokens_per_minute:
            found["agent tokens per minute"] = Limit(
                key(spec.provider, spec.model_id, "tpm", agent), own.tokens_per_minute, tokens
            )
        if vkey is not None and vkey.rpm:
            found["key requests per minute"] = Limit(
                keys.key_rate_limit(vkey.id, "rpm"), vkey.rpm, 1
            )
        if vkey is not None and vkey.tpm:
            found["key tokens per minute"] = Limit(
                keys.key_rate_limit(vkey.id, "tpm"), vkey.tpm, tokens
            )
        return found

    def needs_token_count(self, spec: ModelSpec, agent: str, key: VirtualKey | None = None) -> bool:
        """Whether any limit or quota applies (else counting the prompt is wasted work)."""
        return (
            bool(self.limits(spec, agent, 0, key))
            or self._catalog.agent_limits(agent) is not None
            or (key is not None and key.has_quota)
        )

    async def admit(
        self,
        job_id: str,
        request: AdmittedRequest,
        spec: ModelSpec,
        *,
        priority: str,
        deadline: float,
        prompt_tokens: int,
        key: VirtualKey | None = None,
    ) -> Ticket:
        """A ticket for the call, or :class:`Deferred`, or E4401 / E4402 (E4409: a model the
        job's ``key`` may not use)."""
        if key is not None:
            key.check_model(spec.model_id, *spec.aliases)
        estimate = prompt_tokens + request.max_tokens
        quotas = await self._reserve_quotas(request.agent_did, key, spec, prompt_tokens, request)
        limits = self.limits(spec, request.agent_did, estimate, key)
        if not limits:
            return Ticket(quotas=quotas)
        named = list(limits.items())
        decision = await self._limiter.admit(
            [limit for _, limit in named],
            Waiter(
                room=keys.waiting_room(spec.provider, spec.model_id),
                job_id=job_id,
                band=PRIORITY_BANDS.get(priority, 1),
                agent=request.agent_did,
                join=not request.fail_fast,
                deadline_ms=int(deadline * 1000),
            ),
        )
        if decision.admitted:
            token_keys = tuple(limit.key for name, limit in named if "tokens" in name)
            return Ticket(decision.bucket, token_keys, estimate, quotas)
        for quota in quotas:
            await self._quotas.settle(quota, 0, 0.0)
        name = next(n for n, limit in named if limit.key == decision.short)
        capacity = limits[name].capacity
        whose = f"key {key.id}" if key is not None and name.startswith("key ") else spec.model_id
        _refused(request.agent_did)
        if decision.never:
            raise RateLimited(
                f"the request needs more than the whole {name} limit of {whose} "
                f"({estimate} > {capacity}): lower max_tokens",
                retryable=False,
                details={"limit": name, "capacity": capacity, "model_id": spec.model_id},
            )
        if not decision.waiting:
            reason = "fail_fast was asked" if request.fail_fast else "the deadline is too near"
            raise RateLimited(
                f"over the {name} limit of {whose} ({capacity}); {reason}",
                details={
                    "limit": name,
                    "capacity": capacity,
                    "model_id": spec.model_id,
                    "retry_after": decision.wait_ms / 1000,
                },
            )
        raise Deferred(decision.wait_ms, name, request.agent_did)

    async def settle(self, ticket: Ticket, usage: TokenUsage | None, cost: float) -> None:
        """Replace the reservations by the call's real usage (nothing used when it failed)."""
        used = usage.total_tokens if usage is not None else 0
        if ticket.token_keys:
            await self._limiter.settle(
                list(ticket.token_keys), ticket.bucket, ticket.reserved_tokens, used
            )
        for quota in ticket.quotas:
            await self._quotas.settle(quota, used, cost)

    async def _reserve_quotas(
        self,
        agent: str,
        key: VirtualKey | None,
        spec: ModelSpec,
        prompt_tokens: int,
        request: AdmittedRequest,
    ) -> tuple[QuotaReservation, ...]:
        """Reserve the call against the agent's quota and the key's; E4402 if either is spent
        (nothing stays reserved then)."""
        owners: list[tuple[str, str, int, int | None, float | None]] = []
        own = self._catalog.agent_limits(agent)
        if own is not None and (own.token_quota is not None or own.cost_quota is not None):
            owners.append(
                (agent, f"agent {agent}", own.quota_period_s, own.token_quota, own.cost_quota)
            )
        if key is not None and key.has_quota:
            owners.append(
                (
                    keys.key_scope(key.id),
                    f"key {key.id}",
                    key.quota_period_s,
                    key.token_quota,
                    key.cost_quota,
                )
            )
        estimate = prompt_tokens + request.max_tokens
        reserved: list[QuotaReservation] = []
        for owner, who, period_s, token_quota, cost_quota in owners:
            outcome = await self._quotas.reserve(
                owner,
                period_s,
                token_quota,
                cost_quota,
                estimate,
                spec.cost(prompt_tokens, request.max_tokens),
            )
            if isinstance(outcome, QuotaReservation):
                reserved.append(outcome)
                continue
            for quota in reserved:
                await self._quotas.settle(quota, 0, 0.0)
            _refused(agent)
            unit = "USD" if outcome.which == "cost" else "tokens"
            details: dict[str, object] = {
                "quota": outcome.which,
                "used": outcome.used,
                "limit": outcome.quota,
                "resets_in": outcome.resets_in_s,
            }
            if key is not None and owner == keys.key_scope(key.id):
                details["key_id"] = key.id
            raise QuotaExhausted(
                f"{who}'s {outcome.which} quota is exhausted "
                f"({outcome.used:g} of {outcome.quota:g} {unit} used, this request needs up "
                f"to {estimate} tokens); it resets in {outcome.resets_in_s} s",
                details=details,
            )
        return tuple(reserved)
