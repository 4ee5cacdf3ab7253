"""``l04 dlq``: look at the messages workers set aside, and resend the ones that can be read.

``replay`` resends a dead letter whose envelope names a job that still waits for an answer (it
is ``queued``): the job goes back on its provider's queue. Anything else (an undecodable body,
an unknown job, a job that already ended) stays in the list and is reported.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from gateway_core import dead_letters
from gateway_core.job_records import JobRecords
from gateway_core.job_states import JobState


async def _list(limit: int) -> int:
    from gateway_client.gateway import ModelGateway

    gateway = ModelGateway()
    try:
        letters = await dead_letters.read(gateway.redis, limit)
    finally:
        await gateway.close()
    for index, letter in enumerate(letters):
        envelope = str(letter.fields.get("envelope", ""))
        print(json.dumps({"index": index, **letter.fields, "envelope": envelope[:500]}))
    if not letters:
        print("the dead-letter list is empty", file=sys.stderr)
    return 0


async def _replay(indexes: list[int] | None) -> int:
    from gateway_client.gateway import ModelGateway
    from gateway_core.queues import priority_value, queue_name
    from gateway_core.wire import UnreadableEnvelope, read_envelope
    from tasks.message import publish_job

    gateway = ModelGateway()
    records = JobRecords(gateway.redis)
    replayed = failed = 0
    try:
        for index, letter in enumerate(await dead_letters.read(gateway.redis)):
            if indexes is not None and index not in indexes:
                continue
            try:
                envelope = json.loads(letter.fields.get("envelope", ""))
                if isinstance(envelope, list) and envelope:  # a whole task body: [args, ...]
                    envelope = envelope[0][0] if isinstance(envelope[0], list) else envelope[0]
                job_id = read_envelope(envelope)
            except (ValueError, UnreadableEnvelope, IndexError, KeyError, TypeError) as exc:
                print(f"{index}: not replayable ({type(exc).__name__}: {exc})")
                failed += 1
                continue
            fields = await records.status(job_id)
            if fields.get("state") != JobState.QUEUED:
                print(f"{index}: job {job_id} is {fields.get('state', 'unknown')}: not replayed")
                failed += 1
                continue
            queue = queue_name(fields["provider"])
            priority = priority_value(_priority(fields), gateway.settings.effective_broker_url)
            await asyncio.to_thread(publish_job, gateway._celery, job_id, queue, priority)
            await dead_letters.remove(gateway.redis, letter)
            print(f"{index}: job {job_id} sent back to {queue}")
            replayed += 1
    finally:
        await gateway.close()
    print(f"replayed {replayed}, left {failed}", file=sys.stderr)
    return 0 if failed == 0 else 1


def _priority(fields: dict[str, str]) -> Any:
    from gateway_core.request import Priority

    return Priority(fields.get("priority", "normal"))


def add_dlq_commands(sub: Any) -> None:
    dlq = sub.add_parser("dlq", help="messages workers could not read")
    commands = dlq.add_subparsers(dest="dlq_command", required=True)
    listing = commands.add_parser("list", help="show the dead letters, newest first")
    listing.add_argument("--limit", type=int, default=50)
    listing.set_defaults(func=lambda args: asyncio.run(_list(args.limit)))
    replay = commands.add_parser("replay", help="resend dead letters whose job still waits")
    replay.add_argument("indexes", nargs="*", type=int, help="which (default: all)")
    replay.set_defaults(func=lambda args: asyncio.run(_replay(args.indexes or None)))
