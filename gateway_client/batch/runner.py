"""Running a batch: every line a job, a bounded window of them in flight, each answer stored once.

Each line becomes an ordinary job (same rate limits, cache, routing and failover as any other),
at LOW priority unless asked otherwise, whose id is derived from the batch and the line
(``b-<batch>-<line>``). That makes a run resumable by anyone: a run that dies and is started
again skips the lines already answered, and for lines it had in flight, submitting the same job
id again attaches to the job that exists instead of queueing a second one. Answers go to Redis
once per line (:meth:`BatchStore.record`), so across any number of runs each input line appears
exactly once in the output. At most ``window`` jobs are queued or running at a time, so a batch
of 100,000 lines never puts 100,000 jobs in Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
import uuid
from collections.abc import (
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Mapping,
)
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway_client.batch.files import FileStore
from gateway_client.batch.input import BatchLine, LineError, parse_jsonl
from gateway_client.batch.kinds import CHAT, DEFAULT_KINDS, LineKind, Running
from gateway_client.batch.output import (
    answer_line,
    error_line,
    error_line_from,
    jsonl,
    write_files,
)
from gateway_client.batch.store import ENDED, BatchInfo, BatchStatus, BatchStore
from gateway_client.gateway import ModelGateway
from gateway_client.handle import JobHandle
from gateway_core import keys
from gateway_core.errors import (
    GatewayError,
    InvalidParameters,
    InvalidRequest,
    JobCancelled,
    QueueFull,
)
from gateway_core.job_states import JobState
from gateway_core.request import InferenceRequest

DEFAULT_WINDOW = 256
DEFAULT_COMPLETION_WINDOW_S = 24 * 3600.0
DEFAULT_AGENT = "did:l04:batch"
BEAT_INTERVAL_S = 1.0


@dataclass(frozen=True, slots=True)
class Progress:
    batch_id: str
    status: str
    total: int
    completed: int
    failed: int
    in_flight: int
    rate: float  # lines answered per second, lately
    eta_s: float | None

    @property
    def done(self) -> int:
        return self.completed + self.failed


#: Called once a batch reaches its end status (completed, cancelled, expired), by the process
#: that moved it there: the place for ``batch.completed`` and the other batch events.
OnEnd = Callable[[BatchInfo], Awaitable[None]]
#: A batch's lines (parsed as they are reached) and their number.
Lines = tuple[Iterable[BatchLine | LineError] | AsyncIterable[BatchLine | LineError], int]


class BatchRunner:
    """``files``: the file store, for batches made over HTTP (their input and output are files
    there); ``kinds``: the line urls it runs (default: chat completions)."""

    def __init__(
        self,
        gateway: ModelGateway,
        *,
        window: int = DEFAULT_WINDOW,
        files: FileStore | None = None,
        kinds: Mapping[str, LineKind] | None = None,
        on_end: OnEnd | None = None,
    ) -> None:
        if window < 1:
            raise InvalidParameters("window must be at least 1")
        self.gateway = gateway
        self.store = BatchStore(gateway.redis)
        self.window = window
        self.in_flight = 0
        settings = gateway.settings
        self.files = files or FileStore(
            gateway.redis,
            max_total=settings.files_max_bytes,
            max_file=settings.file_max_bytes,
            ttl_s=settings.files_ttl,
        )
        self.kinds = DEFAULT_KINDS if kinds is None else kinds
        self.on_end = on_end

    # -- starting and resuming ------------------------------------------------------------------

    async def run_file(
        self,
        path: str | Path,
        *,
        batch_id: str,
        model: str | None = None,
        out_dir: str | Path = ".",
        priority: str = "low",
        agent_did: str = DEFAULT_AGENT,
        completion_window_s: float = DEFAULT_COMPLETION_WINDOW_S,
    ) -> BatchInfo:
        """Run (or carry on with) the batch of a JSONL file until every line is answered."""
        path = _absolute(path)
        await self.store.create(
            batch_id,
            input_file=path,
            output_dir=_absolute(out_dir),
            model=model,
            priority=priority,
            agent_did=agent_did,
            completion_window_s=completion_window_s,
        )
        return await self.resume(batch_id)

    async def resume(self, batch_id: str) -> BatchInfo:
        info = await self._info(batch_id)
        if info.status in ENDED:
            return info
        return await self._drive(info, *await self._read(info))

    async def run_requests(
        self,
        requests: Iterable[tuple[str, InferenceRequest]],
        *,
        batch_id: str,
        out_dir: str | Path = ".",
        completion_window_s: float = DEFAULT_COMPLETION_WINDOW_S,
    ) -> BatchInfo:
        """The Python API: ``(custom_id, request)`` pairs. Pass them again to resume."""
        items: list[BatchLine | LineError] = []
        seen: set[str] = set()
        for index, (custom_id, request) in enumerate(requests):
            if custom_id in seen:
                items.append(LineError(index, custom_id, "E4500", "custom_id is used twice"))
            else:
                seen.add(custom_id)
                items.append(BatchLine(index, custom_id, request))
        await self.store.create(
            batch_id,
            input_file="",
            output_dir=_absolute(out_dir),
            model=None,
            priority="low",
            agent_did="",
            completion_window_s=completion_window_s,
        )
        info = await self._info(batch_id)
        if info.status in ENDED:
            return info
        return await self._drive(info, items, len(items))

    # -- cancel, results, progress --------------------------------------------------------------

    async def cancel(self, batch_id: str) -> BatchInfo:
        """Stop the queued work; work in flight finishes. Ends the batch as ``cancelled``."""
        info = await self._info(batch_id)
        moved = await self.store.move(
            batch_id, BatchStatus.CANCELLING, BatchStatus.VALIDATING, BatchStatus.IN_PROGRESS
        )
        if not moved or await self.store.driver(batch_id) is not None:
            return await self._info(batch_id)  # the driving process does the rest
        if info.input_file_id:  # an HTTP batch: the fleet's next driver ends it, files and all
            return await self._info(batch_id)
        # Nobody drives it: finish the cancellation here (needs the input to know the lines).
        if not info.input_file:
            await self.store.move(batch_id, BatchStatus.CANCELLED, BatchStatus.CANCELLING)
            return await self._info(batch_id)
        return await self._drive(await self._info(batch_id), *await self._read(info))

    async def write_results(
        self, batch_id: str, out_dir: str | Path | None = None
    ) -> tuple[Path, Path]:
        info = await self._info(batch_id)
        lines = [line for _, line in await self.store.answers(batch_id)]
        return write_files(Path(out_dir or info.output_dir or "."), batch_id, lines)

    async def progress(self, batch_id: str, interval: float = 1.0) -> AsyncIterator[Progress]:
        """Progress every ``interval`` seconds until the batch ends (the last one included)."""
        samples: list[tuple[float, int]] = []
        while True:
            info = await self._info(batch_id)
            now = time.monotonic()
            samples = [*samples, (now, info.done)][-10:]
            rate = 0.0
            if len(samples) > 1 and samples[-1][0] > samples[0][0]:
                rate = (samples[-1][1] - samples[0][1]) / (samples[-1][0] - samples[0][0])
            left = max(0, info.total - info.done)
            raw_flight = await self.gateway.redis.hget(keys.batch(batch_id), "in_flight")
            yield Progress(
                batch_id=batch_id,
                status=info.status.value,
                total=info.total,
                completed=info.completed,
                failed=info.failed,
                in_flight=int(raw_flight or 0) if info.status not in ENDED else 0,
                rate=rate,
                eta_s=left / rate if rate > 0 else None,
            )
            if info.status in ENDED or info.status is BatchStatus.FAILED:
                return
            await asyncio.sleep(interval)

    # -- the driver -----------------------------------------------------------------------------

    async def _info(self, batch_id: str) -> BatchInfo:
        info = await self.store.get(batch_id)
        if info is None:
            raise InvalidRequest(f"no batch {batch_id!r}")
        return info

    async def _read(self, info: BatchInfo) -> Lines:
        """The batch's lines, parsed lazily as the driver reaches them (so the first jobs are
        queued at once, and parsing overlaps the answers of the first), and how many there are."""
        if info.input_file_id:
            # Read from the file store as they are reached: an input of 200 MB is never held
            # whole in memory (once per batch made from it). Gone: FileNotFound, the batch fails.
            await self.files.get(info.input_file_id, owner=None)
            total = 0
            async for text in self.files.lines(info.input_file_id):
                total += bool(text.strip())
            return self._file_lines(info), total
        texts = _read_local(info)
        parsed = parse_jsonl(
            texts,
            agent_did=info.agent_did or DEFAULT_AGENT,
            model=info.model or None,
            priority=info.priority,
            kinds=self.kinds,
        )
        return parsed, sum(1 for text in texts if text.strip())

    async def _file_lines(self, info: BatchInfo) -> AsyncIterator[BatchLine | LineError]:
        seen: set[str] = set()
        index = 0
        async for text in self.files.lines(info.input_file_id):
            for item in parse_jsonl(
                [text],
                agent_did=info.agent_did or DEFAULT_AGENT,
                priority=info.priority,
                kinds=self.kinds,
                start=index,
                seen=seen,
            ):
                yield item
            index += 1

    async def _drive(
        self,
        info: BatchInfo,
        items: Iterable[BatchLine | LineError] | AsyncIterable[BatchLine | LineError],
        total: int,
    ) -> BatchInfo:
        batch_id = info.batch_id
        store = self.store
        await store.set_total(batch_id, total)
        await store.move(batch_id, BatchStatus.IN_PROGRESS, BatchStatus.VALIDATING)
        answered = await store.answered(batch_id)
        stopping = asyncio.Event()
        if info.status is BatchStatus.CANCELLING or time.time() > info.expires_at:
            stopping.set()
        driver = f"{socket.gethostname()}:{os.getpid()}"
        ended = asyncio.Event()
        beat = asyncio.create_task(self._beat(batch_id, driver, info.expires_at, stopping, ended))
        slots = asyncio.Semaphore(self.window)
        running: set[asyncio.Task[None]] = set()
        try:
            async for item in _each(items):
                if item.index in answered:
                    continue
                if isinstance(item, LineError):
                    line = error_line(batch_id, item.custom_id, item.code, item.message)
                    await store.record(batch_id, item.index, line, ok=False)
                    continue
                await slots.acquire()
                task = asyncio.create_task(self._line(batch_id, item, info, stopping))
                running.add(task)
                task.add_done_callback(running.discard)
                task.add_done_callback(lambda _: slots.release())
            if running:
                await asyncio.gather(*running)
        finally:
            # Both: a cancel that lands as the beat's Redis connection opens is lost (Python
            # 3.11's asyncio.wait_for, inside redis-py), and awaiting it then hung the batch.
            ended.set()
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat
            await store.redis.delete(keys.batch_driver(batch_id))
        return await self._finish(batch_id)

    async def _finish(self, batch_id: str) -> BatchInfo:
        store = self.store
        final = await self._info(batch_id)
        # cancelling_at: cancelled, though a driver that died finalizing left it finalizing
        if final.status is BatchStatus.CANCELLING or "cancelling_at" in final.timestamps:
            end = BatchStatus.CANCELLED
        elif time.time() > final.expires_at:
            end = BatchStatus.EXPIRED
        else:
            end = BatchStatus.COMPLETED
        await store.move(
            batch_id, BatchStatus.FINALIZING, BatchStatus.IN_PROGRESS, BatchStatus.CANCELLING
        )
        if final.input_file_id:
            await self._store_results(final)
        else:
            await self.write_results(batch_id)
        ended = await store.move(batch_id, end, BatchStatus.FINALIZING)
        info = await self._info(batch_id)
        if ended and self.on_end is not None:
            await self.on_end(info)  # the batch's terminal status: once, by the mover
        return info

    async def _store_results(self, info: BatchInfo) -> None:
        """An HTTP batch's output and error files, in the file store, owned by its key.

        Each finishing writes files of its own (the batch's id and a nonce), then points the
        batch at them and deletes the pair it replaced: two drivers finishing one batch at once
        (one paused past its lease) never write into the same file, and a driver that takes
        over and finishes again leaves no second pair behind."""
        lines = [line for _, line in await self.store.answers(info.batch_id)]
        nonce = uuid.uuid4().hex[:8]
        made = {}
        for name, wanted in (("output", True), ("error", False)):
            if not any((line["error"] is None) is wanted for line in lines):
                made[name] = ""
                continue
            stored = await self.files.put(
                jsonl(lines, wanted),
                owner=info.key_id or None,
                filename=f"{info.batch_id}_{name}.jsonl",
                purpose="batch_output",
                file_id=f"file-{info.batch_id}-{name}-{nonce}",
                force=True,
            )
            made[name] = stored.id
        replaced = await self.store.set_files(info.batch_id, made["output"], made["error"])
        for old in replaced:
            if old and old not in made.values():
                await self.files.delete(old, owner=None)

    async def _beat(
        self,
        batch_id: str,
        driver: str,
        expires_at: float,
        stopping: asyncio.Event,
        ended: asyncio.Event,
    ) -> None:
        """Keep the driver's heartbeat, publish what is in flight, notice cancel and expiry;
        until cancelled or ``ended``."""
        while not ended.is_set():
            await self.store.beat(batch_id, driver)
            await self.gateway.redis.hset(keys.batch(batch_id), "in_flight", self.in_flight)
            info = await self.store.get(batch_id)
            if info is not None and info.status is BatchStatus.CANCELLING:
                stopping.set()
            if time.time() > expires_at:
                stopping.set()
            await asyncio.sleep(BEAT_INTERVAL_S)

    async def _line(
        self, batch_id: str, item: BatchLine, info: BatchInfo, stopping: asyncio.Event
    ) -> None:
        job_id = f"b-{batch_id}-{item.index}"
        self.in_flight += 1
        try:
            kind = self.kinds.get(item.url, CHAT)
            if stopping.is_set() or time.time() > info.expires_at:
                # Only what was already queued or running (past the window, a new job could
                # not be made: its deadline, the window's end, would have passed).
                attached = await self._attach(kind, job_id)
                if attached is None:
                    await self._end_unrun(batch_id, item, info)
                    return
                running = attached
            else:
                request = item.request.model_copy(update={"deadline": info.expires_at})
                try:
                    running = await self._submit(kind, request, job_id, info.key_id or None)
                except GatewayError as refused:  # E4001 unknown model, E41xx routing...
                    line = error_line_from(batch_id, item.custom_id, refused)
                    await self.store.record(batch_id, item.index, line, ok=False)
                    return
            handle = running.handle
            watcher = asyncio.create_task(self._cancel_when_stopping(handle, stopping))
            try:
                response = await running.result()
                body = kind.body(response)
                line, ok = answer_line(item.custom_id, job_id, response.request_id, body), True
            except GatewayError as error:
                line, ok = error_line_from(batch_id, item.custom_id, error), False
                if isinstance(error, JobCancelled):
                    line = error_line(batch_id, item.custom_id, "E4405", "batch cancelled")
            finally:
                watcher.cancel()
            await self.store.record(batch_id, item.index, line, ok=ok)
        finally:
            self.in_flight -= 1

    async def _submit(
        self, kind: LineKind, request: Any, job_id: str, key_id: str | None
    ) -> Running:
        """Submit; a full queue (E4403) is waited out, not turned into a failed line."""
        while True:
            try:
                return await kind.submit(self.gateway, request, job_id, key_id)
            except GatewayError as error:
                if not isinstance(error, QueueFull):
                    raise
                await asyncio.sleep(error.retry_after or 1.0)

    async def _attach(self, kind: LineKind, job_id: str) -> Running | None:
        try:
            return await kind.attach(self.gateway, job_id)
        except GatewayError:
            return None

    async def _cancel_when_stopping(self, handle: JobHandle, stopping: asyncio.Event) -> None:
        """On cancel or expiry, a job still queued is cancelled; a running one finishes."""
        await stopping.wait()
        with contextlib.suppress(GatewayError):
            if (await handle.status()).state in (JobState.QUEUED, JobState.DEFERRED):
                await handle.cancel()

    async def _end_unrun(self, batch_id: str, item: BatchLine, info: BatchInfo) -> None:
        expired = time.time() > info.expires_at
        code, message = (
            ("batch_expired", "the batch's completion window ended")
            if expired
            else (
                "E4405",
                "batch cancelled",
            )
        )
        line = error_line(batch_id, item.custom_id, code, message)
        await self.store.record(batch_id, item.index, line, ok=False)


async def _each(
    items: Iterable[BatchLine | LineError] | AsyncIterable[BatchLine | LineError],
) -> AsyncIterator[BatchLine | LineError]:
    if isinstance(items, AsyncIterable):
        async for item in items:
            yield item
    else:
        for item in items:
            yield item


def _read_local(info: BatchInfo) -> list[str]:
    """The lines of a batch whose input is a local file (``l04 batch submit``)."""
    try:
        with open(info.input_file, encoding="utf-8") as lines:
            return list(lines)
    except OSError as exc:
        raise InvalidRequest(
            f"cannot read the batch input {info.input_file}: {exc.strerror}"
        ) from None


def _absolute(path: str | Path) -> str:
    """An absolute path, so that a resume from another directory finds the same files."""
    return os.path.abspath(path)
