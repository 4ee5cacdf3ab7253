"""The Files and Batch APIs through the official openai SDK, against two real ``l04 serve``
processes and a real worker: batches over the mock provider and an Anthropic-format upstream,
malformed uploads, cancel, another key, and the server driving a batch SIGKILLed mid-way."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import redis
from redis.asyncio import Redis

from gateway_client.batch.store import BatchStore
from gateway_core import keys
from gateway_core.virtual_keys import VirtualKeyStore
from gateway_core.webhooks import new_secret
from l04.redis_server import LocalRedis, free_port
from tests.conftest import FAST_RECOVERY
from tests.fleet.test_http_keys import create_key
from tests.fleet.test_providers_end_to_end import fleet_env
from tests.fleet.test_webhooks import Receiver, serve
from tests.processes import ROOT, MockUpstreamProcess, ServerProcess, WorkerProcess

CLAUDE = "claude-3-5-sonnet-20241022"
LEASE_S = 1.0


@dataclass
class Fleet:
    redis_url: str
    servers: list[ServerProcess]
    worker: WorkerProcess
    upstream: MockUpstreamProcess
    key: dict[str, str]
    other: dict[str, str]
    mock_only: dict[str, str]

    def alive(self) -> ServerProcess:
        return next(s for s in self.servers if s.process and s.process.poll() is None)

    def client(self, key: str | None = None, server: ServerProcess | None = None) -> openai.OpenAI:
        url = (server or self.alive()).url
        return openai.OpenAI(
            base_url=f"{url}/v1", api_key=key or self.key["key"], max_retries=0, timeout=30
        )


@pytest.fixture(scope="module")
def fleet(redis_server: LocalRedis, upstream: MockUpstreamProcess) -> Iterator[Fleet]:
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    key = create_key(redis_server.url, "--agent", "did:key:batcher")
    other = create_key(redis_server.url, "--agent", "did:key:someone-else")
    mock_only = create_key(redis_server.url, "--agent", "did:key:limited", "--models", "mock")
    env = {
        "L04_BATCH_LEASE_S": str(LEASE_S),
        "L04_BATCH_WINDOW": "20",
        "L04_FILE_MAX_BYTES": str(256 * 1024),
        "L04_FILES_MAX_BYTES": str(4 * 1024 * 1024),
    }
    worker = WorkerProcess(
        redis_server.url,
        "mock,anthropic",
        50,
        {**FAST_RECOVERY, **fleet_env(upstream), "L04_MOCK_LATENCY_MS": "20"},
    ).start()
    servers = [ServerProcess(redis_server.url, env=env).start() for _ in range(2)]
    yield Fleet(redis_server.url, servers, worker, upstream, key, other, mock_only)
    for server in servers:
        server.stop(timeout=10)
    worker.stop(timeout=10)


def chat_line(custom_id: str, model: str, text: str, **body: Any) -> str:
    return json.dumps(
        {
            "custom_id": custom_id,
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": model, "messages": [{"role": "user", "content": text}], **body},
        }
    )


def upload(client: openai.OpenAI, lines: list[str], name: str = "input.jsonl") -> str:
    data = ("\n".join(lines) + "\n").encode()
    return client.files.create(file=(name, data), purpose="batch").id


def wait_for(client: openai.OpenAI, batch_id: str, statuses: set[str], timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        batch = client.batches.retrieve(batch_id)
        if batch.status in statuses:
            return batch
        assert time.monotonic() < deadline, f"batch {batch_id} still {batch.status}"
        time.sleep(0.1)


def read_jsonl(client: openai.OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    return [json.loads(line) for line in client.files.content(file_id).text.splitlines()]


def test_a_batch_over_two_providers_answers_every_line_once(fleet: Fleet) -> None:
    fleet.upstream.reset()
    lines = [
        chat_line(f"req-{i}", "mock" if i % 2 else CLAUDE, f"two providers, question {i}")
        for i in range(300)
    ]
    with fleet.client() as client:
        file_id = upload(client, lines)
        stored = client.files.retrieve(file_id)
        assert stored.purpose == "batch" and stored.bytes > 0 and stored.filename == "input.jsonl"
        assert file_id in [f.id for f in client.files.list()]
        batch = client.batches.create(
            input_file_id=file_id,
            endpoint="/v1/chat/completions",
            completion_window="24h",
            metadata={"run": "two-providers"},
        )
        assert batch.status in ("validating", "in_progress") and batch.metadata == {
            "run": "two-providers"
        }
        done = wait_for(client, batch.id, {"completed", "failed", "expired", "cancelled"})
        assert done.status == "completed"
        assert done.request_counts is not None
        assert (done.request_counts.total, done.request_counts.completed) == (300, 300)
        assert done.request_counts.failed == 0 and done.error_file_id is None
        assert done.in_progress_at and done.finalizing_at and done.completed_at
        output = read_jsonl(client, done.output_file_id)
        assert sorted(o["custom_id"] for o in output) == sorted(f"req-{i}" for i in range(300))
        models = {o["response"]["body"]["model"] for o in output}
        assert models == {"mock", CLAUDE}
        first = output[0]
        assert first["error"] is None and first["response"]["status_code"] == 200
        assert first["response"]["body"]["object"] == "chat.completion"
        assert batch.id in [b.id for b in client.batches.list(limit=100)]
    assert fleet.upstream.requests_to("/v1/messages") == 150  # each Anthropic line once

    # Another key sees none of it.
    with fleet.client(fleet.other["key"]) as stranger:
        for call in (
            lambda: stranger.batches.retrieve(batch.id),
            lambda: stranger.files.retrieve(file_id),
            lambda: stranger.files.content(file_id),
            lambda: stranger.batches.cancel(batch.id),
            lambda: stranger.files.delete(file_id),
        ):
            with pytest.raises(openai.NotFoundError):
                call()
        assert batch.id not in [b.id for b in stranger.batches.list()]
        assert file_id not in [f.id for f in stranger.files.list()]

    # The same record is what `l04 batch status` shows.
    status = subprocess.run(
        [sys.executable, "-m", "l04", "batch", "status", batch.id],
        cwd=ROOT,
        env={**os.environ, "REDIS_URL": fleet.redis_url},
        capture_output=True,
        check=True,
        timeout=60,
    )
    shown = json.loads(status.stdout)
    assert shown["status"] == "completed" and shown["request_counts"]["completed"] == 300
    assert shown["output_file_id"] == done.output_file_id

    with fleet.client() as client:
        assert client.files.delete(file_id).deleted
        with pytest.raises(openai.NotFoundError):
            client.files.retrieve(file_id)


def test_an_embeddings_batch(fleet: Fleet) -> None:
    def line(i: int, **body: Any) -> str:
        body = {"model": "mock-embed", "input": [f"text {i}", "more"], **body}
        return json.dumps(
            {"custom_id": f"e-{i}", "method": "POST", "url": "/v1/embeddings", "body": body}
        )

    lines = [line(i) for i in range(20)] + [line(20, dimensions=0)]
    with fleet.client() as client:
        batch = client.batches.create(
            input_file_id=upload(client, lines), endpoint="/v1/embeddings", completion_window="24h"
        )
        done = wait_for(client, batch.id, {"completed", "failed", "expired", "cancelled"})
        assert done.status == "completed" and done.endpoint == "/v1/embeddings"
        output = read_jsonl(client, done.output_file_id)
        errors = read_jsonl(client, done.error_file_id)
    assert len(output) == 20 and [e["custom_id"] for e in errors] == ["e-20"]
    body = output[0]["response"]["body"]
    assert body["object"] == "list" and len(body["data"]) == 2
    assert len(body["data"][0]["embedding"]) == 16


def test_a_responses_batch_answers_response_objects_kept_like_any_response(
    fleet: Fleet,
) -> None:
    def line(i: int, **body: Any) -> str:
        body = {"model": "claude-3-5-sonnet" if i % 2 else "mock", "input": f"r {i}", **body}
        return json.dumps(
            {"custom_id": f"r-{i}", "method": "POST", "url": "/v1/responses", "body": body}
        )

    lines = [line(i, instructions="be brief", metadata={"n": str(i)}) for i in range(10)]
    lines += [line(10, stream=True), line(11, previous_response_id="resp_x")]
    with fleet.client() as client:
        batch = client.batches.create(
            input_file_id=upload(client, lines), endpoint="/v1/responses", completion_window="24h"
        )
        done = wait_for(client, batch.id, {"completed", "failed", "expired", "cancelled"})
        assert done.status == "completed" and done.endpoint == "/v1/responses"
        assert done.request_counts is not None and done.request_counts.total == 12
        output = read_jsonl(client, done.output_file_id)
        errors = read_jsonl(client, done.error_file_id)
        assert sorted(e["custom_id"] for e in errors) == ["r-10", "r-11"]
        assert len(output) == 10
        for answered in output:
            body = answered["response"]["body"]
            i = int(answered["custom_id"].split("-")[1])
            assert body["object"] == "response" and body["status"] == "completed"
            assert body["instructions"] == "be brief" and body["metadata"] == {"n": str(i)}
            assert body["output"][0]["content"][0]["text"]
            # The same object from the Responses API, for the batch's key only.
            kept = client.responses.retrieve(body["id"])
            assert (
                kept.status == "completed"
                and kept.output_text == (body["output"][0]["content"][0]["text"])
            )
    with fleet.client(fleet.other["key"]) as stranger, pytest.raises(openai.NotFoundError):
        stranger.responses.retrieve(output[0]["response"]["body"]["id"])


async def test_a_batch_s_end_is_a_signed_webhook_to_its_key(fleet: Fleet) -> None:
    """A key made with a webhook: its batch's ``batch.completed`` arrives at the receiver,
    verified by the openai SDK's ``webhooks.unwrap``."""
    receiver = Receiver(free_port())
    server = serve(receiver)
    secret = new_secret()
    client_redis = Redis.from_url(fleet.redis_url)
    try:
        _, token = await VirtualKeyStore(client_redis).create(
            agent_did="did:key:hooked", webhook_url=receiver.url("/batches"), webhook_secret=secret
        )
    finally:
        await client_redis.aclose()
    try:
        with fleet.client(token) as client:
            batch = client.batches.create(
                input_file_id=upload(client, [chat_line("w-1", "mock", "announce the batch")]),
                endpoint="/v1/chat/completions",
                completion_window="24h",
            )
            (got,) = await asyncio.to_thread(receiver.wait_for, "/batches", 1, 30)
            event = got.unwrap(secret)
            assert event.type == "batch.completed" and event.data.id == batch.id
            assert client.batches.retrieve(batch.id).status == "completed"
    finally:
        server.shutdown()
        server.server_close()


