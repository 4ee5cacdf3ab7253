"""The Batch API's file store, in Redis, so that every server reads what any server stored.

A file is a hash (its object: bytes, lines, filename, purpose, owner, times) and a list of
chunks of up to a MiB, both expiring with the file. Every file's bytes count against one cap
(``L04_FILES_MAX_BYTES``, Lua ``files_reserve``): an upload that would pass it is refused
(:class:`FileStoreFull`) chunk by chunk, before the chunk is written, so a full store is a clear
answer and never a Redis out of memory. A file's owner is the virtual key that stored it (``-``
without one); another owner does not see it.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Any, BinaryIO

from redis.asyncio import Redis

from gateway_core import keys
from gateway_core.errors import InvalidRequest, UnknownJob
from gateway_core.lua_scripts import register

CHUNK_BYTES = 1 << 20
NO_OWNER = "-"
USAGE_KEYS = [keys.FILES_USAGE, keys.FILES_EXPIRIES, keys.FILES_TOTAL]


class FileTooLarge(InvalidRequest):
    """A file over the per-file limit (``L04_FILE_MAX_BYTES``): HTTP 413."""


class FileStoreFull(InvalidRequest):
    """The file store's cap (``L04_FILES_MAX_BYTES``) is reached: HTTP 413."""


class FileNotFound(UnknownJob):
    """No such file for this owner (or it expired): HTTP 404."""


@dataclass(frozen=True, slots=True)
class StoredFile:
    id: str
    owner: str
    filename: str
    purpose: str
    bytes: int
    lines: int
    created_at: int
    expires_at: int

    def as_object(self) -> dict[str, Any]:
        """OpenAI's File object."""
        return {
            "id": self.id,
            "object": "file",
            "bytes": self.bytes,
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "status_details": None,
        }


def new_file_id() -> str:
    return f"file-{uuid.uuid4().hex[:24]}"


