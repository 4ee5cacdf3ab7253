"""The worker's intake beside stock Celery and kombu: one layout, shared queues, kombu's restore.

The intake (workers/intake.py) takes messages with a Lua script instead of kombu's BRPOP; these
tests show that what it leaves behind is kombu's own layout: a worker on kombu's stock transport
consumes the same queues beside it, priorities hold across both, kombu's restore brings back the
messages the intake recorded for a worker that died, ``celery -A tasks inspect active`` answers
and Flower lists both workers' tasks. And a message pushed by a producer that rings no bell is
still taken.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Callable

import httpx
import redis

from gateway_client import ModelGateway, Priority
from gateway_core import keys
from gateway_core.queues import REDIS_UNACKED, queue_name
from tasks.message import redis_list_for
from tests.conftest import FAST_RECOVERY, make_request
from tests.fleet.test_flower import AUTH, flower  # noqa: F401 - the fixture
from tests.processes import ROOT, WorkerProcess


def stock_kombu_worker(redis_url: str, name: str, concurrency: int) -> WorkerProcess:
    worker = WorkerProcess(redis_url, env=FAST_RECOVERY, name=name)
    worker.command = [
        *(sys.executable, "-m", "celery", "-A", "tests.stock_kombu_app", "worker"),
        *("-Q", queue_name("mock"), "-c", str(concurrency), "-n", f"{name}@test"),
        *("--without-mingle", "--without-gossip", "--loglevel", "INFO", "-E"),
    ]
    return worker


def slow(text: str, priority: Priority, ms: int = 400) -> object:
    return make_request(text, priority=priority, metadata={"mock": {"latency_ms": ms}})


def received(worker: WorkerProcess) -> int:
    return worker.log().count("] received")  # Celery logs "Task l04.infer[<id>] received"


async def test_a_stock_kombu_worker_and_an_l04_worker_share_the_queue(
    redis_url: str,
    redis_client: redis.Redis,
    gateway: ModelGateway,
    start_worker: Callable[..., WorkerProcess],
    flower: str,  # noqa: F811 - the fixture
) -> None:
    ours = start_worker("mock", concurrency=3)
    stock = stock_kombu_worker(redis_url, "stock", 3).start()
    try:
        # Six slots in all: the first LOW jobs fill them, the rest wait on the LOW list.
        low = [await gateway.submit(slow(f"low {i}", Priority.LOW)) for i in range(18)]
        deadline = time.monotonic() + 10
        while redis_client.hlen(REDIS_UNACKED) < 6:
            assert time.monotonic() < deadline, "the two workers did not both take jobs"
            await asyncio.sleep(0.02)
        high = [await gateway.submit(slow(f"high {i}", Priority.HIGH)) for i in range(6)]

        # While they run: `celery -A tasks inspect active` answers for both nodes.
        inspect = subprocess.run(
            [sys.executable, "-m", "celery", "-A", "tasks", "inspect", "active", "-t", "5"],
            env={**os.environ, "REDIS_URL": redis_url},
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert inspect.returncode == 0, inspect.stderr
        assert f"{ours.name}@test" in inspect.stdout and "stock@test" in inspect.stdout

        finished: dict[str, float] = {}

        async def wait(handle: object) -> None:
            await handle.result()  # type: ignore[attr-defined]
            finished[handle.job_id] = time.monotonic()  # type: ignore[attr-defined]

        await asyncio.wait_for(asyncio.gather(*(wait(h) for h in [*low, *high])), 60)
        last_high = max(finished[h.job_id] for h in high)
        low_after = sum(1 for h in low if finished[h.job_id] > last_high)
        # The HIGH jobs went ahead of the LOW ones still queued, whichever worker took them.
        assert low_after >= 6, f"only {low_after} LOW jobs finished after the last HIGH one"
        assert received(ours) > 0 and received(stock) > 0, (received(ours), received(stock))
        assert received(ours) + received(stock) == 24

        api = httpx.Client(base_url=flower, auth=AUTH, timeout=10)
        try:
            deadline = time.monotonic() + 20
            while True:
                tasks = api.get("/api/tasks").json()
                nodes = {task["worker"] for task in tasks.values()}
                if len(tasks) >= 24 and {f"{ours.name}@test", "stock@test"} <= nodes:
                    break
                assert time.monotonic() < deadline, (len(tasks), nodes)
                await asyncio.sleep(0.5)
        finally:
            api.close()
    finally:
        stock.stop()


async def test_kombus_restore_brings_back_what_the_intake_took_for_a_dead_worker(
    redis_url: str,
    redis_client: redis.Redis,
    gateway: ModelGateway,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    ours = start_worker("mock", concurrency=20)
    handles = [await gateway.submit(slow(f"job {i}", Priority.NORMAL, 3000)) for i in range(10)]
    deadline = time.monotonic() + 10
    while redis_client.hlen(REDIS_UNACKED) < 10:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    ours.kill()  # dies holding all ten, recorded by the intake script
    stock = stock_kombu_worker(redis_url, "restorer", 20).start()
    try:
        answers = await asyncio.wait_for(asyncio.gather(*(h.result() for h in handles)), 45)
        assert [a.content for a in answers] == [f"Mock response to: job {i}" for i in range(10)]
        assert received(stock) >= 10  # kombu's restore (visibility timeout 4 s) put them back
    finally:
        stock.stop()


async def test_a_message_pushed_without_a_bell_is_taken(
    redis_client: redis.Redis,
    gateway: ModelGateway,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    """A stock producer (``celery call``, a stock worker's restore) rings no bell: the idle
    worker's wait on the bells times out within a second, and the take finds the message."""
    queue_list = redis_list_for(queue_name("mock"), 5)  # NORMAL
    handle = await gateway.submit(make_request("pushed without a bell"))
    message = redis_client.rpop(queue_list)  # no worker yet: the message is still there
    assert message is not None and redis_client.delete(keys.queue_bell(queue_list)) == 1
    start_worker("mock")
    await asyncio.sleep(1.5)  # the worker took nothing and waits on the bells
    redis_client.lpush(queue_list, message)
    started = time.monotonic()
    answer = await asyncio.wait_for(handle.result(), 10)
    assert answer.content == "Mock response to: pushed without a bell"
    assert time.monotonic() - started < 3  # kombu's brpop_timeout (1 s) bounds the wait


def kombu_envelope(tag: str, body: str = "e30=") -> str:
    """A kombu message written by hand; ``body`` goes in unescaped (so it can hold what only
    Redis's JSON reader accepts)."""
    info = '{"exchange": "", "routing_key": "l04.mock"}'
    return (
        f'{{"body": "{body}", "headers": {{}}, '
        f'"properties": {{"delivery_tag": "{tag}", "delivery_info": {info}}}}}'
    )


async def test_json_only_redis_reads_never_sticks_in_unacked_or_stops_a_worker(
    redis_url: str,
    redis_client: redis.Redis,
    gateway: ModelGateway,
    start_worker: Callable[..., WorkerProcess],
) -> None:
    """cjson (Redis's JSON reader) accepts a raw TAB inside a string, ``0x10``, ``1.``; Python's
    json refuses them. The take script records such a value as a message; the worker must set
    it aside *and* remove it from ``unacked``, or kombu's restore would fail on it on every
    sweep and every worker starting after it would stop ("Unrecoverable error")."""
    first = start_worker("mock")
    queue_list = redis_list_for(queue_name("mock"), 0)
    redis_client.lpush(queue_list, kombu_envelope("tab", body="a\tb"))
    redis_client.lpush(keys.queue_bell(queue_list), 1)
    deadline = time.monotonic() + 10
    while redis_client.llen(keys.DEAD_LETTERS) < 1:
        assert time.monotonic() < deadline, "the value was not set aside"
        await asyncio.sleep(0.05)
    assert redis_client.hlen(REDIS_UNACKED) == 0 and redis_client.llen(queue_list) == 0
    assert (await gateway.execute(make_request("after"))).content == "Mock response to: after"

    # A worker that died between its take and its screen leaves such an entry in unacked:
    # the restore sets it aside, and a worker starting then starts.
    first.kill()
    unreadable = kombu_envelope("stuck", body="c\td")  # a raw TAB: Python's json refuses it
    redis_client.hset(REDIS_UNACKED, "stuck", f'[{unreadable}, "", "l04.mock"]')
    redis_client.zadd("unacked_index", {"stuck": time.time() - 3600})
    start_worker("mock")
    deadline = time.monotonic() + 15
    while redis_client.hexists(REDIS_UNACKED, "stuck"):
        assert time.monotonic() < deadline, "the unreadable entry is still in unacked"
        await asyncio.sleep(0.1)
    assert redis_client.llen(keys.DEAD_LETTERS) == 2
    assert (await gateway.execute(make_request("again"))).content == "Mock response to: again"


async def test_a_job_on_a_separate_redis_broker_wakes_an_idle_worker(redis_url: str) -> None:
    """Jobs published through Celery (a broker other than the job-state Redis) ring the bell
    too: an idle worker takes them at once, not when its wait on the bells times out (1 s)."""
    from config.settings import load_settings

    broker = redis_url.rsplit("/", 1)[0] + "/1"
    worker = WorkerProcess(redis_url, env={**FAST_RECOVERY, "L04_BROKER_URL": broker}).start()
    gateway = ModelGateway(load_settings(REDIS_URL=redis_url, L04_BROKER_URL=broker))
    try:
        await gateway.execute(make_request("warm-up"))
        times = []
        for i in range(7):
            await asyncio.sleep(0.3)  # the worker is idle, waiting on the bells
            started = time.monotonic()
            await gateway.execute(make_request(f"idle {i}"))
            times.append(time.monotonic() - started)
        # Without the bell the median is about 0.5-1 s (measured: 0.71 s); with it, milliseconds.
        assert sorted(times)[3] < 0.3, times
    finally:
        await gateway.close()
        worker.stop()


async def test_held_poison_is_set_aside_once_by_workers_starting_together(
    redis_url: str, redis_client: redis.Redis
) -> None:
    """Values a dead worker left on ``l04:intake:poison`` are set aside by whichever worker
    removes each from there: once, however many look at the list at the same moment."""
    values = [f"junk {i}" for i in range(300)]
    redis_client.rpush(keys.INTAKE_POISON, *values)
    workers = [WorkerProcess(redis_url, env=FAST_RECOVERY) for _ in range(3)]
    for worker in workers:  # all three started before any is ready
        with worker.log_path.open("wb") as log:
            worker.process = subprocess.Popen(
                worker.command, env=worker.env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT
            )
    try:
        deadline = time.monotonic() + 30
        while redis_client.llen(keys.INTAKE_POISON) or redis_client.llen(keys.DEAD_LETTERS) < 300:
            assert time.monotonic() < deadline, (
                redis_client.llen(keys.INTAKE_POISON),
                redis_client.llen(keys.DEAD_LETTERS),
            )
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)  # a worker that would set a value aside twice has done so now
        assert redis_client.llen(keys.DEAD_LETTERS) == 300
    finally:
        for worker in workers:
            worker.stop()
