"""The orphan sweeper (workers/orphans.py) against a real redis-server, with real submits and no
worker: a queued job whose message is on no list and in no unacknowledged delivery is put back
on its queue after two sweeps, once; lost again, it fails with E4206 and its caller hears it.

Jobs must be queued for one sweep period before a sweep looks for them: the tests age the index
by hand (its scores are the server times the jobs became queued) instead of sleeping.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from redis.asyncio import Redis

from config.settings import GatewaySettings, load_settings
from gateway_client import JobLost, ModelGateway, Priority
from gateway_core import keys
from gateway_core.queues import REDIS_UNACKED, redis_priority_lists
from gateway_core.redis_pool import make_redis
from tasks.app_config import create_app
from tests.conftest import make_request
from workers.job_store import WorkerJobStore
from workers.orphans import OrphanSweeper
from workers.requeue import Requeue

ORPHAN_AFTER = 40.0  # a period of 10 s: the tests age jobs by hand, never by waiting
MOCK_LISTS = redis_priority_lists("l04.mock")


@dataclass
class Fleet:
    """A producer and the sweeper of one worker, on the test's Redis (and broker)."""

    settings: GatewaySettings
    gateway: ModelGateway
    redis: Redis  # job state
    broker: Redis  # the broker's Redis (the same server, or another database)
    store: WorkerJobStore
    sweeper: OrphanSweeper

    def another_sweeper(self, orphan_after: float = ORPHAN_AFTER) -> OrphanSweeper:
        broker_url = self.settings.effective_broker_url
        requeue = Requeue(create_app(self.settings), broker_url, broker_url == self.redis_url)
        return OrphanSweeper(self.store, self.broker, requeue, orphan_after)

    @property
    def redis_url(self) -> str:
        return self.settings.redis_url

    async def submit(self, n: int, **fields: object) -> list[str]:
        handles = [await self.gateway.submit(make_request(f"job {i}", **fields)) for i in range(n)]
        return [h.job_id for h in handles]

    async def age(self, seconds: float = ORPHAN_AFTER) -> None:
        """As if every job in the index had been queued ``seconds`` earlier."""
        for job_id, since in await self.redis.zrange(keys.QUEUED_JOBS, 0, -1, withscores=True):
            await self.redis.zadd(keys.QUEUED_JOBS, {job_id: since - seconds * 1000})

    async def sweep(self, sweeper: OrphanSweeper | None = None) -> tuple[list[str], list[str]]:
        """One sweep (the lease released first, as a period's wait would): requeued, failed."""
        await self.redis.delete(keys.ORPHAN_SWEEPER)
        report = await (sweeper or self.sweeper).try_sweep()
        assert report is not None and not report.fenced
        return report.requeued, report.failed

    async def messages(self) -> list[str]:
        """The job ids of the messages on the mock queue's lists, each list from its head."""
        found = []
        for name in MOCK_LISTS:
            for raw in await self.broker.lrange(name, 0, -1):
                found.append(json.loads(raw)["headers"]["id"])
        return found

    async def remove_message(self, job_id: str) -> None:
        """What a broker failure does: the job's message gone from its list."""
        for name in MOCK_LISTS:
            for raw in await self.broker.lrange(name, 0, -1):
                if json.loads(raw)["headers"]["id"] == job_id:
                    assert await self.broker.lrem(name, 1, raw) == 1
                    return
        raise AssertionError(f"no message of {job_id}")

    async def field(self, job_id: str, name: str) -> str:
        return (await self.gateway.redis.hget(keys.job(job_id), name) or b"").decode()


async def fleet_on(broker_url: str, redis_url: str) -> Fleet:
    settings = load_settings(REDIS_URL=redis_url, L04_BROKER_URL=broker_url)
    gateway = ModelGateway(settings)
    redis = make_redis(redis_url)
    broker = redis if broker_url == redis_url else make_redis(broker_url)
    store = WorkerJobStore(redis, index_queued=True)
    requeue = Requeue(create_app(settings), broker_url, broker_url == redis_url)
    sweeper = OrphanSweeper(store, broker, requeue, ORPHAN_AFTER)
    return Fleet(settings, gateway, redis, broker, store, sweeper)


@pytest.fixture
async def fleet(redis_url: str) -> AsyncIterator[Fleet]:
    made = await fleet_on(redis_url, redis_url)
    yield made
    await made.gateway.close()
    await made.redis.aclose()


async def test_a_job_whose_message_vanished_is_put_back_after_two_sweeps(fleet: Fleet) -> None:
    jobs = await fleet.submit(5)
    assert await fleet.redis.zcard(keys.QUEUED_JOBS) == 5
    lost = jobs[2]
    await fleet.remove_message(lost)
    assert await fleet.sweep() == ([], [])  # too young to be looked for
    await fleet.age()
    assert await fleet.sweep() == ([], [])  # missed once: a suspect
    assert await fleet.redis.smembers(keys.ORPHAN_SUSPECTS) == {lost.encode()}
    assert await fleet.sweep() == ([lost], [])  # missed twice: put back
    assert sorted(await fleet.messages()) == sorted(jobs)  # every job's message, once
    assert await fleet.field(lost, "orphaned") == "1"
    assert await fleet.field(lost, "state") == "queued"
    await fleet.age()
    assert await fleet.sweep() == ([], [])  # all found: nobody is a suspect
    assert not await fleet.redis.exists(keys.ORPHAN_SUSPECTS)
    assert not await fleet.broker.keys("l04:orphans:{*")  # no scratch key left behind


