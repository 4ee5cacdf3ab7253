"""The HTTP front door beside ``gateway_client`` and LiteLLM's proxy, from one run (issue 15).

    python -m benchmarks.http_door [--requests 600] [--rounds 6] [--streams 2000]
                                   [--litellm PATH]      # or L04_BENCH_LITELLM=PATH

Starts a private redis-server, ``l04 mock-provider`` (the upstream: OpenAI's wire format, 0 ms),
one ``l04 worker --providers openai`` (``gpt-4o-mini`` → that upstream), ``l04 serve --no-auth``
(one server process; the issue's targets are its), a second ``l04 serve`` with auth on and a key
made by ``l04 keys create`` (what a virtual key costs) and, given its path, LiteLLM's proxy
(``litellm --num_workers 1``; a config.yaml written to a temporary directory routes
``gpt-4o-mini`` to ``openai/gpt-4o-mini`` at the same upstream; no database, a master key made
for the run). LiteLLM is not a dependency of this project: install it in a virtual environment
of its own (``python3 -m venv DIR && DIR/bin/pip install 'litellm[proxy]'``) and pass
``DIR/bin/litellm``; without it its column is skipped, and the output says so.

Then, one request at a time and the same number through each path, in interleaved rounds (each
round runs every path, in an order rotated from round to round, so the drift of a shared machine
hits all of them alike):

1. ``ModelGateway.execute`` (the baseline); the official ``openai`` SDK (``AsyncOpenAI``,
   ``chat.completions.create``) → ``l04 serve`` → the fleet (without and with a key); the same
   SDK → LiteLLM's proxy; and the same SDK → the upstream itself (what the client costs alone);
2. the same paths streamed: time to the first chunk and to the end of the stream;
3. ``--streams`` streams opened at once against the ``--no-auth`` server process (then against
   LiteLLM's), the upstream pausing between the pieces of each answer so that all stay open:
   how many were open at once, the errors, the server's RSS.

Every request is different and the caches are off (``CACHE_ENABLED=false``, no embedding
provider), so each one reaches the upstream; the upstream's count is checked against the number
sent, and every answer against the upstream's text. Printed, and written to
test-artifacts/benchmarks-http-door.txt. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import httpx
from openai import AsyncOpenAI

from benchmarks.processes import cpu_seconds
from benchmarks.run import LOGS, ROOT, http_up, log_says, pct, request, row, start
from gateway_client import ModelGateway
from l04.mock_upstream import REPLY
from l04.processes import stop_process
from l04.redis_server import LocalRedis, free_port

MODEL = "gpt-4o-mini"
CHAT = "/v1/chat/completions"
#: The probe's upstream pauses this long before each of the 9 pieces of an answer: 27 s a stream,
#: longer than one worker takes to start 2,000 jobs on a busy 2-core machine.
CHUNK_DELAY_MS = 3000
LITELLM_VARIABLE = "L04_BENCH_LITELLM"


@dataclass(eq=False)
class Route:
    """One way to ask the same question, and what it measured."""

    label: str
    once: Callable[[str], Awaitable[str]]
    pieces: Callable[[str], AsyncIterator[str]]
    times: list[float] = field(default_factory=list)
    firsts: list[float] = field(default_factory=list)
    totals: list[float] = field(default_factory=list)
    wrong: int = 0
    calls: int = 0

    async def measure(self, text: str, streamed: bool, record: bool = True) -> None:
        self.calls += 1
        started = time.perf_counter()
        if not streamed:
            answer = await self.once(text)
            if record:
                self.times.append((time.perf_counter() - started) * 1000)
        else:
            first = 0.0
            parts = []
            async for piece in self.pieces(text):
                first = first or time.perf_counter()
                parts.append(piece)
            answer = "".join(parts)
            if record:
                self.firsts.append((first - started) * 1000)
                self.totals.append((time.perf_counter() - started) * 1000)
        if answer != REPLY:
            self.wrong += 1


def gateway_route(gateway: ModelGateway) -> Route:
    async def once(text: str) -> str:
        return (await gateway.execute(request(text))).content

    async def pieces(text: str) -> AsyncIterator[str]:
        async for chunk in gateway.stream(request(text)):
            yield chunk.content_delta

    return Route("gateway_client (ModelGateway.execute / .stream)", once, pieces)


def sdk_route(label: str, client: AsyncOpenAI) -> Route:
    async def once(text: str) -> str:
        answer = await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": text}]
        )
        return answer.choices[0].message.content or ""

    async def pieces(text: str) -> AsyncIterator[str]:
        stream = await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": text}], stream=True
        )
        async for chunk in stream:
            yield "".join(choice.delta.content or "" for choice in chunk.choices)

    return Route(label, once, pieces)


async def warm_up(routes: list[Route], n: int, tag: str) -> None:
    """Connections, lazy imports, the worker's first jobs: not measured."""
    for route in routes:
        for i in range(n):
            await route.measure(f"{tag} warm {route.label} {i}", False, record=False)
            await route.measure(f"{tag} warm-stream {route.label} {i}", True, record=False)


