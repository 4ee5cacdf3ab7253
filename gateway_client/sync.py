"""``SyncModelGateway``: the same client for scripts that do not run an event loop.

It runs a private event loop in a background thread and forwards each call to it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator
from typing import Any, TypeVar

from config.settings import GatewaySettings
from gateway_client.gateway import ModelGateway
from gateway_client.handle import EmbeddingJob, JobHandle, JobStatus
from gateway_core.embeddings import EmbeddingRequest, EmbeddingResponse
from gateway_core.job_timeline import JobTrace
from gateway_core.request import InferenceRequest
from gateway_core.response import InferenceResponse, StreamChunk

T = TypeVar("T")


class _LoopThread:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, daemon=True, name="l04-client"
        )
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def iterate(self, agen: AsyncIterator[T]) -> Iterator[T]:
        async def next_item() -> T:
            return await agen.__anext__()

        while True:
            try:
                yield self.run(next_item())
            except StopAsyncIteration:
                return

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self.loop.close()


class SyncJobHandle:
    def __init__(self, handle: JobHandle, runner: _LoopThread) -> None:
        self._handle = handle
        self._runner = runner
        self.job_id = handle.job_id

    def result(self, timeout: float | None = None) -> InferenceResponse:
        return self._runner.run(self._handle.result(timeout))

    def stream(self, after_sequence: int = -1) -> Iterator[StreamChunk]:
        return self._runner.iterate(self._handle.stream(after_sequence))

    def status(self) -> JobStatus:
        return self._runner.run(self._handle.status())

    def timeline(self) -> JobTrace:
        return self._runner.run(self._handle.timeline())

    def cancel(self) -> bool:
        return self._runner.run(self._handle.cancel())


class SyncEmbeddingJob:
    def __init__(self, job: EmbeddingJob, runner: _LoopThread) -> None:
        self._job = job
        self._runner = runner
        self.job_id = job.job_id

    def result(self, timeout: float | None = None) -> EmbeddingResponse:
        return self._runner.run(self._job.result(timeout))

    def status(self) -> JobStatus:
        return self._runner.run(self._job.status())

    def cancel(self) -> bool:
        return self._runner.run(self._job.cancel())


class SyncModelGateway:
    def __init__(self, settings: GatewaySettings | None = None, **kwargs: Any) -> None:
        self._runner = _LoopThread()

        async def build() -> ModelGateway:
            return ModelGateway(settings, **kwargs)

        self._gateway = self._runner.run(build())

    def submit(
        self,
        request: InferenceRequest,
        job_id: str | None = None,
        *,
        stream: bool = False,
        key_id: str | None = None,
    ) -> SyncJobHandle:
        handle = self._runner.run(
            self._gateway.submit(request, job_id, stream=stream, key_id=key_id)
        )
        return SyncJobHandle(handle, self._runner)

    def job(self, job_id: str) -> SyncJobHandle:
        return SyncJobHandle(self._runner.run(self._gateway.job(job_id)), self._runner)

    def embed(
        self, request: EmbeddingRequest, job_id: str | None = None, *, key_id: str | None = None
    ) -> SyncEmbeddingJob:
        job = self._runner.run(self._gateway.embed(request, job_id, key_id=key_id))
        return SyncEmbeddingJob(job, self._runner)

    def embedding_job(self, job_id: str) -> SyncEmbeddingJob:
        return SyncEmbeddingJob(self._runner.run(self._gateway.embedding_job(job_id)), self._runner)

    def execute(self, request: InferenceRequest) -> InferenceResponse:
        return self._runner.run(self._gateway.execute(request))

    def stream(self, request: InferenceRequest) -> Iterator[StreamChunk]:
        return self._runner.iterate(self._gateway.stream(request))

    def health_check(self) -> dict[str, Any]:
        return self._runner.run(self._gateway.health_check())

    def close(self) -> None:
        try:
            self._runner.run(self._gateway.close())
        finally:
            self._runner.stop()

    def __enter__(self) -> SyncModelGateway:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
