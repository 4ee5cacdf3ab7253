"""The job message on the queue: a schema version and a job id, nothing else.

Everything else about a job (the request, its deadline, its model) is in the job's Redis hash,
written before the message is sent. A worker that finds an envelope it cannot read (another
version, a missing id) sets the message aside in the dead-letter list instead of guessing.
"""

from __future__ import annotations

import re
from typing import Any

SCHEMA_VERSION = 1
JOB_ID_PATTERN = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class UnreadableEnvelope(ValueError):
    pass


def make_envelope(job_id: str) -> dict[str, Any]:
    return {"v": SCHEMA_VERSION, "job_id": job_id}


def read_envelope(envelope: Any) -> str:
    """The job id of a readable envelope, else :class:`UnreadableEnvelope` saying why."""
    if not isinstance(envelope, dict):
        raise UnreadableEnvelope(f"envelope is a {type(envelope).__name__}, not an object")
    version = envelope.get("v")
    if version != SCHEMA_VERSION:
        raise UnreadableEnvelope(f"schema version {version!r}; this worker reads {SCHEMA_VERSION}")
    job_id = envelope.get("job_id")
    if not isinstance(job_id, str) or not JOB_ID_PATTERN.match(job_id):
        raise UnreadableEnvelope("missing or malformed job_id")
    return job_id