class FileStore:
    def __init__(
        self, redis: Redis, *, max_total: int, max_file: int, ttl_s: float = 30 * 86_400
    ) -> None:
        self.redis = redis
        self.max_total = max_total
        self.max_file = max_file
        self.ttl_s = ttl_s
        self._reserve = register(redis, "gateway_client", "files_reserve")
        self._release = register(redis, "gateway_client", "files_release")

    async def put(
        self,
        source: BinaryIO | Iterable[bytes] | AsyncIterable[bytes],
        *,
        owner: str | None,
        filename: str,
        purpose: str,
        file_id: str | None = None,
        force: bool = False,
    ) -> StoredFile:
        """Store ``source`` (a binary file read a MiB at a time, or chunks of bytes).

        ``force``: count the bytes past the cap (a batch's output files, which must not be lost
        once their lines were answered). Storing under an existing ``file_id`` replaces it.
        """
        file_id = file_id or new_file_id()
        owner = owner or NO_OWNER
        now = int(time.time())
        expires_at = now + int(self.ttl_s)
        await self.delete(file_id, owner=None)
        chunks_key = keys.file_chunks(file_id)
        size = lines = 0
        last = b"\n"
        try:
            async for chunk in _chunks(source):
                if not chunk:
                    continue
                size += len(chunk)
                if size > self.max_file and not force:
                    raise FileTooLarge(
                        f"the file is larger than the limit of {self.max_file} bytes "
                        "(L04_FILE_MAX_BYTES)",
                        details={"param": "file"},
                    )
                counted = await self._reserve(
                    keys=USAGE_KEYS,
                    args=[file_id, len(chunk), self.max_total, now, expires_at, int(force)],
                )
                if not int(counted):
                    raise FileStoreFull(
                        "the file store is full (L04_FILES_MAX_BYTES): delete files or wait "
                        "for some to expire",
                        details={"param": "file"},
                    )
                await self.redis.rpush(chunks_key, chunk)
                await self.redis.expireat(chunks_key, expires_at)
                lines += chunk.count(b"\n")
                last = chunk[-1:]
        except BaseException:
            await self._forget(file_id)
            raise
        if size and last != b"\n":
            lines += 1
        stored = StoredFile(file_id, owner, filename, purpose, size, lines, now, expires_at)
        record = keys.file(file_id)
        await self.redis.hset(
            record,
            mapping={
                "owner": owner,
                "filename": filename,
                "purpose": purpose,
                "bytes": size,
                "lines": lines,
                "created_at": now,
                "expires_at": expires_at,
            },
        )
        await self.redis.expireat(record, expires_at)
        index = keys.files_of(owner)
        await self.redis.zadd(index, {file_id: now})
        await self.redis.zremrangebyscore(index, "-inf", now - self.ttl_s)
        await self.redis.expire(index, int(self.ttl_s))
        return stored

    async def get(self, file_id: str, *, owner: str | None) -> StoredFile:
        """The file, if ``owner`` stored it (``owner`` None: whoever did)."""
        raw: Any = await self.redis.hgetall(keys.file(file_id))
        f = {_s(k): _s(v) for k, v in raw.items()}
        if not f or (owner is not None and f["owner"] != owner):
            raise FileNotFound(f"no file {file_id[:80]!r}", details={"param": "file_id"})
        return StoredFile(
            id=file_id,
            owner=f["owner"],
            filename=f["filename"],
            purpose=f["purpose"],
            bytes=int(f["bytes"]),
            lines=int(f["lines"]),
            created_at=int(f["created_at"]),
            expires_at=int(f["expires_at"]),
        )

    async def chunks(self, file_id: str) -> AsyncIterator[bytes]:
        """The file's content, a chunk at a time (one chunk in memory at a time)."""
        count = await self.redis.llen(keys.file_chunks(file_id))
        for index in range(count):
            chunk: Any = await self.redis.lindex(keys.file_chunks(file_id), index)
            if chunk is None:
                raise FileNotFound(f"file {file_id!r} expired while it was read")
            yield chunk

    async def lines(self, file_id: str) -> AsyncIterator[str]:
        """The file's lines, decoded as UTF-8 (bad bytes replaced), without their newline."""
        rest = b""
        async for chunk in self.chunks(file_id):
            *whole, rest = (rest + chunk).split(b"\n")
            for line in whole:
                yield line.decode("utf-8", errors="replace")
        if rest:
            yield rest.decode("utf-8", errors="replace")

    async def listing(self, owner: str | None, limit: int = 10_000) -> list[StoredFile]:
        ids: Any = await self.redis.zrevrange(keys.files_of(owner or NO_OWNER), 0, limit - 1)
        found = []
        for raw in ids:
            try:
                found.append(await self.get(_s(raw), owner=owner or NO_OWNER))
            except FileNotFound:
                await self.redis.zrem(keys.files_of(owner or NO_OWNER), raw)
        return found

    async def delete(self, file_id: str, *, owner: str | None) -> bool:
        """Delete the file (``owner`` None: whoever stored it); False if there was none."""
        if owner is not None:
            await self.get(file_id, owner=owner)  # FileNotFound for another owner
        stored: Any = await self.redis.hget(keys.file(file_id), "owner")
        await self._forget(file_id)
        if stored is not None:
            await self.redis.zrem(keys.files_of(_s(stored)), file_id)
        return stored is not None

    async def used(self) -> int:
        raw: Any = await self.redis.get(keys.FILES_TOTAL)
        return int(raw or 0)

    async def _forget(self, file_id: str) -> None:
        await self.redis.delete(keys.file(file_id), keys.file_chunks(file_id))
        await self._release(keys=USAGE_KEYS, args=[file_id])


async def _chunks(
    source: BinaryIO | Iterable[bytes] | AsyncIterable[bytes],
) -> AsyncIterator[bytes]:
    if isinstance(source, AsyncIterable):
        async for chunk in source:
            yield chunk
    elif hasattr(source, "read"):
        for chunk in iter(lambda: source.read(CHUNK_BYTES), b""):
            yield chunk
    else:
        for chunk in source:
            yield chunk


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
