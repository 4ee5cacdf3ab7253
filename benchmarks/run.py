"""The gateway's figures beside their baselines, from one run on this machine.

    python -m benchmarks.run [--quick]

    python -m benchmarks.run --no-task-events     # workers without Celery task events
    python -m benchmarks.run --memory-jobs 100000  # the memory-growth figure of BENCHMARKS.md

Starts a private redis-server, the mock upstream (``l04 mock-provider``), one ``l04 worker``
and two bare Celery workers (``benchmarks/bare_app.py``: threads pool, and gevent pool), then
measures:

1. round trip at low load (one request at a time): a direct HTTP call to the upstream, a bare
   Celery task making that call (result through Celery's Redis backend), and a job through the
   fleet (OpenAI adapter, same upstream);
2. throughput with a 0 ms upstream: the fleet's in-process mock provider vs a bare Celery no-op
   task, 2,000 jobs submitted at once, one worker process each;
3. in-flight capacity: N jobs against a 1 s upstream through the fleet vs a bare Celery gevent
   task vs a direct asyncio client making the same N calls, and the most calls the upstream saw
   in flight; then N jobs of 10 s, where intake no longer limits what one process holds;
4. streaming: time to the first chunk through the fleet vs a direct streamed call, and chunks
   relayed per second;
5. the rate limiter: decisions per second in one process, and admitted vs the limit;
6. worker memory (RSS): at the peak of the 10 s calls, and its growth over many jobs;
7. interactive jobs beside a batch; 8. a batch's rate at a limit;
9. (``http-door``) the HTTP front door beside ``gateway_client`` and LiteLLM's proxy, with
   processes of its own once the others are stopped: see ``benchmarks/http_door.py``
   (LiteLLM's column needs ``L04_BENCH_LITELLM``).

Each figure is printed beside its baseline and their ratio, and each section with its setup
(pools, concurrency, processes, upstream latency). The bare workers send task events exactly
when the fleet's worker does. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import httpx

from gateway_client import InferenceRequest, Message, MessageRole, ModelGateway
from l04.processes import stop_process
from l04.redis_server import LocalRedis, free_port
from workers.control.rate_limiter import Limit, RateLimiter

ROOT = Path(__file__).resolve().parent.parent
LOGS = ROOT / "test-artifacts"
BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
LIMIT_WINDOW_S = 10.0
LIMIT_PER_WINDOW = 300
LIMITED_MODEL = f"""
[[models]]
model_id = "mock-limited"
provider = "mock"
provider_model = "mock"
context_window = 128000
max_output_tokens = 8192
limits = {{ requests_per_minute = {LIMIT_PER_WINDOW} }}
"""


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


def start(
    name: str,
    argv: list[str],
    env: dict[str, str],
    ready: Callable[[], bool],
    *,
    cwd: Path = ROOT,
    inherit_env: bool = True,
    wait: float = 60.0,
) -> Any:
    """Start ``argv`` (output in test-artifacts/bench-NAME.log) and wait until ``ready()``.

    ``inherit_env=False`` gives the process ``env`` alone (an outside program that should not
    see the benchmark's REDIS_URL and keys); ``wait`` is how long it may take to be ready.
    """
    LOGS.mkdir(exist_ok=True)
    with (LOGS / f"bench-{name}.log").open("wb") as log:
        process = subprocess.Popen(
            argv,
            env={**os.environ, **env} if inherit_env else env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
        )
    deadline = time.monotonic() + wait
    while not ready():
        if process.poll() is not None or time.monotonic() > deadline:
            stop_process(process)
            raise RuntimeError(f"{name} did not start; see {LOGS}/bench-{name}.log")
        time.sleep(0.1)
    return process


def http_up(url: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            httpx.get(url, timeout=0.5)
            return True
        except httpx.HTTPError:
            return False

    return check


def log_says(name: str, text: str) -> Callable[[], bool]:
    return lambda: text in (LOGS / f"bench-{name}.log").read_text(errors="replace")


def request(text: str, **fields: Any) -> InferenceRequest:
    fields.setdefault("model_id", "gpt-4o-mini")
    return InferenceRequest.create(
        agent_did="did:key:bench",
        messages=[Message(role=MessageRole.USER, content=text)],
        enable_cache=False,
        **fields,
    )


async def timed(call: Callable[[], Awaitable[Any]], n: int) -> list[float]:
    for _ in range(max(5, n // 20)):  # warm up
        await call()
    times = []
    for _ in range(n):
        started = time.perf_counter()
        await call()
        times.append((time.perf_counter() - started) * 1000)
    return times


class Setup:
    """What the figures were measured with, printed above each section."""

    def __init__(self, task_events: bool) -> None:
        self.task_events = task_events
        events = "on" if task_events else "off"
        self.fleet = (
            f"fleet: 1 `l04 worker` process, asyncio pool, concurrency 2000, task events {events}"
        )
        self.bare = (
            f"bare Celery: 1 worker process, threads pool, concurrency 50, task events {events}"
        )
        self.gevent = (
            f"bare Celery: 1 worker process, gevent pool, concurrency 2000, task events {events}"
        )
        self.direct = "direct: the measuring process itself, one asyncio loop"

    def lines(self, *parts: str) -> list[str]:
        return [f"   setup: {part}" for part in parts]


def row(label: str, value: float, base: float, unit: str, target: str = "") -> str:
    ratio = value / base if base else float("nan")
    return (
        f"  {label:<46} {value:>9.2f} {unit:<5} baseline {base:>9.2f}  ratio {ratio:5.2f}  {target}"
    )


async def round_trip(gateway: ModelGateway, upstream: str, n: int, setup: Setup) -> list[str]:
    from benchmarks.bare_app import call

    async with httpx.AsyncClient(timeout=30) as client:
        direct = await timed(lambda: client.post(f"{upstream}/v1/chat/completions", json=BODY), n)
    bare = await timed(lambda: asyncio.to_thread(lambda: call.delay().get(timeout=30)), n)
    counter = iter(range(10**9))
    fleet = await timed(lambda: gateway.execute(request(f"rt {next(counter)}")), n)
    return [
        f"1. round trip, one at a time, {n} each (ms)",
        *setup.lines(
            setup.fleet + " (OpenAI adapter)",
            setup.bare + " (httpx, Redis result backend)",
            setup.direct + " (httpx)",
            "upstream: `l04 mock-provider`, 0 ms",
        ),
        row("direct HTTP call p50", pct(direct, 50), pct(direct, 50), "ms"),
        row("bare Celery task p50 (vs direct)", pct(bare, 50), pct(direct, 50), "ms"),
        row("fleet p50 (vs bare Celery)", pct(fleet, 50), pct(bare, 50), "ms", "target <= 1.3"),
        row(
            "fleet p99 (vs bare Celery)", pct(fleet, 99), pct(bare, 99), "ms", "target p99 <= 10 ms"
        ),
    ]


async def throughput(gateway: ModelGateway, n: int, setup: Setup) -> list[str]:
    from benchmarks.bare_app import noop

    started = time.perf_counter()
    results = [noop.delay() for _ in range(n)]
    for result in results:
        await asyncio.to_thread(result.get, timeout=120)
    bare = n / (time.perf_counter() - started)
    started = time.perf_counter()
    handles = await asyncio.gather(
        *(gateway.submit(request(f"tp {i}", model_id="mock")) for i in range(n))
    )
    await asyncio.gather(*(h.result(timeout=120) for h in handles))
    fleet = n / (time.perf_counter() - started)
    return [
        f"2. throughput, {n} jobs at once, 0 ms upstream (jobs/s)",
        *setup.lines(
            setup.fleet + " (in-process mock provider)",
            setup.bare + " (no-op task, Redis result backend)",
        ),
        row("fleet (mock provider) vs bare Celery no-op", fleet, bare, "/s", "target >= 0.8"),
    ]


async def slow_upstream(admin: httpx.AsyncClient, upstream: str, n: int, ms: int) -> None:
    """The next ``n`` chat calls take ``ms`` each; in-flight counting starts again."""
    await admin.post(f"{upstream}/_mock/reset")
    await admin.post(
        f"{upstream}/_mock/faults",
        json={"latency_ms": ms, "count": n, "path": "/v1/chat/completions"},
    )


async def most_in_flight(admin: httpx.AsyncClient, upstream: str) -> int:
    return int((await admin.get(f"{upstream}/_mock/stats")).json()["max_in_flight"])


async def capacity(gateway: ModelGateway, upstream: str, n: int, setup: Setup) -> list[str]:
    from benchmarks.bare_app import GEVENT_QUEUE, call

    async with httpx.AsyncClient(timeout=60) as admin:
        await slow_upstream(admin, upstream, n, 1000)
        # The direct client is aiohttp: httpx's pool is itself slow with thousands of
        # connections, which would flatter the fleet.
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:

            async def one() -> None:
                async with session.post(f"{upstream}/v1/chat/completions", json=BODY) as r:
                    await r.read()

            started = time.perf_counter()
            await asyncio.gather(*(one() for _ in range(n)))
            direct = time.perf_counter() - started
        direct_most = await most_in_flight(admin, upstream)

        await slow_upstream(admin, upstream, n, 1000)
        started = time.perf_counter()
        results = [call.apply_async(queue=GEVENT_QUEUE) for _ in range(n)]
        waiting = [asyncio.to_thread(r.get, timeout=300) for r in results]
        await asyncio.gather(*waiting)
        bare = time.perf_counter() - started
        bare_most = await most_in_flight(admin, upstream)

        await slow_upstream(admin, upstream, n, 1000)
        started = time.perf_counter()
        handles = await asyncio.gather(*(gateway.submit(request(f"cap {i}")) for i in range(n)))
        await asyncio.gather(*(h.result(timeout=300) for h in handles))
        fleet = time.perf_counter() - started
        fleet_most = await most_in_flight(admin, upstream)
    return [
        f"3. in-flight capacity: {n} calls of 1 s (s to finish all)",
        *setup.lines(
            setup.fleet + " (OpenAI adapter)",
            setup.gevent + " (httpx, Redis result backend)",
            setup.direct + " (aiohttp, no connection limit)",
            "upstream: `l04 mock-provider`, 1,000 ms per call",
        ),
        row("fleet vs direct asyncio client", fleet, direct, "s", "target <= 1.25"),
        row("fleet vs bare Celery gevent task", fleet, bare, "s", "target <= 0.5"),
        row("bare Celery gevent task vs direct", bare, direct, "s"),
        f"  most calls in flight at the upstream: fleet {fleet_most}, bare gevent {bare_most}, "
        f"direct {direct_most}",
    ]


async def long_calls(
    gateway: ModelGateway, upstream: str, n: int, worker_pid: int, setup: Setup
) -> list[str]:
    """``n`` calls of 10 s: how many one worker process holds at once, and its memory then."""
    peak_rss = 0.0
    async with httpx.AsyncClient(timeout=60) as admin:
        await slow_upstream(admin, upstream, n, 10_000)
        started = time.perf_counter()
        handles = await asyncio.gather(*(gateway.submit(request(f"long {i}")) for i in range(n)))
        results = asyncio.gather(*(h.result(timeout=300) for h in handles))
        while not results.done():
            peak_rss = max(peak_rss, rss_mb(worker_pid))
            await asyncio.wait([results], timeout=0.25)
        await results
        elapsed = time.perf_counter() - started
        most = await most_in_flight(admin, upstream)
    return [
        f"3b. {n} calls of 10 s through one worker process",
        *setup.lines(setup.fleet + " (OpenAI adapter)", "upstream: 10,000 ms per call"),
        f"  most calls in flight at the upstream: {most} (target >= 1,000); all done in "
        f"{elapsed:.1f} s",
        f"6a. worker RSS at that peak: {peak_rss:.0f} MB",
    ]


async def streaming(gateway: ModelGateway, upstream: str, n: int, setup: Setup) -> list[str]:
    body = {**BODY, "stream": True}
    counter = iter(range(10**9))

    async with httpx.AsyncClient(timeout=30) as client:

        async def direct_first() -> None:
            url = f"{upstream}/v1/chat/completions"
            async with client.stream("POST", url, json=body) as response:
                async for _ in response.aiter_lines():
                    return

        direct = await timed(direct_first, n)

    async def fleet_first() -> None:
        async for _ in gateway.stream(request(f"st {next(counter)}")):
            return

    fleet = await timed(fleet_first, n)
    pieces = 5000
    words = " ".join(["a"] * pieces)  # one token a word: within max_tokens, nothing cut
    relay = request(
        "relay",
        model_id="mock",
        max_tokens=8000,
        metadata={"mock": {"chunks": pieces, "content": words}},
    )
    started = time.perf_counter()
    received = sum([1 async for chunk in gateway.stream(relay) if not chunk.is_final])
    relayed = received / (time.perf_counter() - started)
    return [
        f"4. streaming: time to first chunk, {n} streams one at a time (ms)",
        *setup.lines(
            setup.fleet + " (OpenAI adapter; relay: in-process mock provider)",
            setup.direct + " (httpx)",
            "upstream: `l04 mock-provider`, 0 ms, 9 chunks",
        ),
        row("fleet p50 vs direct", pct(fleet, 50), pct(direct, 50), "ms", "target +3 ms at most"),
        f"  difference at p50: {pct(fleet, 50) - pct(direct, 50):.2f} ms",
        f"  chunks relayed to one caller: {relayed:,.0f} per second ({received} chunks, one job)",
    ]


async def memory_growth(
    gateway: ModelGateway, jobs: int, worker_pid: int, setup: Setup
) -> list[str]:
    """Worker RSS after a warm-up, then after ``jobs`` more: what stays behind per job."""
    wave = 2000

    async def run(count: int, tag: str) -> None:
        for start in range(0, count, wave):
            size = min(wave, count - start)
            handles = await asyncio.gather(
                *(
                    gateway.submit(request(f"{tag} {start + i}", model_id="mock"))
                    for i in range(size)
                )
            )
            await asyncio.gather(*(h.result(timeout=300) for h in handles))

    await run(10_000, "warm")
    before = rss_mb(worker_pid)
    started = time.perf_counter()
    await run(jobs, "mem")
    after = rss_mb(worker_pid)
    return [
        f"6b. worker memory growth over {jobs:,} jobs (after a 10,000-job warm-up)",
        *setup.lines(setup.fleet + " (in-process mock provider)", f"waves of {wave} jobs"),
        row("RSS after vs before (MB)", after, before, "MB", "target <= 1.10"),
        f"  {jobs:,} jobs in {time.perf_counter() - started:.0f} s",
    ]


def batch_input(path: Path, model: str, lines: int, metadata: dict[str, Any] | None = None) -> Path:
    """An OpenAI batch input file of ``lines`` chat requests to ``model``."""
    body: dict[str, Any] = {"model": model, **({"metadata": metadata} if metadata else {})}
    path.write_text(
        "\n".join(
            json.dumps(
                {
                    "custom_id": f"r{i}",
                    "method": "POST",
                    "url": "/v1/chat/completions",
                    "body": {**body, "messages": [{"role": "user", "content": f"line {i}"}]},
                }
            )
            for i in range(lines)
        )
    )
    return path


async def batch_command(source: Path, batch_id: str, out: Path, *extra: str) -> Any:
    """`l04 batch submit`, as a user runs it, in a process of its own."""
    command = [sys.executable, "-m", "l04", "batch", "submit", str(source), "--id", batch_id]
    return await asyncio.create_subprocess_exec(
        *command,
        "--out",
        str(out),
        "--quiet",
        *extra,
        cwd=ROOT,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )


def most_in_window(stamps_ms: list[int], window_ms: float) -> int:
    """The most of the sorted ``stamps_ms`` inside any sliding window of ``window_ms``."""
    most, first = 0, 0
    for i, stamp in enumerate(stamps_ms):
        while stamp - stamps_ms[first] >= window_ms:
            first += 1
        most = max(most, i - first + 1)
    return most


async def batch_vs_interactive(
    gateway: ModelGateway, tmp: Path, lines: int, setup: Setup
) -> list[str]:
    """Interactive NORMAL jobs' p50 alone, then while a LOW batch runs on the same provider."""
    from gateway_client.batch import BatchRunner

    slow = {"mock": {"latency_ms": 20}}
    counter = iter(range(10**9))

    async def interactive() -> None:
        await gateway.execute(request(f"i {next(counter)}", model_id="mock", metadata=slow))

    alone = await timed(interactive, 100)
    source = batch_input(tmp / "batch.jsonl", "mock", lines, slow)
    started = time.perf_counter()
    batch = await batch_command(source, "bench", tmp, "--window", "256")
    await asyncio.sleep(1.5)
    during = await timed(interactive, 100)
    await batch.wait()
    elapsed = time.perf_counter() - started
    info = await BatchRunner(gateway).store.get("bench")
    assert info is not None
    return [
        f"7. a {lines}-line LOW batch and interactive NORMAL jobs on one provider (20 ms calls)",
        *setup.lines(
            setup.fleet + " (in-process mock provider, 20 ms a call)",
            "batch: `l04 batch submit --window 256` in a process of its own; "
            "interactive: the measuring process, one job at a time",
        ),
        row(
            "interactive p50 during the batch vs alone",
            pct(during, 50),
            pct(alone, 50),
            "ms",
            "target <= 2",
        ),
        f"  the batch: {info.completed} answered, {info.failed} failed, in {elapsed:.1f} s "
        f"({info.total / elapsed:.0f} lines/s)",
    ]


async def batch_at_limit(tmp: Path, url: str, lines: int, setup: Setup) -> list[str]:
    """A batch on a model limited to 300 requests per 10 s: the rate it keeps once saturated."""
    import redis

    source = batch_input(tmp / "limited.jsonl", "mock-limited", lines)
    started = time.time()
    batch = await batch_command(source, "limited", tmp)
    await batch.wait()
    client = redis.Redis.from_url(url)
    finished = sorted(
        int(client.hget(f"l04:job:{{b-limited-{i}}}", "finished_ms") or 0) for i in range(lines)
    )
    client.close()
    # Each window admits the limit: N lines need (N / limit) windows, so a batch kept at its
    # limit spans (N / limit - 1) windows from its first answer to its last.
    span_s = (finished[-1] - finished[0]) / 1000 + LIMIT_WINDOW_S
    rate = len(finished) / span_s
    limit = LIMIT_PER_WINDOW / LIMIT_WINDOW_S
    most = most_in_window(finished, LIMIT_WINDOW_S * 1000)
    return [
        f"8. a {lines}-line batch at a limit of {LIMIT_PER_WINDOW} per {LIMIT_WINDOW_S:.0f} s",
        *setup.lines(
            setup.fleet + " (in-process mock provider, catalog limit on `mock-limited`)",
            "batch: `l04 batch submit` in a process of its own",
        ),
        row("rate kept vs the limit (per s)", rate, limit, "/s", "target >= 0.9"),
        f"  most answers finishing in any sliding {LIMIT_WINDOW_S:.0f} s: {most} "
        f"(limit {LIMIT_PER_WINDOW}; the limit counts admissions, answers lag them)",
        f"  whole batch: {time.time() - started:.1f} s; provider 429s: none possible here "
        "(the limiter admits only what fits)",
    ]


async def limiter(url: str, seconds: float, setup: Setup) -> list[str]:
    from redis.asyncio import Redis

    client = Redis.from_url(url)
    rate_limiter = RateLimiter(client, window_s=1.0)
    key = "l04:rl:{bench:model}:rpm"
    decisions = admitted = 0
    stamps: list[int] = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        decision = await rate_limiter.admit([Limit(key, 500, 1)])
        decisions += 1
        if decision.admitted:
            admitted += 1
            stamps.append(decision.server_time_ms)
    await client.aclose()
    worst = most_in_window(stamps, 1000)
    return [
        "5. rate limiter (limit 500 per 1 s window, one process)",
        *setup.lines(setup.direct + ": RateLimiter.admit in a loop, one decision at a time"),
        f"  decisions per second: {decisions / seconds:,.0f}; admitted {admitted}",
        f"  most admitted in any sliding 1 s window: {worst} (limit 500: never over)",
    ]


def rss_mb(pid: int) -> float:
    for field in Path(f"/proc/{pid}/status").read_text().splitlines():
        if field.startswith("VmRSS:"):
            return int(field.split()[1]) / 1024
    return 0.0


SECTIONS = (
    "round-trip",
    "throughput",
    "capacity",
    "long-calls",
    "streaming",
    "limiter",
    "batch",
    "batch-limit",
    "memory",
    "http-door",
)


async def main(
    quick: bool, task_events: bool, memory_jobs: int, only: frozenset[str] = frozenset(SECTIONS)
) -> None:
    scale = 0.25 if quick else 1.0
    setup = Setup(task_events)
    server = LocalRedis().start()
    upstream_port = free_port()
    upstream = f"http://127.0.0.1:{upstream_port}"
    env = {
        "REDIS_URL": server.url,
        "OPENAI_BASE_URL": f"{upstream}/v1",
        "OPENAI_API_KEY": "sk-bench",
        "BENCH_REDIS_URL": server.url,
        "BENCH_UPSTREAM": upstream,
        "L04_USAGE_EVENTS": "false",
        "L04_EMBEDDING_PROVIDER": "none",
        "L04_TASK_EVENTS": "true" if task_events else "false",
    }
    catalog = Path(tempfile.mkdtemp()) / "catalog.toml"
    catalog.write_text((ROOT / "config" / "catalog.toml").read_text() + LIMITED_MODEL)
    env["L04_CATALOG"] = str(catalog)
    env["L04_RATE_LIMIT_WINDOW"] = str(LIMIT_WINDOW_S)
    os.environ.update(env)
    events = ["-E"] if task_events else []
    celery = ["-m", "celery", "-A", "benchmarks.bare_app", "worker", *events]
    celery += ["--without-mingle", "--without-gossip", "--loglevel", "INFO"]
    bare = [*celery, "-P", "threads", "-c", "50", "-n", "bare@local", "-Q", "celery"]
    gevent = [*celery, "-P", "gevent", "-c", "2000", "-n", "gevent@local", "-Q", "bare-gevent"]
    fleet = ["-m", "l04", "worker", "--providers", "openai,mock", "--concurrency", "2000"]
    fleet += ["--name", "bench@local"]
    services = [
        (
            "upstream",
            ["-m", "l04", "mock-provider", "--port", str(upstream_port)],
            http_up(f"{upstream}/v1/models"),
        ),
        ("worker", fleet, log_says("worker", " ready.")),
        ("bare", bare, log_says("bare", " ready.")),
        ("gevent", gevent, log_says("gevent", " ready.")),
    ]
    processes: list[Any] = []
    gateway: ModelGateway | None = None
    lines = [
        f"# L04 benchmarks, {time.strftime('%Y-%m-%d %H:%M')} UTC, {platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}; one redis-server "
        "(loopback), the upstream, the workers and the measuring client share the machine"
    ]
    try:  # whatever fails, everything started here is stopped
        for name, argv, ready in services:
            processes.append(start(name, [sys.executable, *argv], env, ready))
        worker_pid = processes[1].pid
        gateway = ModelGateway(redis_url=server.url)
        if "round-trip" in only:
            lines += await round_trip(gateway, upstream, int(400 * scale), setup)
        if "throughput" in only:
            lines += await throughput(gateway, int(2000 * scale), setup)
        if "capacity" in only:
            lines += await capacity(gateway, upstream, int(2000 * scale), setup)
        if "long-calls" in only:
            lines += await long_calls(gateway, upstream, int(2000 * scale), worker_pid, setup)
        if "streaming" in only:
            lines += await streaming(gateway, upstream, int(200 * scale), setup)
        if "limiter" in only:
            lines += await limiter(server.url, 5 * scale, setup)
        if "batch" in only:
            lines += await batch_vs_interactive(
                gateway, Path(tempfile.mkdtemp()), int(5000 * scale), setup
            )
        if "batch-limit" in only:
            # Whole windows of the limit, also in --quick: the kept rate is measured over them.
            lines += await batch_at_limit(Path(tempfile.mkdtemp()), server.url, 1500, setup)
        if "memory" in only:
            lines += await memory_growth(gateway, memory_jobs, worker_pid, setup)
    finally:
        if gateway is not None:
            await gateway.close()
        for process in processes:
            stop_process(process)
        server.stop()
    if "http-door" in only:
        from benchmarks import http_door

        lines += await http_door.figures(
            int(600 * scale), 6, int(2000 * scale), os.environ.get(http_door.LITELLM_VARIABLE)
        )
    print("\n".join(lines))
    (LOGS / "benchmarks.json").write_text(json.dumps(lines, indent=1))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="L04 figures beside their baselines")
    parser.add_argument("--quick", action="store_true", help="a quarter of the work")
    parser.add_argument(
        "--no-task-events",
        dest="task_events",
        action="store_false",
        help="workers (fleet and bare) without Celery task events (L04_TASK_EVENTS=false)",
    )
    parser.add_argument(
        "--memory-jobs",
        type=int,
        default=20_000,
        help="jobs run after the warm-up to measure memory growth (BENCHMARKS.md: 100000)",
    )
    parser.add_argument(
        "--only",
        default=",".join(SECTIONS),
        help=f"a comma-separated list of sections to run (default all: {','.join(SECTIONS)})",
    )
    options = parser.parse_args()
    chosen = frozenset(name.strip() for name in options.only.split(",") if name.strip())
    if not chosen <= set(SECTIONS):
        parser.error(f"unknown section(s): {', '.join(sorted(chosen - set(SECTIONS)))}")
    asyncio.run(main(options.quick, options.task_events, options.memory_jobs, chosen))
