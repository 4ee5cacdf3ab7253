"""OpenAI's Files API, for the Batch API: ``/v1/files`` over the Redis file store.

An upload (multipart/form-data, ``file`` and ``purpose=batch``) is spooled by the multipart
parser (to a temporary file past a MiB) and copied to Redis a MiB at a time: it is never held
whole in memory, and it is refused (413) as soon as it passes the per-file limit or the store's
cap. A file belongs to the key that uploaded it: another key gets 404, as for a file that
does not exist.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Message, Receive

from gateway_client.batch.files import (
    CHUNK_BYTES,
    FileStore,
    FileStoreFull,
    FileTooLarge,
    StoredFile,
)
from gateway_core.errors import InvalidRequest
from gateway_http.body import BodyRefused
from gateway_http.door import Caller
from gateway_http.errors import request_error

PURPOSES = ("batch",)
#: What a multipart envelope may add to the file's own bytes (boundaries, headers, purpose).
ENVELOPE_BYTES = 64 * 1024
MAX_LIST = 10_000


def owner(caller: Caller) -> str | None:
    """The files' owner: the caller's key (None without authentication: the one local owner)."""
    return caller.key_id


async def upload(request: Request, caller: Caller, files: FileStore) -> Response:
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > files.max_file + ENVELOPE_BYTES:
        raise BodyRefused(
            request_error(
                413, f"the file is larger than the limit of {files.max_file} bytes", param="file"
            )
        )
    media = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media != "multipart/form-data":
        raise BodyRefused(
            request_error(415, f"the body must be multipart/form-data, not {media[:60]!r}")
        )
    limited = Request(request.scope, _limited(request.receive, files.max_file))
    try:
        async with limited.form(max_files=1, max_fields=8) as form:
            purpose = form.get("purpose")
            if purpose not in PURPOSES:
                raise InvalidRequest(
                    f"purpose must be one of {', '.join(PURPOSES)}", details={"param": "purpose"}
                )
            part = form.get("file")
            if not isinstance(part, UploadFile):
                raise InvalidRequest("no file part in the form", details={"param": "file"})
            try:
                stored = await files.put(
                    _read(part),
                    owner=owner(caller),
                    filename=(part.filename or "upload.jsonl")[:255],
                    purpose=str(purpose),
                )
            except (FileTooLarge, FileStoreFull) as full:  # 413: the SDKs' "too large"
                raise BodyRefused(request_error(413, full.message, param="file")) from None
    except HTTPException as exc:  # a malformed multipart body, too many parts
        raise BodyRefused(request_error(400, f"malformed multipart body: {exc.detail}")) from None
    return JSONResponse(stored.as_object())


def _limited(receive: Receive, max_file: int) -> Receive:
    """``receive``, cut with a 413 once the body passes ``max_file`` and the envelope: a body
    without Content-Length (chunked) would otherwise be spooled whole to disk before any check."""
    seen = 0

    async def limited() -> Message:
        nonlocal seen
        message = await receive()
        seen += len(message.get("body", b""))
        if seen > max_file + ENVELOPE_BYTES:
            raise BodyRefused(
                request_error(
                    413, f"the file is larger than the limit of {max_file} bytes", param="file"
                )
            )
        return message

    return limited


async def _read(part: UploadFile) -> AsyncIterator[bytes]:
    while chunk := await part.read(CHUNK_BYTES):
        yield chunk


async def retrieve(caller: Caller, files: FileStore, file_id: str) -> Response:
    return JSONResponse((await files.get(file_id, owner=owner(caller) or "-")).as_object())


async def content(caller: Caller, files: FileStore, file_id: str) -> Response:
    stored = await files.get(file_id, owner=owner(caller) or "-")
    return StreamingResponse(
        files.chunks(stored.id),
        media_type="application/octet-stream",
        headers={"content-length": str(stored.bytes)},
    )


async def delete(caller: Caller, files: FileStore, file_id: str) -> Response:
    await files.delete(file_id, owner=owner(caller) or "-")
    return JSONResponse({"id": file_id, "object": "file", "deleted": True})


async def listing(request: Request, caller: Caller, files: FileStore) -> Response:
    found: list[StoredFile] = await files.listing(owner(caller), MAX_LIST)
    purpose = request.query_params.get("purpose")
    if purpose:
        found = [f for f in found if f.purpose == purpose]
    after = request.query_params.get("after")
    if after:
        ids = [f.id for f in found]
        found = found[ids.index(after) + 1 :] if after in ids else []
    limit = _limit(request.query_params.get("limit"), 10_000)
    page = found[:limit]
    data: list[dict[str, Any]] = [f.as_object() for f in page]
    return JSONResponse(
        {
            "object": "list",
            "data": data,
            "first_id": page[0].id if page else None,
            "last_id": page[-1].id if page else None,
            "has_more": len(found) > limit,
        }
    )


def _limit(text: str | None, default: int) -> int:
    if text is None:
        return default
    if not text.isdigit() or not 1 <= int(text) <= MAX_LIST:
        raise InvalidRequest(f"limit must be 1-{MAX_LIST}", details={"param": "limit"})
    return int(text)
