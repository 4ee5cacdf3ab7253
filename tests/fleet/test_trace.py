"""``l04 trace`` and ``JobHandle.timeline`` on jobs run by a real worker: a plain job, one
deferred by a rate limit, one whose worker is SIGKILLed and redelivered, one that fails over,
one streamed; and the command's output and exit codes, run as a subprocess.

One worker for the module (killed once, by the redelivery test, which starts its replacement),
on a Redis emptied once at the module's start.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest
import redis

from config.catalog import load_catalog
from gateway_client import ModelGateway
from gateway_core.job_timeline import JobTrace
from l04.redis_server import LocalRedis, free_port
from tests.conftest import FAST_RECOVERY, make_request
from tests.processes import ROOT, WorkerProcess

WINDOW_S = 2.0  # the limiter's window here: "per minute" means per 2 s

CATALOG = """
default_model = "mock"

[[models]]
model_id = "mock"
provider = "mock"
context_window = 128000
max_output_tokens = 8192

[[models]]
model_id = "mock-b"
provider = "mock"
provider_model = "mock"
context_window = 128000
max_output_tokens = 8192

[[models]]
model_id = "mock-limited"
provider = "mock"
provider_model = "mock"
context_window = 128000
max_output_tokens = 8192
limits = { requests_per_minute = 1 }
"""


@dataclass
class Fleet:
    redis_url: str
    catalog_path: str
    worker: WorkerProcess

    def start_worker(self) -> WorkerProcess:
        env = {
            **FAST_RECOVERY,
            "L04_CATALOG": self.catalog_path,
            "L04_RATE_LIMIT_WINDOW": str(WINDOW_S),
        }
        return WorkerProcess(self.redis_url, "mock", 20, env).start()


@pytest.fixture(scope="module")
def fleet(redis_server: LocalRedis, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    path = tmp_path_factory.mktemp("trace") / "catalog.toml"
    path.write_text(CATALOG)
    fleet = Fleet(redis_server.url, str(path), None)  # type: ignore[arg-type]
    fleet.worker = fleet.start_worker()
    yield fleet
    fleet.worker.stop(timeout=10)


@pytest.fixture
async def client(fleet: Fleet) -> AsyncIterator[ModelGateway]:
    gateway = ModelGateway(redis_url=fleet.redis_url, catalog=load_catalog(fleet.catalog_path))
    yield gateway
    await gateway.close()


def events(trace: JobTrace) -> list[str]:
    return [e.event for e in trace.entries]


def entries(trace: JobTrace, event: str) -> list[dict[str, object]]:
    return [e.details for e in trace.entries if e.event == event]


def l04_trace(*runs: tuple[str, ...]) -> list[subprocess.CompletedProcess[str]]:
    """``l04 trace ARGS...`` with ``REDIS_URL``, for each ``(redis_url, *args)``; started at
    once (a Python start-up each is most of the time)."""
    started = [
        subprocess.Popen(
            [sys.executable, "-m", "l04", "trace", *args],
            cwd=ROOT,
            env={**os.environ, "REDIS_URL": redis_url},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for redis_url, *args in runs
    ]
    done = []
    for process in started:
        stdout, stderr = process.communicate(timeout=30)
        done.append(subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr))
    return done


async def test_a_plain_job_and_the_command(client: ModelGateway, fleet: Fleet) -> None:
    handle = await client.submit(make_request("plain"))
    response = await handle.result(timeout=20)
    trace = await handle.timeline()
    assert events(trace) == ["created", "claimed", "ended"]
    (created,) = entries(trace, "created")
    assert created == {
        "provider": "mock",
        "model": "mock",
        "queue": "l04.mock",
        "priority": "normal",
    }
    (claimed,) = entries(trace, "claimed")
    assert claimed["attempt"] == 1 and claimed["worker"]
    assert entries(trace, "ended") == [{"state": "succeeded", "worker": claimed["worker"]}]
    assert trace.queue_wait_ms is not None and trace.total_ms is not None
    assert 0 <= trace.queue_wait_ms <= trace.total_ms < 20_000
    assert response.queue_ms is not None  # the record's timestamps, read within a ms of ours
    assert abs(response.queue_ms - trace.queue_wait_ms) <= 2

    shown, as_json = l04_trace(
        (fleet.redis_url, handle.job_id), (fleet.redis_url, handle.job_id, "--json")
    )
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0] == f"job {handle.job_id}: succeeded, now on mock:mock"
    # Time since creation, since the step before, the step, what it names.
    assert lines[1].split() == [
        "+0", "ms", "created", "model=mock", "priority=normal", "provider=mock", "queue=l04.mock"
    ]  # fmt: skip
    gap = trace.queue_wait_ms
    assert lines[2].split()[:5] == [f"+{gap}", "ms", f"(+{gap}", "ms)", "claimed"]
    assert lines[3].split()[4] == "ended" and "state=succeeded" in lines[3]
    assert lines[-1] == f"queue wait {trace.queue_wait_ms} ms, total {trace.total_ms} ms"

    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout) == trace.to_json()


async def test_unknown_job_and_unreachable_redis_exit_non_zero(fleet: Fleet) -> None:
    unknown, away = l04_trace(
        (fleet.redis_url, "no-such-job"), (f"redis://127.0.0.1:{free_port()}/0", "any-job")
    )
    assert unknown.returncode == 1 and unknown.stdout == ""
    assert "E4406" in unknown.stderr and "no-such-job" in unknown.stderr
    assert away.returncode == 2 and away.stdout == ""
    assert "E4407" in away.stderr


async def test_a_job_deferred_by_a_rate_limit(client: ModelGateway) -> None:
    handles = [await client.submit(make_request(f"l{i}", model_id="mock-limited")) for i in (1, 2)]
    await asyncio.gather(*(h.result(timeout=20) for h in handles))
    traces = [await h.timeline() for h in handles]
    deferred = next(t for t in traces if "deferred" in events(t))
    assert events(deferred) == ["created", "claimed", "deferred", "released", "claimed", "ended"]
    (parked,) = entries(deferred, "deferred")
    assert parked["limit"] == "model requests per minute"
    assert 0 < int(str(parked["wait_ms"])) <= WINDOW_S * 1000 * 1.5  # within about one window
    times = {e.event: e.t_ms for e in deferred.entries}
    # Released once the wait is over (the mover polls every 50 ms), on the server's clock.
    assert times["released"] - times["deferred"] >= int(str(parked["wait_ms"])) - 5
    assert [c["attempt"] for c in entries(deferred, "claimed")] == [1, 1]


async def test_a_job_whose_worker_is_killed_is_redelivered(
    client: ModelGateway, fleet: Fleet
) -> None:
    handle = await client.submit(
        make_request("doomed", timeout=60, metadata={"mock": {"latency_ms": 2500}})
    )
    while (await handle.status()).state != "running":
        await asyncio.sleep(0.05)
    fleet.worker.kill()
    fleet.worker = fleet.start_worker()
    assert (await handle.result(timeout=40)).attempt == 2
    trace = await handle.timeline()
    assert events(trace) == ["created", "claimed", "claimed", "ended"]
    first, second = entries(trace, "claimed")
    assert first["attempt"] == 1 and "redelivered" not in first
    assert second["attempt"] == 2 and second["redelivered"] is True
    assert second["previous_worker"] == first["worker"] != second["worker"]
    assert entries(trace, "ended")[0]["worker"] == second["worker"]


async def test_a_failover_names_both_models_and_the_retries(client: ModelGateway) -> None:
    request = make_request(
        "flaky",
        routing={"fallback_models": ["mock-b"]},
        metadata={"mock": {"fail": "E4200", "fail_attempts": 1}},  # its first attempt fails
    )
    response = await (handle := await client.submit(request)).result(timeout=20)
    assert response.model_id == "mock-b"
    trace = await handle.timeline()
    assert events(trace) == ["created", "claimed", "retry", "retry", "failover", "claimed", "ended"]
    assert [r["call"] for r in entries(trace, "retry")] == [1, 2]
    assert {r["code"] for r in entries(trace, "retry")} == {"E4200"}
    (failover,) = entries(trace, "failover")
    assert (failover["from"], failover["to"]) == ("mock:mock", "mock:mock-b")
    assert failover["code"] == "E4200"
    assert trace.model == "mock-b"


async def test_a_streamed_job_has_its_first_chunk(client: ModelGateway) -> None:
    request = make_request("streamed", metadata={"mock": {"chunks": 5, "chunk_delay_ms": 100}})
    handle = await client.submit(request, stream=True)
    chunks = [c async for c in handle.stream(timeout=20)]
    assert chunks[-1].is_final
    trace = await handle.timeline()
    assert events(trace) == ["created", "claimed", "first_chunk", "ended"]
    assert entries(trace, "first_chunk")[0]["attempt"] == 1
    assert trace.first_chunk_ms is not None and trace.queue_wait_ms is not None
    assert trace.total_ms is not None
    # Four more chunks, 100 ms apart, after the first.
    assert trace.queue_wait_ms <= trace.first_chunk_ms <= trace.total_ms - 350
    assert "first chunk" in trace.render().splitlines()[-1]