def test_bad_lines_go_to_the_error_file_and_the_rest_runs(fleet: Fleet) -> None:
    lines = [
        chat_line("ok-1", "mock", "bad lines, fine one"),
        chat_line("ok-1", "mock", "a repeated custom_id"),
        chat_line("bad-temperature", "mock", "hot", temperature=9),
        chat_line("bad-param", "mock", "n", n=3),
        json.dumps({"custom_id": "no-body", "method": "POST", "url": "/v1/chat/completions"}),
        json.dumps({"method": "POST", "url": "/v1/chat/completions", "body": {}}),
        chat_line("unknown-model", "no-such-model", "who"),
        chat_line("ok-2", "mock", "bad lines, fine two"),
    ]
    with fleet.client() as client:
        batch = client.batches.create(
            input_file_id=upload(client, lines),
            endpoint="/v1/chat/completions",
            completion_window="24h",
        )
        done = wait_for(client, batch.id, {"completed", "failed", "expired", "cancelled"})
        assert done.status == "completed"
        assert done.request_counts is not None
        counts = done.request_counts
        assert (counts.total, counts.completed, counts.failed) == (8, 2, 6)
        output = read_jsonl(client, done.output_file_id)
        errors = read_jsonl(client, done.error_file_id)
    assert sorted(o["custom_id"] for o in output) == ["ok-1", "ok-2"]
    codes = {e["custom_id"]: e["error"]["code"] for e in errors}
    assert codes == {
        "ok-1": "E4500",  # the repeated one
        "bad-temperature": "E4500",  # as POST /v1/chat/completions answers it
        "bad-param": "E4502",
        "no-body": "E4500",
        "line-6": "E4500",
        "unknown-model": "E4001",
    }
    assert all(e["response"]["status_code"] in (400, 404) for e in errors)


