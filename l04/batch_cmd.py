"""``l04 batch``: submit a JSONL file of requests, watch it, resume it, cancel it, get results.

Running the same ``l04 batch submit FILE`` again carries on with the same batch: its id comes
from the file's path and content (or ``--id``), so a submitting process that died is replaced by
simply running the command again, or ``l04 batch resume ID``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any, TextIO

from gateway_client.batch import BatchRunner, Progress
from gateway_client.batch.runner import DEFAULT_AGENT, DEFAULT_WINDOW
from gateway_client.batch.store import BatchInfo

BAR_WIDTH = 30


def batch_id_for(path: Path) -> str:
    digest = hashlib.sha256(str(path.resolve()).encode())
    with path.open("rb") as data:
        for block in iter(lambda: data.read(1 << 20), b""):
            digest.update(block)
    return "batch_" + digest.hexdigest()[:24]


def parse_window(text: str) -> float:
    """'24h', '90m', '3600s' or seconds."""
    units = {"h": 3600, "m": 60, "s": 1}
    if text and text[-1] in units:
        return float(text[:-1]) * units[text[-1]]
    return float(text)


def render(progress: Progress, tty: bool) -> str:
    eta = f"{progress.eta_s:.0f}s" if progress.eta_s is not None else "?"
    counts = (
        f"{progress.done}/{progress.total} done ({progress.failed} failed), "
        f"{progress.in_flight} in flight, {progress.rate:.1f}/s, ETA {eta} [{progress.status}]"
    )
    if not tty:
        return f"{progress.batch_id}: {counts}"
    filled = int(BAR_WIDTH * progress.done / progress.total) if progress.total else 0
    return f"\r[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {counts}\033[K"


async def show_progress(runner: BatchRunner, batch_id: str, out: TextIO) -> None:
    tty = out.isatty()
    async for progress in runner.progress(batch_id, interval=0.5 if tty else 2.0):
        out.write(render(progress, tty) + ("" if tty else "\n"))
        out.flush()
    if tty:
        out.write("\n")


async def _with_runner(args: argparse.Namespace, work: Any) -> int:
    from gateway_client.gateway import ModelGateway

    gateway = ModelGateway()
    try:
        runner = BatchRunner(gateway, window=getattr(args, "window", DEFAULT_WINDOW))
        result: int = await work(runner)
        return result
    finally:
        await gateway.close()


async def _drive(runner: BatchRunner, batch_id: str, run: Any, quiet: bool) -> int:
    running: asyncio.Future[BatchInfo] = asyncio.ensure_future(run)
    watcher = None
    if not quiet:
        # ``run`` makes the batch's record first: watch it once it exists (a watcher started
        # at once could read before the record is written, and stop the command: no batch).
        while not running.done() and await runner.store.get(batch_id) is None:  # noqa: ASYNC110 - polls Redis
            await asyncio.sleep(0.05)
        if not running.done():
            watcher = asyncio.create_task(show_progress(runner, batch_id, sys.stderr))
    info = await running
    if watcher is not None:
        await watcher
    return _report(info)


def _report(info: BatchInfo) -> int:
    print(json.dumps(info.as_dict(), indent=2))
    if info.output_dir and info.status.value in ("completed", "cancelled", "expired"):
        base = Path(info.output_dir) / info.batch_id
        print(f"results: {base}.results.jsonl\nerrors:  {base}.errors.jsonl", file=sys.stderr)
    return 0 if info.status.value == "completed" else 1


def cmd_submit(args: argparse.Namespace) -> int:
    path = Path(args.file)
    if not path.is_file():
        print(f"no such file: {path}", file=sys.stderr)
        return 2
    batch_id = args.id or batch_id_for(path)
    print(f"batch {batch_id}", file=sys.stderr)

    async def work(runner: BatchRunner) -> int:
        run = runner.run_file(
            path,
            batch_id=batch_id,
            model=args.model,
            out_dir=args.out,
            priority=args.priority,
            agent_did=args.agent,
            completion_window_s=parse_window(args.completion_window),
        )
        return await _drive(runner, batch_id, run, args.quiet)

    return asyncio.run(_with_runner(args, work))


def cmd_resume(args: argparse.Namespace) -> int:
    async def work(runner: BatchRunner) -> int:
        return await _drive(runner, args.batch_id, runner.resume(args.batch_id), args.quiet)

    return asyncio.run(_with_runner(args, work))


def cmd_status(args: argparse.Namespace) -> int:
    async def work(runner: BatchRunner) -> int:
        if args.watch:
            await show_progress(runner, args.batch_id, sys.stdout)
        info = await runner.store.get(args.batch_id)
        if info is None:
            print(f"no batch {args.batch_id}", file=sys.stderr)
            return 2
        print(json.dumps(info.as_dict(), indent=2))
        return 0

    return asyncio.run(_with_runner(args, work))


def cmd_results(args: argparse.Namespace) -> int:
    async def work(runner: BatchRunner) -> int:
        results, errors = await runner.write_results(args.batch_id, args.out)
        print(f"results: {results}\nerrors:  {errors}")
        return 0

    return asyncio.run(_with_runner(args, work))


def cmd_cancel(args: argparse.Namespace) -> int:
    async def work(runner: BatchRunner) -> int:
        info = await runner.cancel(args.batch_id)
        print(json.dumps(info.as_dict(), indent=2))
        return 0

    return asyncio.run(_with_runner(args, work))


def cmd_list(args: argparse.Namespace) -> int:
    async def work(runner: BatchRunner) -> int:
        for info in await runner.store.recent(args.limit):
            counts = f"{info.done}/{info.total} ({info.failed} failed)"
            print(f"{info.batch_id}  {info.status.value:<11}  {counts}  {info.input_file}")
        return 0

    return asyncio.run(_with_runner(args, work))


def add_batch_commands(sub: Any) -> None:
    batch = sub.add_parser("batch", help="batch inference runs from a JSONL file")
    commands = batch.add_subparsers(dest="batch_command", required=True)

    submit = commands.add_parser("submit", help="run a JSONL file (again: carry on)")
    submit.add_argument("file")
    submit.add_argument("--model", default=None, help="answer every line with this model")
    submit.add_argument("--out", default=".", help="where the results and errors files go")
    submit.add_argument("--id", default=None, help="batch id (default: from the file)")
    submit.add_argument("--priority", default="low", choices=["high", "normal", "low"])
    submit.add_argument("--window", type=int, default=DEFAULT_WINDOW, help="jobs in flight")
    submit.add_argument("--completion-window", default="24h", help="e.g. 24h, 90m")
    submit.add_argument("--agent", default=os.environ.get("L04_BATCH_AGENT", DEFAULT_AGENT))
    submit.add_argument("--quiet", action="store_true", help="no progress")
    submit.set_defaults(func=cmd_submit)

    resume = commands.add_parser("resume", help="carry on with a batch whose process stopped")
    resume.add_argument("batch_id")
    resume.add_argument("--window", type=int, default=DEFAULT_WINDOW)
    resume.add_argument("--quiet", action="store_true")
    resume.set_defaults(func=cmd_resume)

    status = commands.add_parser("status", help="a batch's status and counts")
    status.add_argument("batch_id")
    status.add_argument("--watch", action="store_true", help="follow until it ends")
    status.set_defaults(func=cmd_status)

    results = commands.add_parser("results", help="write the results and errors files")
    results.add_argument("batch_id")
    results.add_argument("--out", default=None)
    results.set_defaults(func=cmd_results)

    cancel = commands.add_parser("cancel", help="stop the queued work; work in flight finishes")
    cancel.add_argument("batch_id")
    cancel.set_defaults(func=cmd_cancel)

    listing = commands.add_parser("list", help="recent batches")
    listing.add_argument("--limit", type=int, default=20)
    listing.set_defaults(func=cmd_list)
