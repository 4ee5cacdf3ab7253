"""Failover: hand a job whose provider failed (or whose breaker is open) to its next model.

The chain was fixed at submit by the router. The job goes back to ``queued`` on the next
model's provider queue in one script, fenced by this worker's lease, so the caller, who keeps
reading the same event stream, sees nothing but the answering model's name in the response.
"""

from __future__ import annotations

import asyncio

from celery import Celery

from config.catalog import Catalog, ModelSpec, ModelStatus
from gateway_client.job_store import Claim, JobStore
from gateway_client.request import Priority
from gateway_client.wire import make_envelope
from tasks.message import build_task_message, publish_job, redis_list_for
from tasks.queues import priority_value, queue_name
from workers.control.circuit_breaker import BreakerState, CircuitBreakers


class Failover:
    def __init__(
        self,
        store: JobStore,
        catalog: Catalog,
        breakers: CircuitBreakers,
        app: Celery,
        broker_url: str,
        broker_is_state_redis: bool,
    ) -> None:
        self._store = store
        self._catalog = catalog
        self._breakers = breakers
        self._app = app
        self._broker_url = broker_url
        self._same_redis = broker_is_state_redis

    async def next_model(self, claim: Claim) -> ModelSpec | None:
        """The first model after the current one whose provider is not fenced off."""
        chain = list(claim.chain)
        later = chain[chain.index(claim.model) + 1 :] if claim.model in chain else []
        for model_id in later:
            spec = self._catalog.get(model_id)
            if spec is None or spec.status is ModelStatus.DISABLED:
                continue
            if await self._breakers.state(spec.provider) is BreakerState.OPEN:
                continue
            return spec
        return None

    async def hand_off(self, job_id: str, owner: str, claim: Claim, spec: ModelSpec) -> bool:
        queue = queue_name(spec.provider)
        priority = priority_value(Priority(claim.priority), self._broker_url)
        if self._same_redis:
            message = build_task_message(self._app, job_id, make_envelope(job_id), queue, priority)
            return await self._store.hand_off(
                job_id,
                owner,
                spec.provider,
                spec.model_id,
                queue,
                message,
                redis_list_for(queue, priority),
            )
        moved = await self._store.hand_off(job_id, owner, spec.provider, spec.model_id, queue)
        if moved:
            await asyncio.to_thread(publish_job, self._app, job_id, queue, priority)
        return moved
