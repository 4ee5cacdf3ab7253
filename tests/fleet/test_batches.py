"""Batch runs through real workers: every line answered exactly once, across failures, a killed
submitter and a cancel."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from gateway_client import ModelGateway
from gateway_client.batch import BatchRunner, BatchStatus, LineError, parse_jsonl
from tests.processes import ROOT, WorkerProcess


def line(custom_id: str, text: str, **body: Any) -> str:
    return json.dumps(
        {
            "custom_id": custom_id,
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": "mock", "messages": [{"role": "user", "content": text}], **body},
        }
    )


def write_input(path: Path, count: int, **body: Any) -> list[str]:
    ids = [f"req-{i}" for i in range(count)]
    path.write_text("\n".join(line(cid, f"question {cid}", **body) for cid in ids) + "\n")
    return ids


def outputs(directory: Path, batch_id: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    read = lambda name: [  # noqa: E731
        json.loads(text)
        for text in (directory / f"{batch_id}.{name}.jsonl").read_text().splitlines()
    ]
    return read("results"), read("errors")


def test_input_lines_are_validated_one_by_one() -> None:
    lines = [
        line("ok", "hi", max_completion_tokens=20, temperature=0, stop="END"),
        "{not json",
        json.dumps(
            {"custom_id": "wrong-url", "method": "POST", "url": "/v1/embeddings", "body": {}}
        ),
        line("no-messages", "x").replace(
            '"messages": [{"role": "user", "content": "x"}]', '"messages": []'
        ),
        line("bad-temperature", "hi", temperature=9),
        line("ok", "again"),
    ]
    parsed = list(parse_jsonl(lines, agent_did="did:key:batch"))
    good, *bad = parsed
    assert not isinstance(good, LineError)
    assert good.request.max_tokens == 20 and good.request.stop == ["END"]
    assert good.request.priority.value == "low"  # batches run at LOW by default
    codes = {item.custom_id: item.code for item in bad if isinstance(item, LineError)}
    assert codes == {
        "line-2": "E4500",
        "wrong-url": "E4500",
        "no-messages": "E4501",
        "bad-temperature": "E4502",
        "ok": "E4500",  # used twice
    }


async def test_a_2000_line_batch_with_failures_answers_every_line_once(
    gateway: ModelGateway, start_worker: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    start_worker(
        "mock",
        concurrency=200,
        env={"L04_MOCK_FAILURE_RATE": "0.2", "CIRCUIT_BREAKER_FAILURE_THRESHOLD": "100000"},
    )
    source = tmp_path / "input.jsonl"
    ids = write_input(source, 1995)
    with source.open("a") as extra:  # five lines that fail validation
        extra.write("{broken\n" + line("req-0", "duplicate id") + "\n")
        extra.write(line("bad-1", "x", temperature=5) + "\n" + line("bad-2", "y", top_p=0) + "\n")
        extra.write(line("bad-3", "z", model="no-such-model") + "\n")
    runner = BatchRunner(gateway, window=200)
    seen: list[int] = []

    async def watch() -> None:
        await asyncio.sleep(0.2)
        async for progress in runner.progress("big", interval=0.2):
            seen.append(progress.done)

    watcher = asyncio.create_task(watch())
    info = await runner.run_file(source, batch_id="big", out_dir=tmp_path)
    await watcher
    assert info.status is BatchStatus.COMPLETED
    assert info.total == 2000 and info.completed + info.failed == 2000
    results, errors = outputs(tmp_path, "big")
    answered = [r["custom_id"] for r in results] + [e["custom_id"] for e in errors]
    assert len(answered) == 2000
    assert sorted(answered) == sorted([*ids, "line-1996", "req-0", "bad-1", "bad-2", "bad-3"])
    codes = {e["error"]["code"] for e in errors}
    assert {"E4500", "E4502", "E4200"} <= codes  # invalid lines and provider failures
    assert codes <= {"E4500", "E4502", "E4200", "E4001"}
    assert len(errors) == info.failed and len(results) == info.completed
    body = results[0]["response"]["body"]
    assert body["object"] == "chat.completion" and body["choices"][0]["message"]["content"]
    assert seen == sorted(seen) and seen[-1] == 2000


async def test_a_killed_submitter_is_replaced_by_running_the_command_again(
    start_worker: Callable[..., WorkerProcess], redis_url: str, tmp_path: Path
) -> None:
    start_worker("mock", concurrency=100)
    source = tmp_path / "input.jsonl"
    ids = write_input(source, 400, metadata={"mock": {"latency_ms": 100}})
    command = [sys.executable, "-m", "l04", "batch", "submit", str(source)]
    command += ["--out", str(tmp_path), "--window", "40", "--id", "killed"]
    env = {**os.environ, "REDIS_URL": redis_url}
    first = subprocess.Popen(
        command, env=env, cwd=ROOT, stderr=subprocess.DEVNULL, stdout=subprocess.DEVNULL
    )
    client = redis.Redis.from_url(redis_url)
    deadline = time.monotonic() + 30
    while int(client.hget("l04:batch:{killed}", "completed") or 0) < 100:
        assert time.monotonic() < deadline and first.poll() is None
        time.sleep(0.05)
    os.kill(first.pid, signal.SIGKILL)  # mid-batch, with about 40 jobs in flight
    first.wait()
    assert client.hget("l04:batch:{killed}", "status") == b"in_progress"

    again = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, timeout=120)
    assert again.returncode == 0, again.stderr.decode()[-2000:]
    assert json.loads(again.stdout)["status"] == "completed"
    results, errors = outputs(tmp_path, "killed")
    assert errors == []
    assert sorted(r["custom_id"] for r in results) == sorted(ids)  # none missing, none twice
    client.close()


async def test_cancel_stops_the_queued_work_and_counts_add_up(
    gateway: ModelGateway, start_worker: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    start_worker("mock", concurrency=10)
    source = tmp_path / "input.jsonl"
    write_input(source, 300, metadata={"mock": {"latency_ms": 200}})
    runner = BatchRunner(gateway, window=30)
    run = asyncio.create_task(runner.run_file(source, batch_id="cancelled", out_dir=tmp_path))
    while (info := await runner.store.get("cancelled")) is None or info.completed < 20:
        await asyncio.sleep(0.05)
    other = BatchRunner(gateway)  # as `l04 batch cancel` from another process
    assert (await other.cancel("cancelled")).status is BatchStatus.CANCELLING
    info = await asyncio.wait_for(run, timeout=30)
    assert info.status is BatchStatus.CANCELLED
    assert info.completed + info.failed == info.total == 300
    assert 20 <= info.completed < 300
    results, errors = outputs(tmp_path, "cancelled")
    assert len(results) == info.completed and len(errors) == info.failed
    assert {e["error"]["code"] for e in errors} == {"E4405"}
    assert "cancelled_at" in info.timestamps and "cancelling_at" in info.timestamps
