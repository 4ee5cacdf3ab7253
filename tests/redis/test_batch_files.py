"""The Batch API's file store and batch lease against a real redis-server: chunks, the cap, the
per-file limit, expiry, owners; one lease holder at a time."""

from __future__ import annotations

import asyncio
import io
import json
import time
import tracemalloc
from collections.abc import AsyncIterable, AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from gateway_client.batch.files import (
    CHUNK_BYTES,
    FileNotFound,
    FileStore,
    FileStoreFull,
    FileTooLarge,
)
from gateway_client.batch.kinds import ChatLines, Running
from gateway_client.batch.lease import BatchLease
from gateway_client.batch.runner import BatchRunner
from gateway_client.batch.store import BatchStatus, BatchStore
from gateway_client.gateway import ModelGateway
from gateway_core import keys
from tests.conftest import make_request


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def a_batch(
    batches: BatchStore, batch_id: str, output_dir: str = "", http: dict[str, str] | None = None
) -> None:
    """A batch record as a run makes it (HTTP batches name their input file in ``http``)."""
    await batches.create(
        batch_id,
        input_file="",
        output_dir=output_dir,
        model=None,
        priority="low",
        agent_did="did:key:a",
        completion_window_s=3600,
        http=http,
    )


async def test_a_large_file_is_stored_in_chunks_and_read_back_whole(redis: Redis) -> None:
    store = FileStore(redis, max_total=10 * CHUNK_BYTES, max_file=5 * CHUNK_BYTES)
    line = b'{"custom_id": "x", "body": {}}\n'
    data = line * (2 * CHUNK_BYTES // len(line) + 7)  # a bit over two chunks
    stored = await store.put(
        [data[i : i + 65536] for i in range(0, len(data), 65536)],
        owner="key-a",
        filename="in.jsonl",
        purpose="batch",
    )
    assert stored.bytes == len(data) and stored.lines == data.count(b"\n")
    assert await redis.llen(keys.file_chunks(stored.id)) == len(data) // 65536 + 1
    assert b"".join([c async for c in store.chunks(stored.id)]) == data
    lines = [text async for text in store.lines(stored.id)]
    assert len(lines) == stored.lines and lines[0] == line.decode().strip()
    assert await store.used() == len(data)
    assert [f.id for f in await store.listing("key-a")] == [stored.id]
    assert await store.listing("key-b") == []


async def test_another_owner_does_not_see_a_file(redis: Redis) -> None:
    store = FileStore(redis, max_total=1000, max_file=1000)
    stored = await store.put([b"a\nb"], owner="key-a", filename="f", purpose="batch")
    assert stored.lines == 2  # the last line needs no newline
    with pytest.raises(FileNotFound):
        await store.get(stored.id, owner="key-b")
    with pytest.raises(FileNotFound):
        await store.delete(stored.id, owner="key-b")
    assert await store.delete(stored.id, owner="key-a")
    assert await store.used() == 0 and await redis.keys("l04:file:*") == []


async def test_a_full_store_refuses_an_upload_and_keeps_nothing_of_it(redis: Redis) -> None:
    store = FileStore(redis, max_total=100, max_file=1000)
    await store.put([b"x" * 60], owner=None, filename="a", purpose="batch")
    with pytest.raises(FileStoreFull):
        await store.put([b"y" * 30, b"y" * 30], owner=None, filename="b", purpose="batch")
    assert await store.used() == 60  # the refused file's first chunk was given back
    assert len(await store.listing(None)) == 1
    assert len(await redis.keys("l04:file:*:chunks")) == 1
    with pytest.raises(FileTooLarge):
        await FileStore(redis, max_total=10_000, max_file=50).put(
            [b"z" * 51], owner=None, filename="c", purpose="batch"
        )
    assert await store.used() == 60
    # A batch's output is stored past the cap rather than lost.
    out = await store.put([b"o" * 80], owner=None, filename="o", purpose="batch_output", force=True)
    assert out.bytes == 80 and await store.used() == 140


async def test_an_expired_file_is_gone_and_leaves_the_count(redis: Redis) -> None:
    store = FileStore(redis, max_total=100, max_file=100, ttl_s=2)
    stored = await store.put([b"x" * 90], owner=None, filename="a", purpose="batch")
    assert 0 < await redis.pttl(keys.file_chunks(stored.id)) <= 2000
    with pytest.raises(FileStoreFull):
        await store.put([b"y" * 20], owner=None, filename="b", purpose="batch")
    await asyncio.sleep(2.6)
    with pytest.raises(FileNotFound):
        await store.get(stored.id, owner=None)
    again = await store.put([b"y" * 20], owner=None, filename="b", purpose="batch")
    assert await store.used() == 20 and again.bytes == 20


async def test_one_lease_holder_at_a_time_and_a_lapsed_lease_is_taken(redis: Redis) -> None:
    first, second = BatchLease(redis, "b1", 1.5), BatchLease(redis, "b1", 1.5)
    assert await first.take() and not await second.take()
    assert await first.renew() and not await second.renew()
    await asyncio.sleep(1.6)  # the first holder stopped renewing (it died)
    assert await second.take()
    assert not await first.renew() and not await first.release()  # it lost the lease
    assert await second.release() and await redis.exists(keys.batch_lease("b1")) == 0


async def test_an_upload_without_content_length_is_refused_once_it_passes_the_limit(
    redis: Redis,
) -> None:
    """A chunked upload (no Content-Length) was spooled whole to the server's disk before the
    per-file limit was looked at: any size, one request. It is cut as soon as it passes."""
    from starlette.requests import Request

    from gateway_http import files
    from gateway_http.body import BodyRefused
    from gateway_http.door import Caller

    store = FileStore(redis, max_total=100 * CHUNK_BYTES, max_file=CHUNK_BYTES)
    boundary = "b0undary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.jsonl"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    piece = b'{"custom_id": "x"}\n' * 3000
    sent = 0

    async def receive() -> dict[str, object]:
        nonlocal sent
        last = sent >= 50 * CHUNK_BYTES
        body = head if sent == 0 else f"\r\n--{boundary}--\r\n".encode() if last else piece
        sent += len(body)
        return {"type": "http.request", "body": body, "more_body": not last}

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/files",
        "headers": [(b"content-type", f"multipart/form-data; boundary={boundary}".encode())],
        "query_string": b"",
    }
    with pytest.raises(BodyRefused) as refused:
        await files.upload(Request(scope, receive), Caller(agent_did="did:key:a"), store)
    assert refused.value.error.status == 413
    assert sent < 2 * CHUNK_BYTES  # read up to the limit, not the 50 MiB sent
    assert await store.used() == 0