def test_the_batch_key_s_models_apply_to_its_lines(fleet: Fleet) -> None:
    lines = [chat_line("allowed", "mock", "limited key"), chat_line("not", CLAUDE, "limited")]
    with fleet.client(fleet.mock_only["key"]) as client:
        batch = client.batches.create(
            input_file_id=upload(client, lines),
            endpoint="/v1/chat/completions",
            completion_window="24h",
        )
        done = wait_for(client, batch.id, {"completed", "failed", "expired", "cancelled"})
        output = read_jsonl(client, done.output_file_id)
        errors = read_jsonl(client, done.error_file_id)
    assert [o["custom_id"] for o in output] == ["allowed"]
    assert [(e["custom_id"], e["error"]["code"]) for e in errors] == [("not", "E4409")]


def test_a_file_that_cannot_be_a_batch_is_a_4xx(fleet: Fleet) -> None:
    good = chat_line("a", "mock", "fine")
    cases = {
        "not JSONL": [good, "this is not json"],
        "a line of the wrong shape": [good, "[1, 2, 3]"],
        "a wrong url": [good, good.replace("/v1/chat/completions", "/v1/embeddings")],
        "a wrong method": [good, good.replace('"POST"', '"GET"')],
    }
    with fleet.client() as client:
        for why, lines in cases.items():
            file_id = upload(client, lines)
            with pytest.raises(openai.BadRequestError) as refused:
                client.batches.create(
                    input_file_id=file_id,
                    endpoint="/v1/chat/completions",
                    completion_window="24h",
                )
            assert "line 2" in refused.value.message, why
        with pytest.raises(openai.BadRequestError):
            client.batches.create(
                input_file_id=upload(client, [good]),
                endpoint="/v1/completions",  # type: ignore[arg-type]
                completion_window="24h",
            )
        with pytest.raises(openai.BadRequestError):
            client.batches.create(
                input_file_id=upload(client, [good]),
                endpoint="/v1/chat/completions",
                completion_window="1h",  # type: ignore[arg-type]
            )
        with pytest.raises(openai.NotFoundError):
            client.batches.create(
                input_file_id="file-nope", endpoint="/v1/chat/completions", completion_window="24h"
            )
        oversize = [chat_line(f"x{i}", "mock", "y" * 1000) for i in range(300)]  # > 256 KiB
        with pytest.raises(openai.APIStatusError) as too_large:
            upload(client, oversize)
        assert too_large.value.status_code == 413
        with pytest.raises(openai.BadRequestError):
            client.files.create(file=("x.jsonl", good.encode()), purpose="fine-tune")
    # Not multipart at all: a clear 4xx, never a 5xx.
    answer = httpx.post(
        f"{fleet.alive().url}/v1/files",
        content=b"{}",
        headers={"authorization": f"Bearer {fleet.key['key']}", "content-type": "text/plain"},
    )
    assert answer.status_code == 415 and answer.json()["error"]["code"] == "E4500"
    garbled = httpx.post(
        f"{fleet.alive().url}/v1/files",
        content=b"--nope\r\nnot a part",
        headers={
            "authorization": f"Bearer {fleet.key['key']}",
            "content-type": "multipart/form-data; boundary=b",
        },
    )
    assert 400 <= garbled.status_code < 500


