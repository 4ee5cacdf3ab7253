"""The fleet drives the HTTP batches: every ``l04 serve`` process runs this loop.

Every half lease period (and at once when a batch is made on this server) it looks at the
batches not yet ended (``l04:batches:fleet``) and takes the lease of any that nobody holds
(:class:`BatchLease`), then runs it with the ordinary :class:`BatchRunner` (``resume``: lines
already answered are skipped, lines in flight are attached to by their job ids, so no provider
is called twice for a line), renewing the lease every third of a period. A server that dies
stops renewing; its lease lapses after a period and another server takes the batch within the
next half period: within two periods in all. A driver that finds it lost its lease (paused too
long) stops at once, leaving the batch to the holder.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from gateway_client.batch.files import FileStore
from gateway_client.batch.kinds import LineKind
from gateway_client.batch.lease import BatchLease
from gateway_client.batch.runner import BatchRunner, OnEnd
from gateway_client.batch.store import ENDED, BatchStatus, BatchStore
from gateway_client.gateway import ModelGateway
from gateway_core import keys
from gateway_core.errors import GatewayError

log = logging.getLogger("l04.http.batches")


class BatchDriver:
    def __init__(
        self,
        gateway: ModelGateway,
        files: FileStore,
        kinds: dict[str, LineKind],
        *,
        lease_s: float,
        window: int,
        on_end: OnEnd | None = None,
    ) -> None:
        self.gateway = gateway
        self.files = files
        self.kinds = kinds
        self.lease_s = lease_s
        self.window = window
        self.on_end = on_end
        self.store = BatchStore(gateway.redis)
        self.driving: dict[str, asyncio.Task[None]] = {}
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """Sweep now (a batch was just made here), not at the next half period."""
        self._wake.set()

    async def run(self) -> None:
        """Until cancelled (the server's shutdown): look for batches to drive."""
        try:
            while True:
                try:
                    await self.sweep()
                except Exception as exc:  # Redis away: try again at the next sweep
                    log.warning("batch sweep failed: %s", type(exc).__name__)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.lease_s / 2)
                self._wake.clear()
        finally:
            for task in list(self.driving.values()):
                task.cancel()
            for task in list(self.driving.values()):
                with contextlib.suppress(BaseException):
                    await task

    async def sweep(self) -> None:
        raw: Any = await self.gateway.redis.smembers(keys.FLEET_BATCHES)
        for item in raw:
            batch_id = item.decode() if isinstance(item, bytes) else str(item)
            if batch_id in self.driving:
                continue
            info = await self.store.get(batch_id)
            if info is None or info.status in ENDED or info.status is BatchStatus.FAILED:
                await self.gateway.redis.srem(keys.FLEET_BATCHES, batch_id)
                continue
            lease = BatchLease(self.gateway.redis, batch_id, self.lease_s)
            if await lease.take():
                task = asyncio.create_task(self._drive(batch_id, lease))
                self.driving[batch_id] = task

    async def _drive(self, batch_id: str, lease: BatchLease) -> None:
        runner = BatchRunner(
            self.gateway,
            window=self.window,
            files=self.files,
            kinds=self.kinds,
            on_end=self.on_end,
        )
        work = asyncio.create_task(runner.resume(batch_id))
        try:
            while not work.done():
                await asyncio.wait({work}, timeout=self.lease_s / 3)
                if not work.done() and not await lease.renew():
                    log.warning("batch %s: lease lost, another server drives it", batch_id)
                    work.cancel()
                    with contextlib.suppress(BaseException):
                        await work
                    return
            info = work.result()
            if info.status in ENDED:
                await self.gateway.redis.srem(keys.FLEET_BATCHES, batch_id)
        except GatewayError as error:  # its input file is gone, say: the batch cannot run
            log.warning("batch %s failed: %s %s", batch_id, error.code, error.message)
            await self.store.move(
                batch_id, BatchStatus.FAILED, BatchStatus.VALIDATING, BatchStatus.IN_PROGRESS
            )
            await self.gateway.redis.srem(keys.FLEET_BATCHES, batch_id)
        except Exception as exc:
            log.exception("batch %s: driver failed (%s)", batch_id, type(exc).__name__)
        finally:
            if not work.done():
                work.cancel()
                with contextlib.suppress(BaseException):
                    await work
            with contextlib.suppress(Exception):
                await lease.release()
            self.driving.pop(batch_id, None)