class _SubmitFails(ChatLines):
    """A line kind whose submit raises what no line should (a bug, a library's error)."""

    async def submit(
        self, gateway: ModelGateway, request: Any, job_id: str, key_id: str | None
    ) -> Running:
        raise RuntimeError("not a GatewayError")


async def test_a_run_whose_line_raises_ends_with_the_error_and_never_hangs(
    gateway: ModelGateway, tmp_path: Path
) -> None:
    """The line's error reached the run while its heartbeat was opening its Redis connection:
    the heartbeat's cancel was lost there (Python 3.11's wait_for) and the run awaited it
    forever, the batch in progress for good, its lease renewed by a driver that never ended."""
    runner = BatchRunner(gateway, kinds={"/v1/chat/completions": _SubmitFails()})
    lines = [("a", make_request()), ("b", make_request())]
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="not a GatewayError"):
        await asyncio.wait_for(
            runner.run_requests(lines, batch_id="raising", out_dir=tmp_path), timeout=10
        )
    assert time.monotonic() - started < 5  # not ended by the wait_for's own timeout


async def test_a_batch_s_input_is_read_from_the_store_as_reached_not_held_whole(
    gateway: ModelGateway, redis: Redis
) -> None:
    """Every driven batch held its whole input as a list of lines: a key could make many
    batches of one 200 MB file (counted once in the store) and run its servers out of memory.
    An input deleted before its batch runs fails the batch (FileNotFound), not an empty run."""
    store = FileStore(redis, max_total=100 * CHUNK_BYTES, max_file=50 * CHUNK_BYTES)
    line = (
        b'{"custom_id": "%d", "method": "POST", "url": "/v1/chat/completions", '
        b'"body": {"model": "mock", "messages": [{"role": "user", "content": "hi"}]}}\n'
    )
    data = b"".join(line % n for n in range(160_000))  # about 23 MiB
    stored = await store.put(io.BytesIO(data), owner=None, filename="in.jsonl", purpose="batch")
    batches = BatchStore(redis)
    for batch_id in ("big", "gone"):
        await a_batch(batches, batch_id, http={"input_file_id": stored.id})
    runner = BatchRunner(gateway, files=store)
    info = await batches.get("big")
    assert info is not None
    tracemalloc.start()
    try:
        items, total = await runner._read(info)
        if isinstance(items, AsyncIterable):
            first = await anext(aiter(items))
        else:
            first = next(iter(items))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert total == 160_000 and first.custom_id == "0"
    assert peak < 8 * CHUNK_BYTES, peak  # a chunk or two at a time, whatever the size
    await store.delete(stored.id, owner=None)
    with pytest.raises(FileNotFound):
        await runner.resume("gone")


