"""A background response's time from create to its ``queued`` answer (issue 16), one run.

    python -m benchmarks.responses [--requests 500] [--rounds 5]

Starts a private redis-server, one ``l04 worker --providers mock`` and one ``l04 serve
--no-auth``; then, one request at a time with the official ``openai`` SDK (``AsyncOpenAI``), in
interleaved rounds so that the drift of a shared machine hits every path alike:

1. ``responses.create(background=True)``: from the call to the ``queued`` answer (the job
   submitted, its record written; the job itself runs on the worker meanwhile);
2. for scale, the whole round trips of ``responses.create`` (not background) and of
   ``chat.completions.create`` for the same question, answered by the mock provider (0 ms).

Every request is different and the caches are off. After the runs, every background response
is read back with ``responses.retrieve`` and must be ``completed``. Printed, and written to
test-artifacts/benchmarks-responses.txt. Not part of the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import time
from collections.abc import Awaitable, Callable

from openai import AsyncOpenAI

from benchmarks.run import LOGS, http_up, log_says, pct, start
from l04.processes import stop_process
from l04.redis_server import LocalRedis, free_port

MODEL = "mock"


async def timed(call: Callable[[], Awaitable[object]]) -> float:
    started = time.perf_counter()
    await call()
    return (time.perf_counter() - started) * 1000


async def figures(requests: int, rounds: int) -> list[str]:
    server = LocalRedis().start()
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        "REDIS_URL": server.url,
        "CACHE_ENABLED": "false",
        "L04_USAGE_EVENTS": "false",
        "L04_EMBEDDING_PROVIDER": "none",
    }
    os.environ.update(env)
    processes = []
    client: AsyncOpenAI | None = None
    lines = [
        f"# background responses, {time.strftime('%Y-%m-%d %H:%M')} UTC, {platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}; one redis-server "
        "(loopback), the worker, the server and the measuring client share the machine",
    ]
    try:
        processes.append(
            start(
                "responses-worker",
                [sys.executable, "-m", "l04", "worker", "--providers", "mock"],
                env,
                log_says("responses-worker", " ready."),
            )
        )
        serve = ["-m", "l04", "serve", "--host", "127.0.0.1", "--port", str(port), "--no-auth"]
        processes.append(
            start("responses-serve", [sys.executable, *serve], env, http_up(f"{url}/health"))
        )
        client = AsyncOpenAI(base_url=f"{url}/v1", api_key="sk-any", max_retries=0)
        sdk = client
        queued: list[float] = []
        plain: list[float] = []
        chat: list[float] = []
        ids: list[str] = []
        counter = 0

        async def background() -> None:
            nonlocal counter
            counter += 1
            created = await sdk.responses.create(
                model=MODEL, input=f"background {counter}", background=True
            )
            assert created.status == "queued", created.status
            ids.append(created.id)

        async def whole() -> None:
            nonlocal counter
            counter += 1
            answer = await sdk.responses.create(model=MODEL, input=f"plain {counter}")
            assert answer.status == "completed", answer.status

        async def completion() -> None:
            nonlocal counter
            counter += 1
            await sdk.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": f"chat {counter}"}]
            )

        for _ in range(20):  # warm-up: connections, the catalog, the worker's first jobs
            await background()
            await whole()
            await completion()
        ids.clear()
        paths = [(background, queued), (whole, plain), (completion, chat)]
        per_round = max(1, requests // rounds)
        for number in range(rounds):
            rotated = paths[number % len(paths) :] + paths[: number % len(paths)]
            for call, into in rotated:
                for _ in range(per_round):
                    into.append(await timed(call))
        not_completed = 0
        for response_id in ids:
            for _ in range(100):
                state = (await sdk.responses.retrieve(response_id)).status
                if state not in ("queued", "in_progress"):
                    break
                await asyncio.sleep(0.05)
            not_completed += state != "completed"
        lines += [
            f"   {len(queued)} requests a path, {rounds} interleaved rounds, one at a time",
            *(
                f"  {label:<58} p50 {pct(values, 50):7.2f} ms   p99 {pct(values, 99):7.2f} ms"
                for label, values in (
                    ("responses.create(background=True) → queued answer", queued),
                    ("responses.create (whole answer, mock provider 0 ms)", plain),
                    ("chat.completions.create (whole answer, same)", chat),
                )
            ),
            f"   background responses read back: {len(ids)}, not completed: {not_completed}",
        ]
    finally:
        if client is not None:
            await client.close()
        for process in reversed(processes):
            stop_process(process)
        server.stop()
    print("\n".join(lines), flush=True)
    return lines


async def main(requests: int, rounds: int) -> None:
    lines = await figures(requests, rounds)
    LOGS.mkdir(exist_ok=True)
    (LOGS / "benchmarks-responses.txt").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=500, help="per path")
    parser.add_argument("--rounds", type=int, default=5)
    options = parser.parse_args()
    asyncio.run(main(options.requests, options.rounds))
