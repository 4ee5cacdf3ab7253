"""The gateway's figures beside their baselines, from one run on this machine.

    python -m benchmarks.run [--quick]

Starts a private redis-server, the mock upstream (``l04 mock-provider``), one ``l04 worker``
and a bare Celery worker (``benchmarks/bare_app.py``), then measures:

1. round trip at low load (one request at a time): a direct HTTP call to the upstream, a bare
   Celery task making that call (result through Celery's Redis backend), and a job through the
   fleet (OpenAI adapter, same upstream);
2. throughput with a 0 ms upstream: the fleet's in-process mock provider vs a bare Celery no-op
   task, 2,000 jobs submitted at once, one worker process each;
3. in-flight capacity: N jobs against a 1 s upstream through the fleet vs a direct asyncio
   client making the same N calls, and the most calls the upstream saw in flight;
4. streaming: time to the first chunk through the fleet vs a direct streamed call;
5. the rate limiter: decisions per second in one process, and admitted vs the limit;
6. worker memory (RSS) after the runs above.

Each figure is printed beside its baseline and their ratio. Not part of the test suite.
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


def start(name: str, argv: list[str], env: dict[str, str], ready: Callable[[], bool]) -> Any:
    LOGS.mkdir(exist_ok=True)
    with (LOGS / f"bench-{name}.log").open("wb") as log:
        process = subprocess.Popen(
            argv, env={**os.environ, **env}, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT
        )
    deadline = time.monotonic() + 60
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


def row(label: str, value: float, base: float, unit: str, target: str = "") -> str:
    ratio = value / base if base else float("nan")
    return (
        f"  {label:<46} {value:>9.2f} {unit:<5} baseline {base:>9.2f}  ratio {ratio:5.2f}  {target}"
    )


async def round_trip(gateway: ModelGateway, upstream: str, n: int) -> list[str]:
    from benchmarks.bare_app import call

    async with httpx.AsyncClient(timeout=30) as client:
        direct = await timed(lambda: client.post(f"{upstream}/v1/chat/completions", json=BODY), n)
    bare = await timed(lambda: asyncio.to_thread(lambda: call.delay().get(timeout=30)), n)
    counter = iter(range(10**9))
    fleet = await timed(lambda: gateway.execute(request(f"rt {next(counter)}")), n)
    return [
        "1. round trip, one at a time (ms)",
        row("direct HTTP call p50", pct(direct, 50), pct(direct, 50), "ms"),
        row("bare Celery task p50 (vs direct)", pct(bare, 50), pct(direct, 50), "ms"),
        row("fleet p50 (vs bare Celery)", pct(fleet, 50), pct(bare, 50), "ms", "target <= 1.3"),
        row(
            "fleet p99 (vs bare Celery)", pct(fleet, 99), pct(bare, 99), "ms", "target p99 <= 10 ms"
        ),
    ]


async def throughput(gateway: ModelGateway, n: int) -> list[str]:
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
        row("fleet (mock provider) vs bare Celery no-op", fleet, bare, "/s", "target >= 0.8"),
    ]


async def capacity(gateway: ModelGateway, upstream: str, n: int) -> list[str]:
    async with httpx.AsyncClient(timeout=60) as admin:
        await admin.post(f"{upstream}/_mock/reset")
        await admin.post(
            f"{upstream}/_mock/faults",
            json={"latency_ms": 1000, "count": n, "path": "/v1/chat/completions"},
        )
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
        await admin.post(f"{upstream}/_mock/reset")
        await admin.post(
            f"{upstream}/_mock/faults",
            json={"latency_ms": 1000, "count": n, "path": "/v1/chat/completions"},
        )
        started = time.perf_counter()
        handles = await asyncio.gather(*(gateway.submit(request(f"cap {i}")) for i in range(n)))
        await asyncio.gather(*(h.result(timeout=120) for h in handles))
        fleet = time.perf_counter() - started
        stats = (await admin.get(f"{upstream}/_mock/stats")).json()
    return [
        f"3. in-flight capacity: {n} calls of 1 s (s to finish all)",
        row("fleet, one worker process vs direct asyncio", fleet, direct, "s", "target <= 1.25"),
        f"  most calls in flight at the upstream (one worker process): {stats['max_in_flight']}",
    ]


async def streaming(gateway: ModelGateway, upstream: str, n: int) -> list[str]:
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
    return [
        "4. streaming: time to first chunk (ms)",
        row("fleet p50 vs direct", pct(fleet, 50), pct(direct, 50), "ms", "target +3 ms at most"),
        f"  difference at p50: {pct(fleet, 50) - pct(direct, 50):.2f} ms",
    ]


async def batch_vs_interactive(gateway: ModelGateway, tmp: Path, lines: int) -> list[str]:
    """Interactive NORMAL jobs' p50 alone, then while a LOW batch runs on the same provider."""
    from gateway_client.batch import BatchRunner

    slow = {"mock": {"latency_ms": 20}}
    counter = iter(range(10**9))

    async def interactive() -> None:
        await gateway.execute(request(f"i {next(counter)}", model_id="mock", metadata=slow))

    alone = await timed(interactive, 100)
    source = tmp / "batch.jsonl"
    source.write_text(
        "\n".join(
            json.dumps(
                {
                    "custom_id": f"r{i}",
                    "method": "POST",
                    "url": "/v1/chat/completions",
                    "body": {
                        "model": "mock",
                        "messages": [{"role": "user", "content": f"line {i}"}],
                        "metadata": slow,
                    },
                }
            )
            for i in range(lines)
        )
    )
    # The batch runs as a user would run it: `l04 batch submit`, in a process of its own.
    command = [sys.executable, "-m", "l04", "batch", "submit", str(source), "--id", "bench"]
    command += ["--out", str(tmp), "--quiet", "--window", "256"]
    started = time.perf_counter()
    batch = await asyncio.create_subprocess_exec(
        *command, cwd=ROOT, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    await asyncio.sleep(1.5)
    during = await timed(interactive, 100)
    await batch.wait()
    elapsed = time.perf_counter() - started
    info = await BatchRunner(gateway).store.get("bench")
    assert info is not None
    return [
        f"7. a {lines}-line LOW batch and interactive NORMAL jobs on one provider (20 ms calls)",
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


async def batch_at_limit(gateway: ModelGateway, tmp: Path, url: str, lines: int) -> list[str]:
    """A batch on a model limited to 300 requests per 10 s: the rate it keeps once saturated."""
    import redis

    source = tmp / "limited.jsonl"
    source.write_text(
        "\n".join(
            json.dumps(
                {
                    "custom_id": f"r{i}",
                    "method": "POST",
                    "url": "/v1/chat/completions",
                    "body": {
                        "model": "mock-limited",
                        "messages": [{"role": "user", "content": f"{i}"}],
                    },
                }
            )
            for i in range(lines)
        )
    )
    command = [sys.executable, "-m", "l04", "batch", "submit", str(source), "--id", "limited"]
    command += ["--out", str(tmp), "--quiet"]
    started = time.time()
    batch = await asyncio.create_subprocess_exec(
        *command, cwd=ROOT, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
    )
    await batch.wait()
    client = redis.Redis.from_url(url)
    finished = sorted(
        int(client.hget(f"l04:job:{{b-limited-{i}}}", "finished_ms") or 0) for i in range(lines)
    )
    client.close()
    # Each window admits the limit: N lines need (N / limit) windows, so a batch kept at its
    # limit spans (N / limit - 1) windows from its first answer to its last.
    window_ms = LIMIT_WINDOW_S * 1000
    span_s = (finished[-1] - finished[0]) / 1000 + LIMIT_WINDOW_S
    rate = len(finished) / span_s
    limit = LIMIT_PER_WINDOW / LIMIT_WINDOW_S
    most, j = 0, 0
    for i, stamp in enumerate(finished):
        while stamp - finished[j] >= window_ms:
            j += 1
        most = max(most, i - j + 1)
    return [
        f"8. a {lines}-line batch at a limit of {LIMIT_PER_WINDOW} per {LIMIT_WINDOW_S:.0f} s",
        row("rate kept vs the limit (per s)", rate, limit, "/s", "target >= 0.9"),
        f"  most answers finishing in any sliding {LIMIT_WINDOW_S:.0f} s: {most} "
        f"(limit {LIMIT_PER_WINDOW}; the limit counts admissions, answers lag them)",
        f"  whole batch: {time.time() - started:.1f} s; provider 429s: none possible here "
        "(the limiter admits only what fits)",
    ]


async def limiter(url: str, seconds: float) -> list[str]:
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
    worst = 0
    j = 0
    for i, stamp in enumerate(stamps):
        while stamp - stamps[j] >= 1000:
            j += 1
        worst = max(worst, i - j + 1)
    return [
        "5. rate limiter (limit 500 per 1 s window, one process)",
        f"  decisions per second: {decisions / seconds:,.0f}; admitted {admitted}",
        f"  most admitted in any sliding 1 s window: {worst} (limit 500: never over)",
    ]


def rss_mb(pid: int) -> float:
    for field in Path(f"/proc/{pid}/status").read_text().splitlines():
        if field.startswith("VmRSS:"):
            return int(field.split()[1]) / 1024
    return 0.0


async def main(quick: bool) -> None:
    scale = 0.25 if quick else 1.0
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
    }
    catalog = Path(tempfile.mkdtemp()) / "catalog.toml"
    catalog.write_text((ROOT / "config" / "catalog.toml").read_text() + LIMITED_MODEL)
    env["L04_CATALOG"] = str(catalog)
    env["L04_RATE_LIMIT_WINDOW"] = str(LIMIT_WINDOW_S)
    os.environ.update(env)
    bare = ["-m", "celery", "-A", "benchmarks.bare_app", "worker", "-P", "threads", "-c", "50"]
    bare += ["--without-mingle", "--without-gossip", "-n", "bare@local", "--loglevel", "INFO"]
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
    ]
    processes: list[Any] = []
    gateway: ModelGateway | None = None
    lines = [
        f"# L04 benchmarks, {time.strftime('%Y-%m-%d %H:%M')} UTC, {platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}"
    ]
    try:  # whatever fails, everything started here is stopped
        for name, argv, ready in services:
            processes.append(start(name, [sys.executable, *argv], env, ready))
        gateway = ModelGateway(redis_url=server.url)
        lines += await round_trip(gateway, upstream, int(400 * scale))
        lines += await throughput(gateway, int(2000 * scale))
        lines += await capacity(gateway, upstream, int(2000 * scale))
        lines += await streaming(gateway, upstream, int(200 * scale))
        lines += await limiter(server.url, 5 * scale)
        lines += await batch_vs_interactive(gateway, Path(tempfile.mkdtemp()), int(5000 * scale))
        # Whole windows of the limit, also in --quick: the kept rate is measured over them.
        lines += await batch_at_limit(gateway, Path(tempfile.mkdtemp()), server.url, 1500)
        lines.append(f"6. worker RSS after the runs above: {rss_mb(processes[1].pid):.0f} MB")
    finally:
        if gateway is not None:
            await gateway.close()
        for process in processes:
            stop_process(process)
        server.stop()
    print("\n".join(lines))
    (LOGS / "benchmarks.json").write_text(json.dumps(lines, indent=1))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="L04 figures beside their baselines")
    parser.add_argument("--quick", action="store_true", help="a quarter of the work")
    asyncio.run(main(parser.parse_args().quick))