async def test_cancelling_an_http_batch_nobody_drives_just_now_leaves_it_to_the_fleet(
    gateway: ModelGateway, redis: Redis
) -> None:
    """``l04 batch cancel`` on an HTTP batch between two drivers (one died, the next has not
    swept yet) ended it ``cancelled`` at once: no output file, its answered lines lost to
    the HTTP API. The fleet's driver finishes it (its answers in its output file)."""
    batches = BatchStore(redis)
    await a_batch(
        batches, "between", http={"input_file_id": "file-x", "endpoint": "/v1/chat/completions"}
    )
    await batches.move("between", BatchStatus.IN_PROGRESS, BatchStatus.VALIDATING)
    answer = {"id": "r", "custom_id": "a", "response": {"status_code": 200}, "error": None}
    await batches.record("between", 0, answer, ok=True)
    info = await BatchRunner(gateway).cancel("between")
    assert info.status is BatchStatus.CANCELLING  # its driver ends it, with its output file


async def test_a_cancelled_batch_whose_driver_died_finalizing_still_ends_cancelled(
    gateway: ModelGateway, redis: Redis, tmp_path: Path
) -> None:
    """Cancelling -> finalizing, then its driver died: the next one read ``finalizing`` and
    ended it ``completed`` (and sent batch.completed), though it was cancelled."""
    batches = BatchStore(redis)
    await a_batch(batches, "cut", output_dir=str(tmp_path))
    await batches.move("cut", BatchStatus.IN_PROGRESS, BatchStatus.VALIDATING)
    await batches.move("cut", BatchStatus.CANCELLING, BatchStatus.IN_PROGRESS)
    answer = {"id": "r", "custom_id": "a", "response": {"status_code": 200}, "error": None}
    await batches.record("cut", 0, answer, ok=True)
    await batches.move("cut", BatchStatus.FINALIZING, BatchStatus.CANCELLING)
    info = await BatchRunner(gateway).run_requests(
        [("a", make_request())], batch_id="cut", out_dir=tmp_path
    )
    assert info.status is BatchStatus.CANCELLED


async def test_two_drivers_finishing_one_batch_at_once_leave_one_whole_output(
    gateway: ModelGateway, redis: Redis
) -> None:
    """Two finishings of one HTTP batch at once (a driver paused past its lease and the one
    that took over) wrote into the same file id, each deleting and appending chunks: the
    output could interleave. Each now writes its own files; the batch points at one whole
    pair and the other pair is deleted."""
    store = FileStore(redis, max_total=1000 * CHUNK_BYTES, max_file=100 * CHUNK_BYTES)
    batches = BatchStore(redis)
    await a_batch(
        batches, "twice", http={"input_file_id": "file-in", "endpoint": "/v1/chat/completions"}
    )
    text = "x" * 4000
    for index in range(600):  # a few MiB of output: several chunks each
        answer = {
            "id": f"r{index}",
            "custom_id": f"c{index}",
            "response": {"status_code": 200, "body": {"text": text}},
            "error": None,
        }
        await batches.record("twice", index, answer, ok=True)
    info = await batches.get("twice")
    assert info is not None
    await asyncio.gather(
        BatchRunner(gateway, files=store)._store_results(info),
        BatchRunner(gateway, files=store)._store_results(info),
    )
    final = await batches.get("twice")
    assert final is not None and final.output_file_id
    read = [json.loads(line) async for line in store.lines(final.output_file_id)]
    assert sorted(line["custom_id"] for line in read) == sorted(f"c{i}" for i in range(600))
    objects = [key.decode() async for key in redis.scan_iter(match="l04:file:*")]
    assert [k for k in objects if not k.endswith(":chunks")] == [keys.file(final.output_file_id)]
