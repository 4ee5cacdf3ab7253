"""OpenAI's Batch API: ``/v1/batches``, views of the same :class:`BatchStore` records that
``l04 batch`` reads and writes.

Create validates the whole input file before anything runs, and refuses (400, naming the line)
a file that cannot be a batch: not JSONL (a line that is not a JSON object), a line whose
``method`` is not POST or whose ``url`` is not the batch's endpoint, more lines than
``L04_BATCH_MAX_LINES``. (OpenAI accepts such a batch and fails it later with ``errors``; a 400
at once tells the client the same sooner.) A line with a bad body or a repeated ``custom_id``
does not stop the batch: it goes to the error file, counted in ``request_counts.failed``.

The batch is then driven by the fleet (:mod:`gateway_http.batch_driver`), not by this request.
A batch is seen by the key that made it; one made with ``l04 batch submit`` (no key) by the keys
of the agent it ran as, and by everyone when the server runs without authentication.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from config.settings import GatewaySettings
from gateway_client.batch.files import FileStore
from gateway_client.batch.kinds import LineKind
from gateway_client.batch.store import BatchInfo, BatchStatus, BatchStore
from gateway_core.errors import InvalidRequest, UnknownJob
from gateway_http.door import Caller, Metadata
from gateway_http.files import owner

COMPLETION_WINDOWS = {"24h": 24 * 3600.0}
MAX_LIST = 100
TIMESTAMPS = (
    "in_progress_at",
    "finalizing_at",
    "completed_at",
    "failed_at",
    "expired_at",
    "cancelling_at",
    "cancelled_at",
)


class BatchBody(BaseModel):
    """The request body of ``POST /v1/batches``."""

    model_config = ConfigDict(extra="forbid", strict=True)
    input_file_id: str = Field(min_length=1, max_length=128)
    endpoint: str = Field(min_length=1, max_length=64)
    completion_window: str
    metadata: Metadata | None = None


def batch_object(info: BatchInfo) -> dict[str, Any]:
    """OpenAI's Batch object."""
    stamps = {name: _int(info.timestamps.get(name)) for name in TIMESTAMPS}
    return {
        "id": info.batch_id,
        "object": "batch",
        "endpoint": info.endpoint,
        "errors": None,
        "input_file_id": info.input_file_id or info.input_file,
        "completion_window": info.completion_window or "24h",
        "status": info.status.value,
        "output_file_id": info.output_file_id or None,
        "error_file_id": info.error_file_id or None,
        "created_at": int(info.created_at),
        "expires_at": int(info.expires_at),
        **stamps,
        "request_counts": {
            "total": info.total,
            "completed": info.completed,
            "failed": info.failed,
        },
        "metadata": info.metadata,
    }


def _int(value: float | None) -> int | None:
    return None if value is None else int(value)


def visible(info: BatchInfo, caller: Caller) -> bool:
    if caller.key_id is None:
        return True  # no authentication: one local user sees everything
    if info.key_id:
        return info.key_id == caller.key_id
    return bool(info.agent_did) and info.agent_did == caller.agent_did


async def find(store: BatchStore, caller: Caller, batch_id: str) -> BatchInfo:
    info = await store.get(batch_id) if len(batch_id) <= 128 else None
    if info is None or not visible(info, caller):
        raise UnknownJob(f"no batch {batch_id[:80]!r}", details={"param": "batch_id"})
    return info


async def create(
    body: BatchBody,
    caller: Caller,
    files: FileStore,
    store: BatchStore,
    kinds: dict[str, LineKind],
    settings: GatewaySettings,
) -> Response:
    if body.endpoint not in kinds:
        raise InvalidRequest(
            f"endpoint must be one of {', '.join(kinds)}", details={"param": "endpoint"}
        )
    window = COMPLETION_WINDOWS.get(body.completion_window)
    if window is None:
        raise InvalidRequest(
            "completion_window must be 24h", details={"param": "completion_window"}
        )
    stored = await files.get(body.input_file_id, owner=owner(caller) or "-")
    if stored.purpose != "batch":
        raise InvalidRequest(
            f"file {stored.id} has purpose {stored.purpose!r}, not 'batch'",
            details={"param": "input_file_id"},
        )
    if stored.lines > settings.batch_max_lines:
        raise InvalidRequest(
            f"the file has {stored.lines} lines, more than the limit of "
            f"{settings.batch_max_lines} (L04_BATCH_MAX_LINES)",
            details={"param": "input_file_id"},
        )
    count = 0
    number = 0
    async for text in files.lines(stored.id):
        number += 1
        if text.strip():
            _check_line(number, text, body.endpoint)
            count += 1
    if count == 0:
        raise InvalidRequest("the file has no lines", details={"param": "input_file_id"})
    batch_id = f"batch_{uuid.uuid4().hex}"
    await store.create(
        batch_id,
        input_file="",
        output_dir="",
        model=None,
        priority="low",
        agent_did=caller.agent_did,
        completion_window_s=window,
        notify=batch_id,  # batch.completed, .failed, .expired, .cancelled: webhooks
        key_id=caller.key_id,
        http={
            "input_file_id": stored.id,
            "endpoint": body.endpoint,
            "completion_window": body.completion_window,
            "metadata": json.dumps(body.metadata) if body.metadata is not None else "",
            "total": str(count),
        },
        fleet=True,  # in the drivers' set in the same step: no batch that no driver sees
    )
    return JSONResponse(batch_object(await find(store, caller, batch_id)))


def _check_line(number: int, text: str, endpoint: str) -> None:
    """A line that makes the file no batch for ``endpoint``: 400 naming it."""
    try:
        line = json.loads(text)
    except (json.JSONDecodeError, RecursionError):
        line = None
    if not isinstance(line, dict):
        raise InvalidRequest(
            f"line {number} is not a JSON object: the file must be JSONL",
            details={"param": "input_file_id"},
        )
    if line.get("method") != "POST":
        raise InvalidRequest(
            f"line {number}: method must be POST", details={"param": "input_file_id"}
        )
    if line.get("url") != endpoint:
        raise InvalidRequest(
            f"line {number}: url {str(line.get('url'))[:80]!r} is not the batch's endpoint "
            f"{endpoint}",
            details={"param": "input_file_id"},
        )


async def cancel(store: BatchStore, caller: Caller, batch_id: str) -> Response:
    """Queued lines never reach a provider; the driver finishes the ones running and ends the
    batch ``cancelled`` with what was answered. An ended batch is returned unchanged."""
    await find(store, caller, batch_id)
    await store.move(
        batch_id, BatchStatus.CANCELLING, BatchStatus.VALIDATING, BatchStatus.IN_PROGRESS
    )
    return JSONResponse(batch_object(await find(store, caller, batch_id)))


async def listing(request: Request, store: BatchStore, caller: Caller) -> Response:
    limit_text = request.query_params.get("limit", "20")
    if not limit_text.isdigit() or not 1 <= int(limit_text) <= MAX_LIST:
        raise InvalidRequest(f"limit must be 1-{MAX_LIST}", details={"param": "limit"})
    limit = int(limit_text)
    found = [info for info in await store.recent(10_000) if visible(info, caller)]
    after = request.query_params.get("after")
    if after:
        ids = [info.batch_id for info in found]
        found = found[ids.index(after) + 1 :] if after in ids else []
    page = found[:limit]
    return JSONResponse(
        {
            "object": "list",
            "data": [batch_object(info) for info in page],
            "first_id": page[0].batch_id if page else None,
            "last_id": page[-1].batch_id if page else None,
            "has_more": len(found) > limit,
        }
    )
