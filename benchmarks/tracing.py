"""The cost of tracing (README "Tracing"): the round trip with tracing off, on with every trace
sampled, and on with 1 in 100, in alternating rounds of one invocation.

    python -m benchmarks.tracing [--jobs 300] [--rounds 3] [--parent /work/main]

The setup of ``benchmarks.run``'s section 1 (one job at a time, OpenAI adapter, ``l04
mock-provider`` at 0 ms, a private redis-server on loopback): each round starts one ``l04
worker`` per mode, in turn (each round starting with the next mode), and times ``--jobs``
round trips (``gateway.execute``) after a warm-up.

* off: no OTEL_* variable; the producer has no span.
* on, 1.0: the worker exports to an OTLP/HTTP sink in this process (``OTEL_BSP_SCHEDULE_DELAY``
  default); the producer submits inside a span of its own SDK (sampler ``always_on``), so every
  job is one sampled trace; the worker's sampler is the default ``parentbased_always_on``.
* on, 0.01: the producer's sampler is ``traceidratio`` 0.01 and the worker's
  ``parentbased_traceidratio`` 0.01: one trace in a hundred is recorded end to end.
* with ``--parent DIR``, a fourth mode: the worker of another checkout (the parent commit, with
  its own ``.venv``, which has no OpenTelemetry SDK), no OTEL_* variable: off against before.

Not part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import threading
import time
from contextlib import AbstractContextManager, nullcontext
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from benchmarks.run import LOGS, ROOT, http_up, log_says, pct, request, start
from gateway_client import ModelGateway
from l04.processes import stop_process
from l04.redis_server import LocalRedis, free_port


class Sink:
    """An OTLP/HTTP endpoint that accepts every export and counts the bytes."""

    def __init__(self) -> None:
        self.bytes = 0
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                sink.bytes += len(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def caller_tracer(ratio: float | None, sink: Sink) -> Any:
    """The producer's own SDK (not the global one), or None for no span."""
    if ratio is None:
        return None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import TraceIdRatioBased

    provider = TracerProvider(sampler=TraceIdRatioBased(ratio))
    exporter = OTLPSpanExporter(endpoint=f"{sink.url}/v1/traces")
    provider.add_span_processor(BatchSpanProcessor(exporter))
    return provider


MODES: dict[str, float | None] = {"off": None, "on, sampler 1.0": 1.0, "on, sampler 0.01": 0.01}


def worker_env(ratio: float | None, sink: Sink) -> dict[str, str]:
    if ratio is None:
        return {}
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": sink.url}
    if ratio < 1.0:
        env |= {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio"}
        env |= {"OTEL_TRACES_SAMPLER_ARG": str(ratio)}
    return env


async def measure(gateway: ModelGateway, tracer: Any, n: int, tag: str) -> list[float]:
    times: list[float] = []
    for i in range(-max(5, n // 10), n):  # warm-up first (negative i)
        span: AbstractContextManager[Any] = (
            tracer.get_tracer("bench").start_as_current_span("caller") if tracer else nullcontext()
        )
        started = time.perf_counter()
        with span:
            await gateway.execute(request(f"{tag} {i}"))
        if i >= 0:
            times.append((time.perf_counter() - started) * 1000)
    return times


async def main(jobs: int, rounds: int, parent: Path | None) -> None:
    server = LocalRedis().start()
    port = free_port()
    upstream = f"http://127.0.0.1:{port}"
    sink = Sink()
    env = {
        "REDIS_URL": server.url,
        "OPENAI_BASE_URL": f"{upstream}/v1",
        "OPENAI_API_KEY": "sk-bench",
        "L04_USAGE_EVENTS": "false",
        "L04_EMBEDDING_PROVIDER": "none",
    }
    for name in [n for n in os.environ if n.startswith("OTEL_")]:
        del os.environ[name]
    os.environ.update(env)
    argv = [sys.executable, "-m", "l04", "mock-provider", "--port", str(port)]
    mock = start("trace-upstream", argv, env, http_up(f"{upstream}/v1/models"))
    gateway = ModelGateway(redis_url=server.url)
    modes = dict(MODES) | ({"parent commit, off": None} if parent else {})
    results: dict[str, list[float]] = {mode: [] for mode in modes}
    try:
        for round_ in range(rounds):
            order = list(modes.items())
            shift = round_ % len(order)  # each mode goes first in turn: no order effect
            for mode, ratio in order[shift:] + order[:shift]:
                name = f"trace-{round_}-{mode.split(',')[0].replace(' ', '-')}{ratio or ''}"
                root = parent if mode.startswith("parent") and parent else ROOT
                argv = [str(root / ".venv" / "bin" / "python"), "-m", "l04", "worker"]
                argv += [
                    "--providers",
                    "openai",
                    "--concurrency",
                    "2000",
                    "--name",
                    f"{name}@local",
                ]
                worker = start(
                    name,
                    argv,
                    {**env, **worker_env(ratio, sink), "PYTHONDONTWRITEBYTECODE": "1"},
                    log_says(name, " ready."),
                    cwd=root,
                )
                tracer = caller_tracer(ratio, sink)
                try:
                    results[mode] += await measure(gateway, tracer, jobs, name)
                finally:
                    if tracer is not None:
                        tracer.shutdown()
                    stop_process(worker)
    finally:
        await gateway.close()
        stop_process(mock)
        server.stop()
    base = results["off"]
    print(
        f"# tracing, {time.strftime('%Y-%m-%d %H:%M')} UTC, {platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}: {rounds} rounds x "
        f"{jobs} round trips per mode, modes alternating; OTLP sink in the measuring process "
        f"({sink.bytes / 1e3:.0f} kB received)"
    )
    for mode, times in results.items():
        p50, p99 = pct(times, 50), pct(times, 99)
        mean = sum(times) / len(times)
        print(
            f"  {mode:<18} p50 {p50:6.2f} ms  ratio {p50 / pct(base, 50):5.2f}   "
            f"p99 {p99:6.2f} ms  ratio {p99 / pct(base, 99):5.2f}   mean {mean:6.2f} ms"
        )
    print(f"  logs: {LOGS}/bench-trace-*.log")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="The round trip's cost of tracing")
    parser.add_argument("--jobs", type=int, default=300, help="round trips per mode and round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the modes")
    parser.add_argument(
        "--parent", type=Path, help="a checkout of the parent commit (with .venv): a fourth mode"
    )
    arguments = parser.parse_args()
    asyncio.run(main(arguments.jobs, arguments.rounds, arguments.parent))