def test_a_full_file_store_is_a_413_until_files_are_deleted(fleet: Fleet) -> None:
    filler = [chat_line(f"f{i}", "mock", "z" * 2000) for i in range(100)]  # about 210 KB
    made: list[str] = []
    with fleet.client() as client:
        with pytest.raises(openai.APIStatusError) as full:
            for _ in range(40):
                made.append(upload(client, filler))
        assert full.value.status_code == 413 and "L04_FILES_MAX_BYTES" in full.value.message
        assert len(made) >= 5  # the cap is 4 MB
        for file_id in made:
            client.files.delete(file_id)
        upload(client, filler)  # room again


def test_a_batch_from_l04_batch_submit_is_seen_over_http(fleet: Fleet, tmp_path: Path) -> None:
    source = tmp_path / "cli.jsonl"
    source.write_text(
        "\n".join(chat_line(f"cli-{i}", "mock", f"from the CLI {i}") for i in range(5))
    )
    command = [sys.executable, "-m", "l04", "batch", "submit", str(source), "--id", "cli-parity"]
    command += ["--out", str(tmp_path), "--agent", "did:key:batcher", "--quiet"]
    env = {**os.environ, "REDIS_URL": fleet.redis_url}
    subprocess.run(command, cwd=ROOT, env=env, check=True, capture_output=True, timeout=60)
    with fleet.client() as client:  # a key of the agent the batch ran as
        seen = client.batches.retrieve("cli-parity")
        assert seen.status == "completed" and seen.request_counts is not None
        assert seen.request_counts.completed == 5
        first_page = client.batches.list(limit=1)  # the newest first, then the next page
        assert [b.id for b in first_page.data] == ["cli-parity"] and first_page.has_more
        rest = client.batches.list(after="cli-parity", limit=100).data
        assert rest and "cli-parity" not in [b.id for b in rest]
    with fleet.client(fleet.other["key"]) as stranger, pytest.raises(openai.NotFoundError):
        stranger.batches.retrieve("cli-parity")


