"""Acknowledgements written together (workers/ack_batch.py), against a real redis-server."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import redis

from gateway_core.queues import REDIS_UNACKED, REDIS_UNACKED_INDEX
from l04.redis_server import LocalRedis
from workers.ack_batch import AckBatch


def held(r: redis.Redis, tags: list[str]) -> None:
    """Messages recorded as unacknowledged, as the intake script records them."""
    r.hset(REDIS_UNACKED, mapping={tag: '[{}, "", "q"]' for tag in tags})
    r.zadd(REDIS_UNACKED_INDEX, dict.fromkeys(tags, 1.0))


def batch_on(r: redis.Redis) -> AckBatch:
    @contextmanager
    def client() -> Iterator[redis.Redis]:
        yield r

    return AckBatch(client)


def wait_until_empty(r: redis.Redis, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while r.hlen(REDIS_UNACKED) or r.zcard(REDIS_UNACKED_INDEX):
        assert time.monotonic() < deadline, r.hkeys(REDIS_UNACKED)
        time.sleep(0.01)


def test_acknowledgements_from_many_threads_are_written_in_a_few_round_trips(
    redis_client: redis.Redis,
) -> None:
    tags = [f"t{i}" for i in range(2000)]
    held(redis_client, [*tags, "kept"])
    batch = batch_on(redis_client)
    before = redis_client.info("commandstats").get("cmdstat_hdel", {}).get("calls", 0)

    def ack(part: list[str]) -> None:
        for tag in part:
            batch.add(tag)

    threads = [threading.Thread(target=ack, args=(tags[i::8],)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    batch.close()
    assert redis_client.hkeys(REDIS_UNACKED) == [b"kept"]
    assert redis_client.zrange(REDIS_UNACKED_INDEX, 0, -1) == [b"kept"]
    writes = redis_client.info("commandstats")["cmdstat_hdel"]["calls"] - before
    assert writes < 200, f"{writes} HDELs for 2,000 acknowledgements: not batched"


def test_acknowledgements_wait_out_a_redis_outage_and_are_written_after_it() -> None:
    server = LocalRedis(appendonly=True).start()
    r = redis.Redis.from_url(server.url, socket_connect_timeout=1, socket_timeout=1)
    try:
        held(r, ["a", "b"])
        time.sleep(1.2)  # appendfsync everysec: the two entries are on disk
        batch = batch_on(r)
        server.stop()
        batch.add("a")
        batch.add("b")
        time.sleep(1.0)  # the writes fail and are kept
        server.start()
        wait_until_empty(r)
        batch.close()
    finally:
        r.close()
        server.stop()


def test_close_writes_what_is_waiting_and_a_late_acknowledgement_is_written_at_once(
    redis_client: redis.Redis,
) -> None:
    held(redis_client, ["a", "b", "late"])
    batch = batch_on(redis_client)
    batch.add("a")
    batch.add("b")
    batch.close()
    assert sorted(redis_client.hkeys(REDIS_UNACKED)) == [b"late"]
    batch.add("late")  # after close: no thread left to write it
    assert redis_client.hlen(REDIS_UNACKED) == 0