async def interleaved(routes: list[Route], n: int, rounds: int, tag: str) -> None:
    """``n`` requests and ``n`` streams through each route, in ``rounds`` rotated rounds."""
    per_round = n // rounds
    for r in range(rounds):
        order = routes[r % len(routes) :] + routes[: r % len(routes)]
        for streamed in (False, True):
            for route in order:
                for i in range(per_round):
                    await route.measure(f"{tag} {r} {i} {streamed} {route.label}", streamed)


def family(pid: int) -> set[int]:
    """``pid`` and its descendants (a server's worker processes, if it has any)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat[stat.rindex(")") + 2 :].split()[1])
    members, grew = {pid}, True
    while grew:
        more = {child for child, parent in parents.items() if parent in members} - members
        members |= more
        grew = bool(more)
    return members


def tree_rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` and its descendants."""
    total = 0.0
    for member in family(pid):
        try:
            status = Path(f"/proc/{member}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) / 1024
    return total


def tree_cpu_s(pid: int) -> float:
    """User + system CPU of ``pid`` and its descendants so far."""
    total = 0.0
    for member in family(pid):
        try:
            total += cpu_seconds(member)
        except OSError:
            continue
    return total


def litellm_config(tmp: Path, upstream: str) -> Path:
    """LiteLLM's config.yaml (JSON is YAML): our model, at our upstream, nothing else."""
    config = {
        "model_list": [
            {
                "model_name": MODEL,
                "litellm_params": {
                    "model": f"openai/{MODEL}",
                    "api_base": f"{upstream}/v1",
                    "api_key": "sk-bench",
                },
            }
        ],
        "litellm_settings": {"set_verbose": False, "telemetry": False},
    }
    path = tmp / "config.yaml"
    path.write_text(json.dumps(config, indent=2))
    return path


def litellm_missing(litellm: str | None) -> str | None:
    """Why LiteLLM's column cannot run, or None."""
    if litellm is None:
        return (
            f"LiteLLM: no --litellm and no ${LITELLM_VARIABLE}; its column is skipped "
            "(python3 -m venv DIR && DIR/bin/pip install 'litellm[proxy]', then "
            "--litellm DIR/bin/litellm)"
        )
    if not Path(litellm).is_file():
        return f"LiteLLM: {litellm} does not exist; its column is skipped"
    return None


def has_command(*words: str) -> bool:
    """Whether this checkout has ``l04 WORDS`` (``l04 serve`` and ``l04 keys`` came late)."""
    probe = [sys.executable, "-m", "l04", *words, "--help"]
    return subprocess.run(probe, cwd=ROOT, capture_output=True).returncode == 0


def new_key(env: dict[str, str]) -> str:
    """A virtual key with no limits of its own, made as a user makes one."""
    argv = [sys.executable, "-m", "l04", "keys", "create", "--agent", "did:key:bench", "--json"]
    made = subprocess.run(
        [*argv, "--name", "bench"], cwd=ROOT, env={**os.environ, **env}, capture_output=True
    )
    if made.returncode:
        raise RuntimeError(f"l04 keys create failed: {made.stderr.decode(errors='replace')}")
    return str(json.loads(made.stdout)["key"])


async def hold_streams(
    label: str, base_url: str, key: str, n: int, upstream: str, pid: int, health: str
) -> list[str]:
    """Open ``n`` streams at once, each paused upstream between its pieces; count and check."""
    async with httpx.AsyncClient(timeout=30) as admin:
        await admin.post(f"{upstream}/_mock/reset")
        fault = {"chunk_delay_ms": CHUNK_DELAY_MS, "count": n, "path": CHAT}
        await admin.post(f"{upstream}/_mock/faults", json=fault)
        idle_rss = tree_rss_mb(pid)
        peak_rss = idle_rss
        errors: Counter[str] = Counter()
        state = Counter[str]()
        last_opened = [0.0]
        headers = {"Authorization": f"Bearer {key}"}
        connector = aiohttp.TCPConnector(limit=0)
        timeout = aiohttp.ClientTimeout(total=600)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

            async def one(i: int) -> None:
                body = {
                    "model": MODEL,
                    "messages": [{"role": "user", "content": f"probe {label} {i}"}],
                    "stream": True,
                }
                opened = done = False
                parts: list[str] = []
                try:
                    url = f"{base_url}/chat/completions"
                    async with session.post(url, json=body, headers=headers) as response:
                        if response.status != 200:
                            errors[f"HTTP {response.status}"] += 1
                            await response.read()
                            return
                        async for raw in response.content:
                            line = raw.decode().strip()
                            if not line.startswith("data:"):
                                continue
                            data = line[5:].strip()
                            if data == "[DONE]":
                                done = True
                                break
                            event = json.loads(data)
                            if "error" in event:
                                errors[f"error event {event['error'].get('code')}"] += 1
                                return
                            if not opened:
                                opened = True
                                state["open"] += 1
                                state["most"] = max(state["most"], state["open"])
                                last_opened[0] = time.perf_counter()
                            for choice in event.get("choices") or []:
                                parts.append((choice.get("delta") or {}).get("content") or "")
                    if not done:
                        errors["ended without [DONE]"] += 1
                    elif "".join(parts) != REPLY:
                        errors["wrong answer"] += 1
                    else:
                        state["ok"] += 1
                except (aiohttp.ClientError, TimeoutError, json.JSONDecodeError) as exc:
                    errors[type(exc).__name__] += 1
                finally:
                    if opened:
                        state["open"] -= 1

            started = time.perf_counter()
            everything = asyncio.gather(*(one(i) for i in range(n)))
            while not everything.done():
                peak_rss = max(peak_rss, tree_rss_mb(pid))
                await asyncio.wait([everything], timeout=0.25)
            await everything
            elapsed = time.perf_counter() - started
        stats = (await admin.get(f"{upstream}/_mock/stats")).json()
        alive = (await admin.get(health)).status_code
    failed = ", ".join(f"{kind}: {count}" for kind, count in errors.most_common()) or "none"
    return [
        f"  {label}: {state['ok']} of {n} streams answered whole; errors: {failed}",
        f"    most open at once (first chunk received, [DONE] not yet): {state['most']}; "
        f"most calls in flight at the upstream: {stats['max_in_flight']}; the last stream "
        f"opened after {last_opened[0] - started:.1f} s; all done in {elapsed:.1f} s",
        f"    server RSS: {idle_rss:.0f} MB idle, {peak_rss:.0f} MB at the peak; "
        f"GET /{health.split('/', 3)[3]} afterwards: {alive}",
    ]


def latency_rows(routes: list[Route]) -> list[str]:
    lines = [f"  {'':<54} {'p50':>8} {'p99':>8}"]
    for route in routes:
        lines.append(f"  {route.label:<54} {pct(route.times, 50):8.2f} {pct(route.times, 99):8.2f}")
    return lines


def stream_rows(routes: list[Route]) -> list[str]:
    lines = [f"  {'':<54} {'first p50':>9} {'first p99':>9} {'end p50':>8} {'end p99':>8}"]
    for route in routes:
        lines.append(
            f"  {route.label:<54} {pct(route.firsts, 50):9.2f} {pct(route.firsts, 99):9.2f} "
            f"{pct(route.totals, 50):8.2f} {pct(route.totals, 99):8.2f}"
        )
    return lines


def comparisons(
    base: Route,
    door: Route | None,
    keyed: Route | None,
    litellm: Route | None,
    values: Callable[[Route], list[float]],
) -> list[str]:
    """The issue's targets are the door's (``--no-auth``) against gateway_client and LiteLLM."""
    if door is None:
        return ["  door: `l04 serve` is not in this checkout; its comparisons are left out"]
    lines = [
        row("door p50 vs gateway_client p50", pct(values(door), 50), pct(values(base), 50), "ms"),
        f"  the door's added p50: {pct(values(door), 50) - pct(values(base), 50):+.2f} ms "
        "(target <= +1.5 ms)",
    ]
    if keyed is not None:
        lines.append(
            f"  a virtual key's cost (auth on vs --no-auth) at p50: "
            f"{pct(values(keyed), 50) - pct(values(door), 50):+.2f} ms"
        )
    if litellm is None:
        return [*lines, "  LiteLLM: not run (no --litellm); its comparisons are left out"]
    return [
        *lines,
        row(
            "door p50 vs LiteLLM p50",
            pct(values(door), 50),
            pct(values(litellm), 50),
            "ms",
            "target <= 0.5",
        ),
        row(
            "door p99 vs LiteLLM p99",
            pct(values(door), 99),
            pct(values(litellm), 99),
            "ms",
            "target < 1",
        ),
    ]


async def figures(requests: int, rounds: int, streams: int, litellm: str | None) -> list[str]:
    """Start everything, measure, stop everything; the lines of the report (also printed)."""
    skipped = [why] if (why := litellm_missing(litellm)) else []
    if skipped:
        litellm = None
        print(why, flush=True)
    server = LocalRedis().start()
    upstream_port, door_port, litellm_port = free_port(), free_port(), free_port()
    upstream = f"http://127.0.0.1:{upstream_port}"
    door_url = f"http://127.0.0.1:{door_port}"
    litellm_url = f"http://127.0.0.1:{litellm_port}"
    env = {
        "REDIS_URL": server.url,
        "OPENAI_BASE_URL": f"{upstream}/v1",
        "OPENAI_API_KEY": "sk-bench",
        "CACHE_ENABLED": "false",
        "L04_USAGE_EVENTS": "false",
        "L04_EMBEDDING_PROVIDER": "none",
    }
    os.environ.update(env)
    tmp = Path(tempfile.mkdtemp(prefix="l04-bench-door-"))
    has_door = has_command("serve")
    has_keys = has_door and has_command("keys", "create")
    keyed_port = free_port()
    keyed_url = f"http://127.0.0.1:{keyed_port}"
    master_key = f"sk-bench-{secrets.token_hex(16)}"  # LiteLLM refuses to start without one
    worker = ["-m", "l04", "worker", "--providers", "openai", "--concurrency", "2000"]
    # name, command, ready when, environment, options of start()
    services: list[tuple[str, list[str], Callable[[], bool], dict[str, str], dict[str, Any]]] = [
        (
            "door-upstream",
            [sys.executable, "-m", "l04", "mock-provider", "--port", str(upstream_port)],
            http_up(f"{upstream}/v1/models"),
            env,
            {},
        ),
        (
            "door-worker",
            [sys.executable, *worker, "--name", "door@local"],
            log_says("door-worker", " ready."),
            env,
            {},
        ),
    ]
    if has_door:
        serve = ["-m", "l04", "serve", "--host", "127.0.0.1", "--port", str(door_port)]
        services.append(
            (
                "door-serve",
                [sys.executable, *serve, "--workers", "1", "--no-auth"],
                http_up(f"{door_url}/health"),
                env,
                {},
            )
        )
    if has_keys:
        serve = ["-m", "l04", "serve", "--host", "127.0.0.1", "--port", str(keyed_port)]
        services.append(
            (
                "door-serve-keys",
                [sys.executable, *serve, "--workers", "1"],
                http_up(f"{keyed_url}/health"),
                env,
                {},
            )
        )
    if litellm is not None:
        litellm_env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(tmp),
            "LITELLM_MASTER_KEY": master_key,
            "LITELLM_LOG": "ERROR",
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # no fetch of the price list at start
            # Its upstream connections: 1,000 and 500 a host by default; the fleet's worker may
            # hold 2,000 (L04_HTTP_MAX_CONNECTIONS), and so may LiteLLM here.
            "AIOHTTP_CONNECTOR_LIMIT": "2000",
            "AIOHTTP_CONNECTOR_LIMIT_PER_HOST": "2000",
        }
        argv = [litellm, "--config", str(litellm_config(tmp, upstream)), "--host", "127.0.0.1"]
        argv += ["--port", str(litellm_port), "--num_workers", "1"]
        services.append(
            (
                "door-litellm",
                argv,
                http_up(f"{litellm_url}/health/liveliness"),
                litellm_env,
                {"cwd": tmp, "inherit_env": False, "wait": 240.0},
            )
        )
    lines = [
        f"# the HTTP front door, {time.strftime('%Y-%m-%d %H:%M')} UTC, {platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}; one redis-server "
        "(loopback), the upstream, the worker, the servers and the measuring client share the "
        "machine",
        *skipped,
    ]
    processes: dict[str, Any] = {}
    clients: list[AsyncOpenAI] = []
    gateway: ModelGateway | None = None
    try:  # whatever fails, everything started here is stopped
        for name, argv, ready, environment, options in services:
            processes[name] = start(name, argv, environment, ready, **options)
        gateway = ModelGateway(redis_url=server.url)
        base = gateway_route(gateway)
        routes = [base]
        door = keyed = lite = None
        if has_door:
            clients.append(AsyncOpenAI(base_url=f"{door_url}/v1", api_key="sk-any", max_retries=0))
            door = sdk_route("openai SDK → l04 serve --no-auth → fleet", clients[-1])
            routes.append(door)
        if has_keys:
            key = new_key(env)
            clients.append(AsyncOpenAI(base_url=f"{keyed_url}/v1", api_key=key, max_retries=0))
            keyed = sdk_route("openai SDK → l04 serve, a virtual key → fleet", clients[-1])
            routes.append(keyed)
        if litellm is not None:
            clients.append(
                AsyncOpenAI(base_url=f"{litellm_url}/v1", api_key=master_key, max_retries=0)
            )
            lite = sdk_route("openai SDK → LiteLLM proxy → upstream", clients[-1])
            routes.append(lite)
        clients.append(AsyncOpenAI(base_url=f"{upstream}/v1", api_key="sk-bench", max_retries=0))
        direct = sdk_route("openai SDK → upstream (the client's own cost)", clients[-1])
        routes.append(direct)

        async with httpx.AsyncClient(timeout=30) as admin:
            before = (await admin.get(f"{upstream}/_mock/stats")).json()["requests"].get(CHAT, 0)
            tag = f"run {time.time_ns()}"
            await warm_up(routes, max(10, requests // 10), tag)
            load_before = os.getloadavg()
            servers = {
                route: processes[name].pid
                for route, name in (
                    (door, "door-serve"),
                    (keyed, "door-serve-keys"),
                    (lite, "door-litellm"),
                )
                if route is not None
            }
            cpu_before = {route: tree_cpu_s(pid) for route, pid in servers.items()}
            assert server.process is not None
            fleet_pids = (processes["door-worker"].pid, server.process.pid)
            fleet_before = [tree_cpu_s(pid) for pid in fleet_pids]
            started = time.perf_counter()
            await interleaved(routes, requests, rounds, tag)
            elapsed = time.perf_counter() - started
            cpu = {
                route.label.split(" → ")[1]: (tree_cpu_s(pid) - cpu_before[route])
                / (len(route.times) + len(route.totals))
                for route, pid in servers.items()
            }
            jobs = sum(len(r.times) + len(r.totals) for r in (base, door, keyed) if r is not None)
            worker_cpu, redis_cpu = (
                (tree_cpu_s(pid) - used) / jobs
                for pid, used in zip(fleet_pids, fleet_before, strict=True)
            )
            load_after = os.getloadavg()
            after = (await admin.get(f"{upstream}/_mock/stats")).json()["requests"].get(CHAT, 0)
        sent = sum(route.calls for route in routes)
        wrong = sum(route.wrong for route in routes)
        events = "off" if os.environ.get("L04_TASK_EVENTS") == "false" else "on"
        setup = [
            "   setup: 1 `l04 worker --providers openai --concurrency 2000` process, task events "
            f"{events}; `l04 serve --workers 1 --no-auth` and `l04 serve --workers 1` (a key "
            "without limits), JSON access logs on; LiteLLM `--num_workers 1`, no database, a "
            "master key, LITELLM_LOG=ERROR; upstream `l04 mock-provider`, 0 ms; the SDK is "
            "`AsyncOpenAI`, max_retries=0, in the measuring process (one asyncio loop)",
            f"   load average before {' '.join(f'{x:.2f}' for x in load_before)}, after "
            f"{' '.join(f'{x:.2f}' for x in load_after)}; {elapsed:.0f} s",
            f"   the upstream answered {after - before} of the {sent} calls sent (warm-ups "
            f"included); answers not the upstream's text: {wrong}",
            "   server CPU (user + system, all threads) per measured call, plain and streamed "
            "alike: "
            + ", ".join(
                [f"{name} {used * 1000:.2f} ms" for name, used in cpu.items()]
                + [
                    f"the fleet's worker {worker_cpu * 1000:.2f} ms and redis-server "
                    f"{redis_cpu * 1000:.2f} ms a job (gateway_client's and the doors')"
                ]
            ),
        ]
        n = requests // rounds * rounds
        lines += [
            f"1. round trip, one request at a time, {n} through each path in {rounds} "
            "interleaved rounds (ms)",
            *setup,
            *latency_rows(routes),
            *comparisons(base, door, keyed, lite, lambda route: route.times),
            f"2. streamed, {n} streams one at a time through each path: time to the first chunk "
            "and to the end (ms)",
            *stream_rows(routes),
            "   time to the first chunk:",
            *comparisons(base, door, keyed, lite, lambda route: route.firsts),
        ]
        print("\n".join(lines), flush=True)
        if streams:
            probe = [
                f"3. {streams} streams opened at once, each paused {CHUNK_DELAY_MS} ms upstream "
                "before each of its 9 pieces (aiohttp client, one connection a stream)",
                f"   load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
            ]
            if has_door:
                probe += await hold_streams(
                    "l04 serve (1 process) → fleet",
                    f"{door_url}/v1",
                    "sk-any",
                    streams,
                    upstream,
                    processes["door-serve"].pid,
                    f"{door_url}/health",
                )
            if litellm is not None:
                probe += await hold_streams(
                    "LiteLLM proxy (1 worker)",
                    f"{litellm_url}/v1",
                    master_key,
                    streams,
                    upstream,
                    processes["door-litellm"].pid,
                    f"{litellm_url}/health/liveliness",
                )
            probe.append(f"   load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
            print("\n".join(probe), flush=True)
            lines += probe
    finally:
        for client in clients:
            await client.close()
        if gateway is not None:
            await gateway.close()
        for process in reversed(processes.values()):
            stop_process(process)
        server.stop()
    return lines


async def main(requests: int, rounds: int, streams: int, litellm: str | None) -> None:
    lines = await figures(requests, rounds, streams, litellm)
    (LOGS / "benchmarks-http-door.txt").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=600, help="per path, and streams per path")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument(
        "--streams", type=int, default=2000, help="streams held at once by one server (0: none)"
    )
    parser.add_argument(
        "--litellm",
        default=os.environ.get(LITELLM_VARIABLE),
        help=f"the `litellm` command of a venv with litellm[proxy] (default ${LITELLM_VARIABLE}); "
        "without it LiteLLM's column is skipped",
    )
    options = parser.parse_args()
    asyncio.run(main(options.requests, options.rounds, options.streams, options.litellm))
