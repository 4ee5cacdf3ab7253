"""A batch through the HTTP Batch API beside the same file through ``l04 batch submit`` (issue 16).

    python -m benchmarks.http_batches [--lines 10000] [--rounds 2]

Starts a private redis-server, one ``l04 worker --providers mock --concurrency 256`` (the
in-process mock provider, 0 ms) and one ``l04 serve --no-auth``, with the caches off
(``CACHE_ENABLED=false``). Then, in rounds that alternate which path goes first, the same
``--lines``-line chat file:

- ``l04 batch submit FILE --quiet`` in a process of its own (window 256), timed from the
  command's start to its exit (its results files written);
- the official ``openai`` SDK: ``files.create`` (the upload), ``batches.create``,
  ``batches.retrieve`` every 100 ms until ``completed``, and ``files.content`` of the output
  file, timed from the upload's start to the output's last byte (the server's window: 256).

Every line's answer is checked in both outputs. Printed, and written to
test-artifacts/benchmarks-http-batches.txt. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from openai import OpenAI

from benchmarks.run import LOGS, batch_command, batch_input, http_up, log_says, start
from l04.processes import stop_process
from l04.redis_server import LocalRedis, free_port


def drive_s(batch: dict[str, float | None]) -> float:
    """The driver's own time: from in_progress_at to finalizing_at (whole seconds: OpenAI's)."""
    return float((batch["finalizing_at"] or 0) - (batch["in_progress_at"] or 0))


def through_http(url: str, source: Path) -> tuple[float, int]:
    client = OpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0, timeout=600)
    started = time.perf_counter()
    with source.open("rb") as data:
        file_id = client.files.create(file=(source.name, data), purpose="batch").id
    batch = client.batches.create(
        input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    while batch.status not in ("completed", "failed", "cancelled", "expired"):
        time.sleep(0.1)
        batch = client.batches.retrieve(batch.id)
    assert batch.status == "completed" and batch.output_file_id, batch
    output = client.files.content(batch.output_file_id).text
    elapsed = time.perf_counter() - started
    client.close()
    print(f"  http: driven in {drive_s(batch.model_dump()):.0f} s", flush=True)
    return elapsed, len(output.splitlines())


async def through_command(source: Path, batch_id: str, out: Path) -> tuple[float, int]:
    started = time.perf_counter()
    process = await batch_command(source, batch_id, out, "--window", "256")
    assert await process.wait() == 0
    elapsed = time.perf_counter() - started
    results = (out / f"{batch_id}.results.jsonl").read_text().splitlines()
    from redis.asyncio import Redis

    from gateway_client.batch.store import BatchStore

    redis = Redis.from_url(os.environ["REDIS_URL"])
    info = await BatchStore(redis).get(batch_id)
    await redis.aclose()
    assert info is not None
    stamps = info.timestamps
    print(
        f"  cli: driven in {stamps['finalizing_at'] - stamps['in_progress_at']:.1f} s", flush=True
    )
    return elapsed, len(results)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    redis = LocalRedis().start()
    env = {
        "REDIS_URL": redis.url,
        "CACHE_ENABLED": "false",
        "L04_USAGE_EVENTS": "false",
        "L04_EMBEDDING_PROVIDER": "none",
        "L04_MOCK_LATENCY_MS": "0",
        "L04_BATCH_WINDOW": "256",
    }
    os.environ.update(env)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    worker = start(
        "batches-worker",
        [sys.executable, "-m", "l04", "worker", "--providers", "mock", "--concurrency", "256"],
        env,
        log_says("batches-worker", " ready."),
    )
    serve = ["-m", "l04", "serve", "--host", "127.0.0.1", "--port", str(port), "--no-auth"]
    server = start("batches-serve", [sys.executable, *serve], env, http_up(f"{url}/health"))
    tmp = Path(tempfile.mkdtemp(prefix="l04-bench-batches-"))
    lines: list[str] = []
    try:
        http_s: list[float] = []
        cli_s: list[float] = []
        for r in range(args.rounds):
            source = batch_input(tmp / f"round{r}.jsonl", "mock", args.lines)
            # Every round's questions are its own (no answer from an earlier round's jobs).
            text = source.read_text().replace('"line ', f'"round {r} line ')
            source.write_text(text)
            http_first = r % 2 == 0
            for path in ("http", "cli") if http_first else ("cli", "http"):
                if path == "http":
                    seconds, answered = through_http(url, source)
                    http_s.append(seconds)
                else:
                    copy = tmp / f"round{r}-cli.jsonl"
                    copy.write_text(text.replace('"round ', '"cli round '))
                    seconds, answered = asyncio.run(through_command(copy, f"bench-{r}", tmp))
                    cli_s.append(seconds)
                assert answered == args.lines, (path, answered)
                lines.append(
                    f"round {r + 1}: {path:<4} {seconds:6.2f} s  "
                    f"({args.lines / seconds:,.0f} lines/s)"
                )
                print(lines[-1], flush=True)
        http_rate = args.lines * len(http_s) / sum(http_s)
        cli_rate = args.lines * len(cli_s) / sum(cli_s)
        lines += [
            f"HTTP API: {http_rate:,.0f} lines/s; l04 batch submit: {cli_rate:,.0f} lines/s",
            f"HTTP / command: {http_rate / cli_rate:.2f}x (target >= 0.9x)",
            f"load average at the end: {os.getloadavg()[0]:.1f}; {platform.machine()}, "
            f"{os.cpu_count()} cores, Python {platform.python_version()}",
        ]
    finally:
        stop_process(server)
        stop_process(worker)
        redis.stop()
    print("\n".join(lines[-3:]))
    LOGS.mkdir(exist_ok=True)
    (LOGS / "benchmarks-http-batches.txt").write_text("\n".join(lines) + "\n")
    print(json.dumps({"written": str(LOGS / "benchmarks-http-batches.txt")}))


if __name__ == "__main__":
    main()
