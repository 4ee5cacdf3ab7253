"""Admission of one provider call: the agent's quota, then every rate limit, in one decision each.

Limits come from the catalog (a model's ``limits``, an agent's entry under ``[agents]``) and from
the RATE_LIMIT_* defaults (see :meth:`GatewaySettings.default_model_limits`). A call over a rate
limit is not failed: :class:`Deferred` tells the pipeline how long to park the job, and the job
keeps its place in the model's waiting room meanwhile (HIGH before NORMAL before LOW, agents in
turn within a priority). Only a wait that would end past the job's deadline, or a request that
asked to ``fail_fast``, ends in E4401. A spent quota ends in E4402 at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from redis.asyncio import Redis

from config.catalog import Catalog, ModelSpec
from config.settings import GatewaySettings
from gateway_core import keys, metrics
from gateway_core.errors import QuotaExhausted, RateLimited
from gateway_core.response import TokenUsage
from workers.control.quota import QuotaRefusal, QuotaReservation, Quotas
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
    quota: QuotaReservation | None = None


class Admission:
    def __init__(self, redis: Redis, catalog: Catalog, settings: GatewaySettings) -> None:
        self._catalog = catalog
        self._settings = settings
        self._limiter = RateLimiter(redis, window_s=settings.rate_limit_window)
        self._quotas = Quotas(redis)

    def limits(self, spec: ModelSpec, agent: str, tokens: int) -> dict[str, Limit]:
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
                key(spec.provider, spec.model_id, "tpm"), model_tpm, tokens, shared=True, kind="t"
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
        return found

    def needs_token_count(self, spec: ModelSpec, agent: str) -> bool:
        """Whether any limit or quota applies (else counting the prompt is wasted work)."""
        return bool(self.limits(spec, agent, 0)) or self._catalog.agent_limits(agent) is not None

    async def admit(
        self,
        job_id: str,
        request: AdmittedRequest,
        spec: ModelSpec,
        *,
        priority: str,
        deadline: float,
        prompt_tokens: int,
    ) -> Ticket:
        """A ticket for the call, or :class:`Deferred`, or E4401 / E4402."""
        estimate = prompt_tokens + request.max_tokens
        quota = await self._reserve_quota(request.agent_did, spec, prompt_tokens, request)
        limits = self.limits(spec, request.agent_did, estimate)
        if not limits:
            return Ticket(quota=quota)
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
            return Ticket(decision.bucket, token_keys, estimate, quota)
        if quota is not None:
            await self._quotas.settle(quota, 0, 0.0)
        name = next(n for n, limit in named if limit.key == decision.short)
        capacity = limits[name].capacity
        _refused(request.agent_did)
        if decision.never:
            raise RateLimited(
                f"the request needs more than the whole {name} limit of {spec.model_id} "
                f"({estimate} > {capacity}): lower max_tokens",
                retryable=False,
                details={"limit": name, "capacity": capacity, "model_id": spec.model_id},
            )
        if not decision.waiting:
            reason = "fail_fast was asked" if request.fail_fast else "the deadline is too near"
            raise RateLimited(
                f"over the {name} limit of {spec.model_id} ({capacity}); {reason}",
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
        if ticket.quota is not None:
            await self._quotas.settle(ticket.quota, used, cost)

    async def _reserve_quota(
        self, agent: str, spec: ModelSpec, prompt_tokens: int, request: AdmittedRequest
    ) -> QuotaReservation | None:
        own = self._catalog.agent_limits(agent)
        if own is None or (own.token_quota is None and own.cost_quota is None):
            return None
        estimate = prompt_tokens + request.max_tokens
        reserved = await self._quotas.reserve(
            agent,
            own.quota_period_s,
            own.token_quota,
            own.cost_quota,
            estimate,
            spec.cost(prompt_tokens, request.max_tokens),
        )
        if isinstance(reserved, QuotaRefusal):
            _refused(agent)
            unit = "USD" if reserved.which == "cost" else "tokens"
            raise QuotaExhausted(
                f"agent {agent}'s {reserved.which} quota is exhausted "
                f"({reserved.used:g} of {reserved.quota:g} {unit} used, this request needs up "
                f"to {estimate} tokens); it resets in {reserved.resets_in_s} s",
                details={
                    "quota": reserved.which,
                    "used": reserved.used,
                    "limit": reserved.quota,
                    "resets_in": reserved.resets_in_s,
                },
            )
        return reserved
