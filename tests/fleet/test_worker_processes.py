"""``l04 worker --processes N``: N worker processes under one supervisor share the host's jobs,
serve one metrics endpoint that sums them, come back when one dies, and drain together."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from gateway_client import ModelGateway
from l04.redis_server import free_port
from tests.conftest import FAST_RECOVERY, health_with_workers, make_request
from tests.processes import WorkerProcess

Samples = list[tuple[str, dict[str, str], float]]


def scrape(port: int) -> Samples:
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return [
        (sample.name, sample.labels, sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    ]


def total(samples: Samples, name: str, **labels: str) -> float:
    return sum(v for n, found, v in samples if n == name and labels.items() <= found.items())


def count(samples: Samples, name: str) -> int:
    return sum(1 for n, _, _ in samples if n == name)


def started_pids(worker: WorkerProcess) -> dict[int, list[int]]:
    """The pids the supervisor started, per process number, in order."""
    pids: dict[int, list[int]] = {}
    for index, pid in re.findall(r"process (\d+) of \d+ started \(pid (\d+)", worker.log()):
        pids.setdefault(int(index), []).append(int(pid))
    return pids


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def metrics_dirs(supervisor_pid: int) -> list[Path]:
    return list(Path(tempfile.gettempdir()).glob(f"l04-metrics-{supervisor_pid}-*"))


def job_worker_pid(client: redis.Redis, job_id: str) -> int:
    """The pid of the process that ran a job: its record's worker id is host:pid:nonce."""
    return int(client.hget(f"l04:job:{{{job_id}}}", "worker").split(b":")[1])