async def test_the_message_put_back_is_served_next_on_its_priority_list(fleet: Fleet) -> None:
    [low] = await fleet.submit(1, priority=Priority.LOW)
    [lost] = await fleet.submit(1, priority=Priority.HIGH)
    [waiting] = await fleet.submit(1, priority=Priority.HIGH)
    await fleet.remove_message(lost)
    await fleet.age()
    await fleet.sweep()
    assert await fleet.sweep() == ([lost], [])
    high = [json.loads(m) for m in await fleet.broker.lrange(MOCK_LISTS[0], 0, -1)]
    assert [m["headers"]["id"] for m in high] == [waiting, lost]  # BRPOP takes it first
    assert high[1]["properties"]["priority"] == 0  # HIGH on Redis
    assert [
        json.loads(m)["headers"]["id"] for m in await fleet.broker.lrange(MOCK_LISTS[2], 0, -1)
    ] == [low]


async def test_a_job_whose_message_is_lost_again_fails_with_E4206(fleet: Fleet) -> None:
    handle = await fleet.gateway.submit(make_request("lost twice"))
    for _ in range(2):
        await fleet.remove_message(handle.job_id)
        await fleet.age()
        await fleet.sweep()
        requeued, failed = await fleet.sweep()
    assert (requeued, failed) == ([], [handle.job_id])
    with pytest.raises(JobLost) as caught:
        await asyncio.wait_for(handle.result(), 5)  # told by its terminal event, not a deadline
    assert caught.value.code == "E4206" and "lost 2 times" in caught.value.message
    assert (await handle.status()).state == "failed"
    assert not await fleet.redis.exists(keys.QUEUED_JOBS)


async def test_a_job_no_message_can_be_built_for_fails_at_once(fleet: Fleet) -> None:
    [job_id] = await fleet.submit(1)
    await fleet.redis.hset(keys.job(job_id), "provider", "no-such-provider")
    await fleet.remove_message(job_id)
    await fleet.age()
    await fleet.sweep()
    assert await fleet.sweep() == ([], [job_id])
    assert await fleet.field(job_id, "state") == "failed"


async def test_a_message_a_worker_holds_unacknowledged_is_not_an_orphan(fleet: Fleet) -> None:
    """kombu records a delivered message in ``unacked`` until it is acknowledged: a real kombu
    consumer takes one and holds it."""
    jobs = await fleet.submit(3)
    # The fleet's own transport options: its priority lists, its unacked index.
    with create_app(fleet.settings).connection_for_read() as connection:
        queue = connection.SimpleQueue("l04.mock")
        held = queue.get(timeout=5)  # not acknowledged
        assert held.headers["id"] in jobs
        assert await fleet.redis.hlen(REDIS_UNACKED) == 1
        await fleet.age()
        assert await fleet.sweep() == ([], [])
        assert await fleet.sweep() == ([], [])
        assert await fleet.field(held.headers["id"], "orphaned") == ""
        held.ack()
        queue.close()


async def test_jobs_that_left_the_queue_leave_the_index(fleet: Fleet) -> None:
    claimed, cancelled, kept = await fleet.submit(3)
    assert (await fleet.store.claim(claimed, "w1", 5_000)).attempt == 1
    assert (await fleet.redis.zscore(keys.QUEUED_JOBS, claimed)) is None  # the claim took it out
    assert await (await fleet.gateway.job(cancelled)).cancel()
    await fleet.remove_message(cancelled)  # a worker took its message and dropped it
    await fleet.age()
    assert await fleet.sweep() == ([], [])
    assert await fleet.redis.zrange(keys.QUEUED_JOBS, 0, -1) == [kept.encode()]
    assert not await fleet.redis.exists(keys.ORPHAN_SUSPECTS)


async def test_one_sweep_at_a_time_across_the_fleet(fleet: Fleet) -> None:
    [lost] = await fleet.submit(1)
    await fleet.remove_message(lost)
    await fleet.age()
    first, other = fleet.another_sweeper(2.0), fleet.another_sweeper(2.0)  # periods of 0.5 s
    assert await first.try_sweep() is not None
    assert await other.try_sweep() is None  # within the first's period
    assert 0 < await fleet.redis.pttl(keys.ORPHAN_SWEEPER) <= 500
    await asyncio.sleep(0.6)  # the lease lapsed: the next sweep is anyone's
    report = await other.try_sweep()
    assert report is not None and report.requeued == [lost]


async def test_a_sweeper_whose_lease_another_took_acts_on_nothing(fleet: Fleet) -> None:
    [lost] = await fleet.submit(1)
    await fleet.remove_message(lost)
    await fleet.age()
    await fleet.sweep()
    await fleet.redis.set(keys.ORPHAN_SWEEPER, "another", px=10_000)
    report = await fleet.sweeper.sweep("mine")  # as if its lease lapsed mid-sweep
    assert report.fenced and report.requeued == [] and report.missing == 1
    assert await fleet.field(lost, "orphaned") == ""
    assert await fleet.redis.smembers(keys.ORPHAN_SUSPECTS) == {lost.encode()}


async def test_with_a_broker_redis_of_its_own_the_message_is_published_there(
    redis_url: str,
) -> None:
    broker_url = redis_url.rsplit("/", 1)[0] + "/1"
    fleet = await fleet_on(broker_url, redis_url)
    try:
        await fleet.broker.flushdb()
        jobs = await fleet.submit(2)
        assert len(await fleet.messages()) == 2  # on the broker's database
        await fleet.remove_message(jobs[0])
        await fleet.age()
        await fleet.sweep()
        assert await fleet.sweep() == ([jobs[0]], [])
        assert sorted(await fleet.messages()) == sorted(jobs)
    finally:
        await fleet.broker.flushdb()
        await fleet.gateway.close()
        await fleet.broker.aclose()
        await fleet.redis.aclose()
