"""Throughput of ``l04 worker --processes N`` against one process, and the CPU each process used.

    python -m benchmarks.processes [--jobs 2000] [--rounds 2] [--processes 2]

The setup of ``benchmarks.run``'s section 2: a private redis-server on loopback, the fleet's
in-process mock provider (0 ms), concurrency 2000 per process, task events on; ``--jobs`` jobs
submitted at once by the measuring process, which then waits for every result. Each round starts
a worker with one process, then one with ``--processes`` (a supervisor and its processes), warms
it up with 200 jobs, and measures. CPU is read from ``/proc/<pid>/stat`` (user + system) over
the measured part only: every worker process, the supervisor, redis-server and the measuring
process. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import re
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.run import LOGS, log_says, request, start
from gateway_client import ModelGateway
from l04.processes import stop_process
from l04.redis_server import LocalRedis

WARM_UP = 200


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (fields 14 and 15 of /proc/<pid>/stat)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # after the command, which may hold spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def run_jobs(gateway: ModelGateway, n: int, tag: str) -> float:
    """Submit ``n`` jobs at once and wait for all; the seconds it took."""
    started = time.perf_counter()
    handles = await asyncio.gather(
        *(gateway.submit(request(f"{tag} {i}", model_id="mock")) for i in range(n))
    )
    await asyncio.gather(*(h.result(timeout=300) for h in handles))
    return time.perf_counter() - started


async def one_round(
    server: LocalRedis, processes: int, jobs: int, tag: str, env: dict[str, str]
) -> dict[str, Any]:
    name = f"procs-{processes}-{tag}"
    argv = [sys.executable, "-m", "l04", "worker", "--providers", "mock"]
    argv += ["--concurrency", "2000", "--name", f"{name}@local", "--processes", str(processes)]
    ready = " ready." if processes == 1 else f"all {processes} processes ready"
    worker = start(name, argv, env, log_says(name, ready))
    try:
        if processes == 1:
            workers = {"worker": worker.pid}
        else:
            log = (LOGS / f"bench-{name}.log").read_text()
            found = re.findall(r"process (\d+) of \d+ started \(pid (\d+)", log)
            workers = {f"process {i}": int(pid) for i, pid in found}
            workers["supervisor"] = worker.pid
        assert server.process is not None
        watched = {**workers, "redis-server": server.process.pid, "client": os.getpid()}
        async with ModelGateway(redis_url=server.url) as gateway:
            await run_jobs(gateway, WARM_UP, f"{tag} warm")
            before = {who: cpu_seconds(pid) for who, pid in watched.items()}
            elapsed = await run_jobs(gateway, jobs, tag)
            used = {who: cpu_seconds(pid) - before[who] for who, pid in watched.items()}
    finally:
        stop_process(worker, 30)
    return {
        "processes": processes,
        "jobs": jobs,
        "rate": jobs / elapsed,
        "elapsed": elapsed,
        "cpu": used,
    }


def describe(result: dict[str, Any]) -> str:
    elapsed = result["elapsed"]
    cpu = ", ".join(
        f"{who} {used:.2f} s ({used / elapsed:.0%})" for who, used in result["cpu"].items()
    )
    label = "1 process" if result["processes"] == 1 else f"{result['processes']} processes"
    fleet = sum(
        used for who, used in result["cpu"].items() if who not in ("redis-server", "client")
    )
    return (
        f"  {label:<12} {result['rate']:7.0f} jobs/s in {elapsed:5.2f} s; worker CPU "
        f"{fleet / result['jobs'] * 1000:.2f} ms a job; CPU: {cpu}"
    )


async def main(jobs: int, rounds: int, processes: int) -> None:
    server = LocalRedis().start()
    env = {
        "REDIS_URL": server.url,
        "L04_USAGE_EVENTS": "false",
        "L04_EMBEDDING_PROVIDER": "none",
        "L04_TASK_EVENTS": "true",
    }
    os.environ.update(env)
    lines = [
        f"# worker processes, {time.strftime('%Y-%m-%d %H:%M')} UTC, {platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}",
        f"9. throughput, {jobs} jobs at once, 0 ms upstream: 1 process vs --processes "
        f"{processes} ({rounds} rounds, alternating)",
        "   setup: `l04 worker --providers mock --concurrency 2000` (in-process mock provider, "
        "task events on); one redis-server on loopback; the measuring client, Redis and the "
        "workers share the machine; CPU = user + system over the measured jobs "
        "(% of the wall time)",
    ]
    ratios = []
    lines.append("   load average before: " + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    try:
        for i in range(rounds):
            one = await one_round(server, 1, jobs, f"r{i}a", env)
            many = await one_round(server, processes, jobs, f"r{i}b", env)
            ratios.append(many["rate"] / one["rate"])
            lines += [f"  round {i + 1}", describe(one), describe(many)]
            print("\n".join(lines[-3:]), flush=True)
    finally:
        server.stop()
    lines.append("   load average after: " + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    lines.append(
        f"  --processes {processes} / 1 process: " + ", ".join(f"{ratio:.2f}" for ratio in ratios)
    )
    print("\n".join(lines[-2:]))
    (LOGS / "benchmarks-processes.txt").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--processes", type=int, default=2)
    options = parser.parse_args()
    asyncio.run(main(options.jobs, options.rounds, options.processes))