async def wait_until_running(gateway: ModelGateway, job_ids: list[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for job_id in job_ids:
        handle = await gateway.job(job_id)
        while (await handle.status()).state != "running":
            assert time.monotonic() < deadline, f"{job_id} not running in {timeout} s"
            await asyncio.sleep(0.05)


@pytest.fixture
def two_processes(redis_url: str) -> Iterator[tuple[WorkerProcess, int]]:
    port = free_port()
    env = {**FAST_RECOVERY, "L04_METRICS_PORT": str(port)}
    # Eight slots each: a process takes at most its free slots at once, so thirty jobs submitted
    # together cannot all go to one (with fifty slots one take could hold them all).
    worker = WorkerProcess(redis_url, concurrency=8, env=env, processes=2).start()
    yield worker, port
    worker.stop(timeout=30)


async def test_two_processes_share_the_jobs_sum_their_metrics_and_drain_on_sigterm(
    two_processes: tuple[WorkerProcess, int], gateway: ModelGateway, redis_client: redis.Redis
) -> None:
    worker, port = two_processes
    assert worker.process is not None
    supervisor = worker.process.pid
    children = [pids[0] for pids in started_pids(worker).values()]
    assert len(children) == 2 and metrics_dirs(supervisor)
    health = await health_with_workers(gateway, {"l04.mock": 2})
    assert sorted(health["workers"]["l04.mock"]) == [
        f"{worker.name}-1@test",
        f"{worker.name}-2@test",
    ]

    quick = {"mock": {"latency_ms": 100}}
    answered = await asyncio.gather(
        *(gateway.execute(make_request(f"quick {i}", metadata=quick)) for i in range(30))
    )
    ran_on = {job_worker_pid(redis_client, r.job_id) for r in answered}
    assert ran_on == set(children)  # both processes took jobs
    samples = scrape(port)  # one endpoint for the host: the sum of both
    assert total(samples, "l04_inference_requests_total", status="success", model="mock") == 30
    assert total(samples, "l04_inference_latency_seconds_count", model="mock") == 30
    assert total(samples, "l04_inference_latency_seconds_bucket", model="mock", le="+Inf") == 30
    assert total(samples, "l04_active_requests", provider="mock") == 0
    assert count(samples, "l04_gateway_info") == 1  # once for the host, not once per process
    assert total(samples, "l04_gateway_info", layer="L04") == 1
    assert total(samples, "l04_worker_processes", queue="l04.mock") == 2  # one per live process
    # Read from Redis once, by the supervisor: not once per process.
    assert count(samples, "l04_circuit_breaker_state") == 1
    assert count(samples, "l04_queue_depth") == 3

    slow = {"mock": {"latency_ms": 1500}}
    handles = [await gateway.submit(make_request(f"long {i}", metadata=slow)) for i in range(12)]
    await wait_until_running(gateway, [h.job_id for h in handles], timeout=10)
    holding = {job_worker_pid(redis_client, h.job_id) for h in handles}
    assert holding == set(children)  # both have jobs in flight when told to stop
    stopping = asyncio.create_task(asyncio.to_thread(worker.stop, 30))
    results = await asyncio.gather(*(h.result(timeout=20) for h in handles))
    await stopping
    assert all(r.attempt == 1 for r in results)  # each finished by the process that had it
    assert worker.process.returncode == 0, worker.log()[-2000:]
    assert not any(alive(pid) for pid in children)
    assert metrics_dirs(supervisor) == []
    assert worker.log().rstrip().endswith("l04 worker: all 2 processes stopped")


async def test_a_killed_process_is_started_again_and_its_job_finishes(
    two_processes: tuple[WorkerProcess, int], gateway: ModelGateway, redis_client: redis.Redis
) -> None:
    worker, port = two_processes
    quick = {"mock": {"latency_ms": 200}}
    first = await asyncio.gather(
        *(gateway.execute(make_request(f"before {i}", metadata=quick)) for i in range(20))
    )
    handle = await gateway.submit(
        make_request("held", timeout=60, metadata={"mock": {"latency_ms": 3000}})
    )
    await wait_until_running(gateway, [handle.job_id], timeout=10)
    doomed = job_worker_pid(redis_client, handle.job_id)
    index = next(i for i, pids in started_pids(worker).items() if pids == [doomed])
    assert doomed in {job_worker_pid(redis_client, r.job_id) for r in first}
    # It had counted a call in flight: the host's sum would keep it with the process gone.
    assert total(scrape(port), "l04_active_requests", provider="mock") == 1
    os.kill(doomed, signal.SIGKILL)

    response = await handle.result(timeout=30)  # back on the queue after the visibility timeout
    assert response.attempt == 2
    said = rf"process {index} of 2 \(pid {doomed}\) was killed by SIGKILL[^;\n]*; starting it again"
    assert re.search(said, worker.log()), worker.log()[-2000:]
    deadline = time.monotonic() + 20
    while worker.log().count("all 2 processes ready") < 2:
        assert time.monotonic() < deadline, worker.log()[-2000:]
        await asyncio.sleep(0.1)
    restarted = started_pids(worker)[index]
    assert len(restarted) == 2 and alive(restarted[1])
    samples = scrape(port)
    assert total(samples, "l04_active_requests", provider="mock") == 0
    # The dead process's counts stay in the sum: the jobs before, and the one run again.
    answered = total(samples, "l04_inference_requests_total", status="success", model="mock")
    assert answered == len(first) + 1
    health = await health_with_workers(gateway, {"l04.mock": 2})
    assert len(health["workers"]["l04.mock"]) == 2
    assert (await gateway.execute(make_request("after"))).content == "Mock response to: after"


def test_a_process_that_keeps_failing_to_start_stops_the_supervisor(redis_url: str) -> None:
    """Five deaths in a row before it is ready or just after: the supervisor gives up, stops the
    other process and exits 1 with the reason, instead of restarting forever. (Set with
    L04_WORKER_PROCESSES: the variable works as the flag does.)"""
    worker = WorkerProcess(redis_url, env={**FAST_RECOVERY, "L04_WORKER_PROCESSES": "2"})
    worker.ready_line = "process 2 of 2 started"
    worker.start()
    assert worker.process is not None
    try:
        killed: list[int] = []
        deadline = time.monotonic() + 40
        while worker.process.poll() is None:
            assert time.monotonic() < deadline, worker.log()[-3000:]
            for pid in started_pids(worker).get(2, []):
                if pid in killed:
                    continue
                # Four at once, long before Celery is ready; the fifth once it said it was.
                if len(killed) < 4 or f"process 2 of 2 ready (pid {pid})" in worker.log():
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
            time.sleep(0.02)
        code = worker.process.wait()
    finally:
        worker.stop()
    assert code == 1
    assert len(killed) == 5
    log = worker.log().rstrip()
    last = log.splitlines()[-1]
    assert re.fullmatch(
        r"l04 worker: stopped with status 1: process 2 of 2 failed to start 5 times in a row "
        r"\(last: was killed by SIGKILL \d+\.\d s after it was ready\)",
        last,
    ), last
    pauses = re.findall(r"before it was ready; starting it again in ([\d.]+) s", log)
    assert pauses == ["0.5", "1", "2", "4"]
    assert not alive(started_pids(worker)[1][0])
