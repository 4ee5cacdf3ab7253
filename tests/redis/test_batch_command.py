"""``l04 batch``'s driving of a run: its progress watcher and the run it watches."""

from __future__ import annotations

import asyncio
from pathlib import Path

from config.settings import load_settings
from gateway_client.batch.runner import BatchRunner
from gateway_client.batch.store import BatchInfo
from gateway_client.gateway import ModelGateway
from l04 import batch_cmd


async def test_the_progress_watcher_waits_for_the_record_the_run_makes(
    redis_url: str, tmp_path: Path
) -> None:
    """The run writes the batch's record at its first step; a watcher that read before that
    (a busy Redis, another connection of the pool) stopped the command with "no batch"."""
    async with ModelGateway(load_settings(REDIS_URL=redis_url)) as gateway:
        runner = BatchRunner(gateway)

        async def run() -> BatchInfo:
            await asyncio.sleep(0.3)  # the record is not there yet when the command starts
            await runner.store.create(
                "late",
                input_file="",
                output_dir=str(tmp_path),
                model=None,
                priority="low",
                agent_did="",
                completion_window_s=60,
            )
            info = await runner.store.get("late")
            assert info is not None
            return info

        code = await batch_cmd._drive(runner, "late", run(), quiet=False)
    assert code == 1  # the batch is reported (still validating: not completed)
