"""``l04 trace JOB_ID``: a job's timeline from Redis alone, for when no tracing backend runs.

Prints each step (created, claimed, deferred, failed over, first chunk, ended...) with its time
since the job's creation and since the step before, then the queue wait, the time to the first
chunk and the total; ``--json`` prints the same as one JSON object. Exits 0; 1 for a job with no
record (E4406: never submitted, or its record expired); 2 when Redis cannot be reached (E4407).
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from gateway_core.errors import UnknownJob


async def _trace(job_id: str, as_json: bool) -> int:
    from gateway_client.gateway import ModelGateway

    gateway = ModelGateway()
    try:
        trace = await (await gateway.job(job_id)).timeline()
    except UnknownJob as error:
        print(f"l04 trace: {error}", file=sys.stderr)
        return 1
    finally:
        await gateway.close()
    print(json.dumps(trace.to_json(), indent=2) if as_json else trace.render())
    return 0


def add_trace_command(sub: Any) -> None:
    trace = sub.add_parser(
        "trace", help="a job's timeline from Redis: queued, claimed, deferred, failover, ended"
    )
    trace.add_argument("job_id", metavar="JOB_ID")
    trace.add_argument("--json", action="store_true", help="one JSON object instead of text")
    trace.set_defaults(func=lambda args: asyncio.run(_trace(args.job_id, args.json)))
