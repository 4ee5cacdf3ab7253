"""Acknowledgements written to Redis together, a few round trips for many messages.

kombu's Redis transport acknowledges a message with its own round trip (``ZREM unacked_index``
and ``HDEL unacked`` in a pipeline), on the thread that acknowledges. At hundreds of jobs a second
that is hundreds of round trips. Here an acknowledgement is queued and one thread writes all that
are waiting with one pipeline (``ZREM``/``HDEL`` of many tags), so while one write is on its way
the next batch gathers: a group commit.

An acknowledgement not yet written is harmless if the worker dies: the message is still in the
unacknowledged set, kombu restores it after the visibility timeout, and its redelivery finds the
job ended (the job's record decides, not the message) and is acknowledged then.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

from gateway_core.queues import REDIS_UNACKED, REDIS_UNACKED_INDEX

log = logging.getLogger(__name__)

RETRY_AFTER_S = 0.5
#: Tags per pipeline; a batch larger than this is written in several.
MAX_BATCH = 1000


class AckBatch:
    def __init__(
        self,
        client: Callable[[], AbstractContextManager[Any]],
        unacked_key: str = REDIS_UNACKED,
        index_key: str = REDIS_UNACKED_INDEX,
    ) -> None:
        self._client = client  # a context manager giving a blocking redis-py client
        self._unacked_key = unacked_key
        self._index_key = index_key
        self._pending: list[str] = []
        self._lock = threading.Condition()
        self._thread: threading.Thread | None = None
        self._writing = False
        self._closed = False

    def add(self, tag: str) -> None:
        with self._lock:
            closed = self._closed
            if not closed:
                self._pending.append(tag)
                if self._thread is None:
                    self._thread = threading.Thread(target=self._run, daemon=True, name="l04-acks")
                    self._thread.start()
                self._lock.notify()
        if closed:  # a late acknowledgement (the channel is closing): written at once, unlocked
            self._write_now([tag])

    def close(self, timeout: float = 5.0) -> None:
        """Write what is waiting (within ``timeout``), then stop the thread."""
        with self._lock:
            self._closed = True
            self._lock.notify()
            self._lock.wait_for(lambda: not self._pending and not self._writing, timeout)

    def _run(self) -> None:
        while True:
            with self._lock:
                self._lock.wait_for(lambda: self._pending or self._closed)
                if not self._pending:
                    return
                tags, self._pending = self._pending, []
                self._writing = True
            try:
                for chunk in _chunks(tags, MAX_BATCH):
                    self._write(chunk)
                    tags = tags[len(chunk) :]
            except Exception as exc:
                log.warning(
                    "acknowledgements not written (%s), %d kept", type(exc).__name__, len(tags)
                )
                with self._lock:
                    self._pending[:0] = tags
                    self._writing = False
                    if self._closed:
                        self._pending.clear()
                        self._lock.notify_all()
                        return
                    self._lock.wait(RETRY_AFTER_S)
                continue
            with self._lock:
                self._writing = False
                self._lock.notify_all()

    def _write(self, tags: list[str]) -> None:
        with self._client() as client, client.pipeline(transaction=False) as pipe:
            pipe.zrem(self._index_key, *tags)
            pipe.hdel(self._unacked_key, *tags)
            pipe.execute()

    def _write_now(self, tags: list[str]) -> None:
        try:
            self._write(tags)
        except Exception as exc:
            log.warning("acknowledgement not written (%s)", type(exc).__name__)


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