def test_cancel_stops_the_queued_lines_and_keeps_what_was_answered(fleet: Fleet) -> None:
    lines = [chat_line(f"c-{i}", "mock", f"cancel me {i}") for i in range(400)]
    with fleet.client() as client:
        batch = client.batches.create(
            input_file_id=upload(client, lines),
            endpoint="/v1/chat/completions",
            completion_window="24h",
        )
        deadline = time.monotonic() + 30
        while (client.batches.retrieve(batch.id).request_counts or batch).completed < 20:  # type: ignore[union-attr]
            assert time.monotonic() < deadline
            time.sleep(0.05)
        cancelling = client.batches.cancel(batch.id)
        assert cancelling.status in ("cancelling", "cancelled")
        done = wait_for(client, batch.id, {"cancelled"}, timeout=30)
        counts = done.request_counts
        assert counts is not None
        assert counts.total == 400 and counts.completed + counts.failed == 400
        assert 20 <= counts.completed < 400
        output = read_jsonl(client, done.output_file_id)
        errors = read_jsonl(client, done.error_file_id)
        assert len(output) == counts.completed and len(errors) == counts.failed
        assert {e["error"]["code"] for e in errors} == {"E4405"}
        assert done.cancelling_at and done.cancelled_at


async def test_a_batch_past_its_completion_window_ends_expired(fleet: Fleet) -> None:
    """A batch made with a 2 s window (the API only takes 24h: the record is written here as
    POST /v1/batches writes it) and slow lines: the fleet drives it, it ends ``expired``."""
    fleet.upstream.reset()
    fleet.upstream.faults({"latency_ms": 400, "count": 200, "path": "/v1/messages"})
    lines = [chat_line(f"x-{i}", CLAUDE, f"expiring question {i}") for i in range(200)]
    with fleet.client() as client:
        file_id = upload(client, lines)
    client_redis = Redis.from_url(fleet.redis_url)
    store = BatchStore(client_redis)
    await store.create(
        "batch_expiring",
        input_file="",
        output_dir="",
        model=None,
        priority="low",
        agent_did=fleet.key["agent_did"],
        completion_window_s=2.0,
        http={"key_id": fleet.key["id"], "input_file_id": file_id, "completion_window": "24h"},
    )
    await client_redis.sadd(keys.FLEET_BATCHES, "batch_expiring")
    await client_redis.aclose()
    with fleet.client() as client:
        done = await asyncio.to_thread(wait_for, client, "batch_expiring", {"expired"}, 30)
        counts = done.request_counts
        assert counts is not None and counts.total == 200 and counts.failed > 0
        assert counts.completed + counts.failed == 200 and done.expired_at
        errors = read_jsonl(client, done.error_file_id)
    assert "batch_expired" in {e["error"]["code"] for e in errors}
    assert fleet.upstream.requests_to("/v1/messages") < 200  # the rest never reached it
    fleet.upstream.reset()


def test_a_killed_driver_is_replaced_and_no_line_is_called_twice(fleet: Fleet) -> None:
    fleet.upstream.reset()
    total = 240
    fleet.upstream.faults({"latency_ms": 150, "count": total, "path": "/v1/messages"})
    lines = [chat_line(f"k-{i}", CLAUDE, f"takeover question {i}") for i in range(total)]
    creator = fleet.servers[0]
    with fleet.client(server=creator) as client:
        batch = client.batches.create(
            input_file_id=upload(client, lines),
            endpoint="/v1/chat/completions",
            completion_window="24h",
        )
    r = redis.Redis.from_url(fleet.redis_url)
    deadline = time.monotonic() + 30
    while int(r.hget(f"l04:batch:{{{batch.id}}}", "completed") or 0) < 30:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    driver = r.get(f"l04:batch:{{{batch.id}}}:driver")
    assert driver is not None
    pid = int(driver.decode().rsplit(":", 1)[1])
    victim = next(s for s in fleet.servers if s.process and s.process.pid == pid)
    os.kill(pid, signal.SIGKILL)  # the server driving it, with about 20 lines in flight
    victim.process.wait()  # type: ignore[union-attr]
    killed_at = time.monotonic()
    assert int(r.hget(f"l04:batch:{{{batch.id}}}", "completed") or 0) < total
    survivor = fleet.alive()
    with fleet.client(server=survivor) as client:
        # Taken over within two lease periods (and the sweep's half period to notice).
        while r.get(f"l04:batch:{{{batch.id}}}:driver") in (None, driver):
            assert time.monotonic() - killed_at < 2 * LEASE_S + 1
            time.sleep(0.05)
        done = wait_for(client, batch.id, {"completed", "failed", "cancelled"}, timeout=60)
        assert done.status == "completed"
        output = read_jsonl(client, done.output_file_id)
    assert sorted(o["custom_id"] for o in output) == sorted(f"k-{i}" for i in range(total))
    assert fleet.upstream.requests_to("/v1/messages") == total  # none twice, none missed
    r.close()
