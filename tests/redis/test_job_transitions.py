"""Every transition of a job's state machine and each of its refusals, driven through the two
job stores (the producer's and the worker's) against a real redis-server, with no worker.

:data:`gateway_core.job_states.TRANSITIONS` says which transition may start from which state;
the table-driven test below tries each transition from every state and checks it against that
table, so the table and the scripts cannot drift apart.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import pytest
from redis.asyncio import Redis

from gateway_client.job_store import JobStore
from gateway_core import keys
from gateway_core.job_states import (
    TRANSITIONS,
    ClaimOutcome,
    CreateOutcome,
    FinishOutcome,
    JobState,
    OrphanOutcome,
)
from gateway_core.redis_pool import make_redis
from workers.job_store import WorkerJobStore

LEASE_MS = 5_000
RESULT = {"type": "result", "response": {}}
CANCELLED = {"type": "error", "error": {"code": "E4405", "message": "cancelled"}}


@dataclass
class Stores:
    redis: Redis
    producer: JobStore
    worker: WorkerJobStore

    async def state(self, job_id: str) -> str:
        return (await self.producer.status(job_id)).get("state", "")

    async def field(self, job_id: str, name: str) -> str:
        return (await self.producer.status(job_id)).get(name, "")

    async def lease(self, job_id: str) -> bytes | None:
        value: bytes | None = await self.redis.get(keys.job_lease(job_id))
        return value

    async def events(self, job_id: str) -> list[dict[str, Any]]:
        return [e.data for e in await self.producer.events_after(job_id)]

    async def create(self, job_id: str, deadline_in: float = 60.0, **fields: str) -> None:
        created = await self.producer.create(
            job_id,
            int((time.time() + 600) * 1000),
            {
                "request": '{"messages": []}',
                "provider": "mock",
                "model": "mock",
                "stream": "0",
                "deadline": repr(time.time() + deadline_in),
                "priority": "normal",
                **fields,
            },
            queue_lists=[],
            max_depth=10,
        )
        assert created is CreateOutcome.CREATED


@pytest.fixture
async def stores(redis_url: str) -> AsyncIterator[Stores]:
    redis = make_redis(redis_url)
    yield Stores(redis, JobStore(redis), WorkerJobStore(redis, max_deliveries=3))
    await redis.aclose()


async def job_in(stores: Stores, state: JobState, job_id: str = "j") -> str:
    """A job brought to ``state`` by the transitions themselves (running: held by worker-a)."""
    await stores.create(job_id)
    if state is JobState.QUEUED:
        return job_id
    if state is JobState.CANCELLED:
        assert await stores.producer.cancel(job_id, CANCELLED) is FinishOutcome.WRITTEN
        return job_id
    if state is JobState.EXPIRED:
        await stores.redis.hset(keys.job(job_id), "deadline", repr(time.time() - 1))
        assert await stores.producer.expire(job_id) is FinishOutcome.WRITTEN
        return job_id
    assert (await stores.worker.claim(job_id, "worker-a", LEASE_MS)).outcome is ClaimOutcome.RUN
    if state is JobState.DEFERRED:
        assert await stores.worker.defer(job_id, "worker-a", 60_000)
    elif state in (JobState.SUCCEEDED, JobState.FAILED):
        written = await stores.worker.finish(job_id, "worker-a", state, RESULT)
        assert written is FinishOutcome.WRITTEN
    assert await stores.state(job_id) == state
    return job_id


# Each transition, tried by its own party; True when it took the job from where it was.
Attempt = Callable[[Stores, str], Awaitable[bool]]


async def _claim(s: Stores, job_id: str) -> bool:
    return (await s.worker.claim(job_id, "worker-a", LEASE_MS)).outcome is ClaimOutcome.RUN


async def _finish(s: Stores, job_id: str) -> bool:
    before = len(await s.events(job_id))
    written = await s.worker.finish(job_id, "worker-a", JobState.SUCCEEDED, RESULT)
    # "Written" for a job this worker ended before is a report of the past, not a transition.
    return written is FinishOutcome.WRITTEN and len(await s.events(job_id)) > before


async def _defer(s: Stores, job_id: str) -> bool:
    return await s.worker.defer(job_id, "worker-a", 0)


async def _release(s: Stores, job_id: str) -> bool:
    await s.redis.zadd(keys.DEFERRED, {job_id: 0})  # due now, whatever its state
    return [m[0] for m in await s.worker.release_due()] == [job_id]


async def _hand_off(s: Stores, job_id: str) -> bool:
    return await s.worker.hand_off(job_id, "worker-a", "mock", "mock", "l04.mock")


async def _cancel(s: Stores, job_id: str) -> bool:
    return await s.producer.cancel(job_id, CANCELLED) is FinishOutcome.WRITTEN


async def _expire(s: Stores, job_id: str) -> bool:
    await s.redis.hset(keys.job(job_id), "deadline", repr(time.time() - 1))
    return await s.producer.expire(job_id) is FinishOutcome.WRITTEN


async def _requeue_orphan(s: Stores, job_id: str) -> bool:
    await s.redis.zadd(keys.QUEUED_JOBS, {job_id: 0})  # indexed long ago, whatever its state
    outcome = await s.worker.requeue_orphan(job_id, "sweeper", min_age_ms=1_000)
    return outcome in (OrphanOutcome.REQUEUED, OrphanOutcome.FAILED)


ATTEMPTS: dict[str, Attempt] = {
    "claim": _claim,
    "finish": _finish,
    "defer": _defer,
    "release": _release,
    "hand_off": _hand_off,
    "cancel": _cancel,
    "expire": _expire,
    "requeue_orphan": _requeue_orphan,
}


def test_every_transition_of_the_table_is_tried() -> None:
    assert set(ATTEMPTS) == set(TRANSITIONS) - {"create"}


@pytest.mark.parametrize("transition", sorted(ATTEMPTS))
@pytest.mark.parametrize("state", list(JobState))
async def test_a_transition_runs_from_the_states_the_table_allows_and_no_other(
    stores: Stores, transition: str, state: JobState
) -> None:
    job_id = await job_in(stores, state)
    if state is JobState.RUNNING and transition == "claim":
        await stores.redis.delete(keys.job_lease(job_id))  # its worker died: claim again
    sources, targets = TRANSITIONS[transition]
    moved = await ATTEMPTS[transition](stores, job_id)
    assert moved == (state in sources), (transition, state)
    after = await stores.state(job_id)
    if moved:
        assert after in targets
    else:
        assert after == state  # a refused transition changes nothing


# -- create ----------------------------------------------------------------------------------


async def test_create_makes_one_job_per_id_and_refuses_a_full_queue(stores: Stores) -> None:
    expire_at = int((time.time() + 60) * 1000)
    queue = ["l04.mock"]
    first = await stores.producer.create(
        "a", expire_at, {"x": "1"}, queue_lists=queue, max_depth=1, message="m1", push_to="l04.mock"
    )
    again = await stores.producer.create(
        "a", expire_at, {"x": "2"}, queue_lists=queue, max_depth=5, message="m2", push_to="l04.mock"
    )
    full = await stores.producer.create(
        "b", expire_at, {"x": "3"}, queue_lists=queue, max_depth=1, message="m3", push_to="l04.mock"
    )
    assert (first, again, full) == (CreateOutcome.CREATED, JobState.QUEUED, CreateOutcome.FULL)
    assert await stores.redis.lrange("l04.mock", 0, -1) == [b"m1"]  # pushed once, with the job
    assert await stores.field("a", "x") == "1"
    assert await stores.producer.status("b") == {}
    assert await stores.field("a", "attempt") == "0"


# -- claim -----------------------------------------------------------------------------------


async def test_claim_hands_the_job_to_one_worker_and_fences_the_rest(stores: Stores) -> None:
    await stores.create("j")
    first = await stores.worker.claim("j", "worker-a", LEASE_MS)
    second = await stores.worker.claim("j", "worker-b", LEASE_MS)
    assert first.outcome is ClaimOutcome.RUN and first.attempt == 1
    assert (first.provider, first.model, first.priority) == ("mock", "mock", "normal")
    assert second.outcome is ClaimOutcome.BUSY and 0 < int(second.detail) <= LEASE_MS
    assert await stores.lease("j") == b"worker-a"


async def test_a_lapsed_lease_is_claimed_again_with_the_next_attempt(stores: Stores) -> None:
    await stores.create("j")
    await stores.worker.claim("j", "worker-a", LEASE_MS)
    await stores.worker.append("j", "worker-a", {"type": "chunk", "delta": "he"})
    await stores.redis.delete(keys.job_lease("j"))  # worker-a died
    again = await stores.worker.claim("j", "worker-b", LEASE_MS)
    assert again.outcome is ClaimOutcome.RUN
    assert again.attempt == 2 and again.events_so_far == 1
    assert await stores.lease("j") == b"worker-b"


async def test_claim_past_the_deadline_ends_the_job_with_the_deadline_error(
    stores: Stores,
) -> None:
    await stores.create("queued", deadline_in=-1)
    claim = await stores.worker.claim("queued", "worker-a", LEASE_MS)
    assert (claim.outcome, claim.detail) == (ClaimOutcome.EXPIRED, "queued")
    assert await stores.state("queued") == JobState.EXPIRED
    assert [e["error"]["code"] for e in await stores.events("queued")] == ["E4404"]


async def test_claim_of_a_missing_job_is_gone(stores: Stores) -> None:
    assert (await stores.worker.claim("nobody", "worker-a", LEASE_MS)).outcome is (
        ClaimOutcome.GONE
    )


async def test_a_job_started_more_than_max_deliveries_times_fails_with_E4206(
    stores: Stores,
) -> None:
    """Each worker that took it died (its lease lapsed): after max deliveries (3 here) the next
    claim fails the job instead of handing it to yet another worker."""
    await stores.create("killer")
    for attempt in (1, 2, 3):
        claim = await stores.worker.claim("killer", f"worker-{attempt}", LEASE_MS)
        assert (claim.outcome, claim.attempt) == (ClaimOutcome.RUN, attempt)
        await stores.redis.delete(keys.job_lease("killer"))
    lost = await stores.worker.claim("killer", "worker-4", LEASE_MS)
    assert (lost.outcome, lost.detail) == (ClaimOutcome.LOST, "3")
    assert await stores.state("killer") == JobState.FAILED
    [error] = [e["error"] for e in await stores.events("killer")]
    assert error["code"] == "E4206" and "3 times" in error["message"]
    assert await stores.lease("killer") is None


async def test_deferrals_and_failovers_do_not_count_as_deliveries(stores: Stores) -> None:
    await stores.create("j")
    for _ in range(5):  # a deferral gives its attempt back
        await stores.worker.claim("j", "worker-a", LEASE_MS)
        assert await stores.worker.defer("j", "worker-a", 0)
        assert await stores.worker.release_due() == [("j", "mock", "normal")]
    claim = await stores.worker.claim("j", "worker-a", LEASE_MS)
    assert (claim.outcome, claim.attempt) == (ClaimOutcome.RUN, 1)
    for model in ("a", "b", "c"):  # nor do hand-offs to the next model
        assert await stores.worker.hand_off("j", "worker-a", "mock", model, "l04.mock")
        claim = await stores.worker.claim("j", "worker-a", LEASE_MS)
        assert claim.outcome is ClaimOutcome.RUN
    assert claim.attempt == 4


# -- append and finish -----------------------------------------------------------------------


async def test_append_is_fenced_by_the_lease_and_the_state(stores: Stores) -> None:
    await stores.create("j")
    await stores.worker.claim("j", "worker-a", LEASE_MS)
    assert await stores.worker.append("j", "worker-a", {"type": "chunk", "delta": "a"}) == 0
    assert await stores.worker.append("j", "worker-a", {"type": "chunk", "delta": "b"}) == 1
    assert await stores.worker.append("j", "worker-b", {"type": "chunk", "delta": "x"}) == -2
    await stores.producer.cancel("j", CANCELLED)
    assert await stores.worker.append("j", "worker-a", {"type": "chunk", "delta": "c"}) == -1
    assert [e["type"] for e in await stores.events("j")] == ["chunk", "chunk", "error"]


async def test_finish_writes_one_terminal_event_whoever_asks_again(stores: Stores) -> None:
    """A finish whose reply was lost is sent again by the same worker (workers/events.py): it
    must learn that its answer is the job's, or it skips the job's usage record."""
    await stores.create("j")
    await stores.worker.claim("j", "worker-a", LEASE_MS)
    first = await stores.worker.finish("j", "worker-a", JobState.SUCCEEDED, RESULT)
    again = await stores.worker.finish("j", "worker-a", JobState.SUCCEEDED, RESULT)
    other = await stores.worker.finish("j", "worker-b", JobState.SUCCEEDED, RESULT)
    assert (first, again, other) == (
        FinishOutcome.WRITTEN,
        FinishOutcome.WRITTEN,
        FinishOutcome.ENDED,
    )
    assert [e["type"] for e in await stores.events("j")] == ["result"]
    assert await stores.lease("j") is None
    assert 0 < await stores.redis.ttl(keys.job("j")) <= stores.producer.result_ttl


async def test_finish_is_refused_to_a_worker_that_lost_the_job(stores: Stores) -> None:
    await stores.create("j")
    await stores.worker.claim("j", "worker-a", LEASE_MS)
    await stores.redis.delete(keys.job_lease("j"))
    await stores.worker.claim("j", "worker-b", LEASE_MS)
    stale = await stores.worker.finish("j", "worker-a", JobState.SUCCEEDED, RESULT)
    assert stale is FinishOutcome.FENCED
    assert await stores.events("j") == []


async def test_an_answer_is_taken_while_no_other_worker_holds_the_job(stores: Stores) -> None:
    """A Redis failover can lose a claim: the promoted replica has the job queued with no lease,
    while its worker goes on and answers. The answer is the job's; only another holder fences
    it."""
    await stores.create("j")
    await stores.worker.claim("j", "worker-a", LEASE_MS)
    await stores.redis.hset(keys.job("j"), mapping={"state": "queued", "attempt": 0})
    await stores.redis.delete(keys.job_lease("j"))  # as the replica never saw the claim
    answered = await stores.worker.finish("j", "worker-a", JobState.SUCCEEDED, RESULT)
    assert answered is FinishOutcome.WRITTEN
    assert await stores.state("j") == JobState.SUCCEEDED
    assert [e["type"] for e in await stores.events("j")] == ["result"]
    await stores.create("k")
    await stores.worker.claim("k", "worker-a", LEASE_MS)
    await stores.worker.hand_off("k", "worker-a", "mock", "mock", "l04.mock")
    await stores.worker.claim("k", "worker-b", LEASE_MS)
    assert await stores.worker.finish("k", "worker-a", JobState.FAILED, RESULT) is (
        FinishOutcome.FENCED
    )


# -- defer, release, hand off ----------------------------------------------------------------


async def test_defer_parks_the_job_until_release_requeues_its_message(stores: Stores) -> None:
    await stores.create("j")
    await stores.worker.claim("j", "worker-a", LEASE_MS)
    assert not await stores.worker.defer("j", "worker-b", 0)  # not the holder
    assert await stores.worker.defer("j", "worker-a", 60_000, "the message", "l04.mock")
    assert await stores.lease("j") is None
    assert await stores.field("j", "attempt") == "0"  # given back: no provider call was made
    assert await stores.worker.release_due() == []  # not due for a minute
    await stores.redis.zadd(keys.DEFERRED, {"j": 0})
    assert await stores.worker.release_due() == [("j", "mock", "normal")]
    assert await stores.state("j") == JobState.QUEUED
    assert await stores.redis.lrange("l04.mock", 0, -1) == [b"the message"]
    assert await stores.redis.zcard(keys.DEFERRED) == 0


async def test_release_drops_jobs_that_ended_while_they_waited(stores: Stores) -> None:
    await stores.create("j")
    await stores.worker.claim("j", "worker-a", LEASE_MS)
    await stores.worker.defer("j", "worker-a", 0)
    await stores.producer.cancel("j", CANCELLED)
    assert await stores.worker.release_due() == []
    assert await stores.redis.zcard(keys.DEFERRED) == 0
    assert await stores.state("j") == JobState.CANCELLED


async def test_release_moves_at_most_its_limit(stores: Stores) -> None:
    for n in range(5):
        await stores.create(f"j{n}")
        await stores.worker.claim(f"j{n}", "worker-a", LEASE_MS)
        await stores.worker.defer(f"j{n}", "worker-a", 0)
    assert len(await stores.worker.release_due(limit=3)) == 3
    assert len(await stores.worker.release_due(limit=3)) == 2


async def test_hand_off_requeues_on_the_next_model(stores: Stores) -> None:
    await stores.create("j")
    await stores.worker.claim("j", "worker-a", LEASE_MS)
    assert not await stores.worker.hand_off("j", "worker-b", "openai", "gpt-4o", "l04.openai")
    moved = await stores.worker.hand_off(
        "j", "worker-a", "openai", "gpt-4o", "l04.openai", "msg", "l04.openai"
    )
    assert moved
    info = await stores.producer.status("j")
    assert (info["state"], info["provider"], info["model"], info["failovers"]) == (
        "queued",
        "openai",
        "gpt-4o",
        "1",
    )
    assert await stores.lease("j") is None
    assert await stores.redis.lrange("l04.openai", 0, -1) == [b"msg"]


# -- renew -----------------------------------------------------------------------------------


async def test_renew_keeps_its_own_leases_and_names_the_jobs_it_lost(stores: Stores) -> None:
    for job_id in ("mine", "taken", "cancelled", "restarted", "answered"):
        await stores.create(job_id)
        await stores.worker.claim(job_id, "worker-a", 1_000)
    await stores.redis.set(keys.job_lease("taken"), "worker-b")
    await stores.producer.cancel("cancelled", CANCELLED)
    await stores.redis.delete(keys.job_lease("restarted"))  # Redis lost the lease, not the job
    await stores.worker.finish("answered", "worker-a", JobState.SUCCEEDED, RESULT)
    lost = await stores.worker.renew_leases(
        ["mine", "taken", "cancelled", "restarted", "answered"], "worker-a", 60_000
    )
    assert lost == ["taken", "cancelled"]
    assert await stores.redis.pttl(keys.job_lease("mine")) > 30_000
    assert await stores.lease("restarted") == b"worker-a"
    assert await stores.lease("taken") == b"worker-b"
    assert await stores.worker.renew_leases([], "worker-a", 60_000) == []


# -- cancel and expire -----------------------------------------------------------------------


async def test_cancel_ends_a_job_once(stores: Stores) -> None:
    await stores.create("j")
    await stores.worker.claim("j", "worker-a", LEASE_MS)
    assert await stores.producer.cancel("j", CANCELLED) is FinishOutcome.WRITTEN
    assert await stores.producer.cancel("j", CANCELLED) is FinishOutcome.ENDED
    assert await stores.producer.cancel("nobody", CANCELLED) is FinishOutcome.ENDED
    assert await stores.lease("j") is None
    assert [e["error"]["code"] for e in await stores.events("j")] == ["E4405"]


@pytest.mark.parametrize(
    ("state", "code"),
    [(JobState.QUEUED, "E4404"), (JobState.RUNNING, "E4205"), (JobState.DEFERRED, "E4401")],
)
async def test_expire_names_where_the_deadline_passed(
    stores: Stores, state: JobState, code: str
) -> None:
    job_id = await job_in(stores, state)
    assert await stores.producer.expire(job_id) is FinishOutcome.NOT_YET
    await stores.redis.hset(keys.job(job_id), "deadline", repr(time.time() - 1))
    assert await stores.producer.expire(job_id, grace=5.0) is FinishOutcome.NOT_YET
    assert await stores.producer.expire(job_id) is FinishOutcome.WRITTEN
    assert await stores.producer.expire(job_id) is FinishOutcome.ENDED
    assert [e["error"]["code"] for e in await stores.events(job_id)] == [code]
    assert await stores.state(job_id) == JobState.EXPIRED
