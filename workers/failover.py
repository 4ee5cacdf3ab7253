"""Failover: hand a job whose provider failed (or whose breaker is open) to its next model.

The chain was fixed at submit by the router. The job goes back to ``queued`` on the next
model's provider queue in one script, fenced by this worker's lease, so the caller, who keeps
reading the same event stream, sees nothing but the answering model's name in the response.
"""

from __future__ import annotations

from config.catalog import Catalog, ModelSpec, ModelStatus
from gateway_core.queues import queue_name
from workers.control.circuit_breaker import CircuitBreakers
from workers.job_store import Claim, WorkerJobStore
from workers.requeue import Requeue


class Failover:
    def __init__(
        self, store: WorkerJobStore, catalog: Catalog, breakers: CircuitBreakers, requeue: Requeue
    ) -> None:
        self._store = store
        self._catalog = catalog
        self._breakers = breakers
        self._requeue = requeue

    async def next_model(self, claim: Claim) -> ModelSpec | None:
        """The first model after the current one whose provider is not fenced off."""
        chain = list(claim.chain)
        later = chain[chain.index(claim.model) + 1 :] if claim.model in chain else []
        for model_id in later:
            spec = self._catalog.get(model_id)
            if spec is None or spec.status is ModelStatus.DISABLED:
                continue
            if await self._breakers.is_open(spec.provider, spec.model_id):
                continue
            return spec
        return None

    async def hand_off(
        self, job_id: str, owner: str, claim: Claim, spec: ModelSpec, reason: str = ""
    ) -> bool:
        """``reason``: the error code that made the job fail over (for its timeline)."""
        queue = queue_name(spec.provider)
        message, target = self._requeue.message(job_id, spec.provider, claim.priority)
        moved = await self._store.hand_off(
            job_id, owner, spec.provider, spec.model_id, queue, message, target, reason
        )
        if moved and not self._requeue.in_script:
            await self._requeue.publish(job_id, spec.provider, claim.priority)
        return moved
