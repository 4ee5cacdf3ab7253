"""A batch's state in Redis: status, counts, timestamps, and each line's answer, written once.

Keys share the batch's hash tag: ``l04:batch:{id}`` (the record), ``:done`` (line index ->
output line, set once: the first answer wins, so a resumed or repeated run cannot write a line
twice), ``:driver`` (the submitting process's heartbeat). The index ``l04:batches`` lists batches
by creation time. Everything expires ``BATCH_TTL_S`` after the batch was last touched.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from redis.asyncio import Redis

from gateway_core import keys
from gateway_core.lua_scripts import register

BATCH_TTL_S = 7 * 86_400
DRIVER_TTL_S = 10


class BatchStatus(StrEnum):
    VALIDATING = "validating"
    IN_PROGRESS = "in_progress"
    FINALIZING = "finalizing"
    COMPLETED = "completed"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"
    EXPIRED = "expired"
    FAILED = "failed"


ENDED = frozenset({BatchStatus.COMPLETED, BatchStatus.CANCELLED, BatchStatus.EXPIRED})


@dataclass(frozen=True, slots=True)
class BatchInfo:
    batch_id: str
    status: BatchStatus
    total: int
    completed: int
    failed: int
    created_at: float
    expires_at: float
    input_file: str
    output_dir: str
    model: str
    priority: str
    agent_did: str
    timestamps: dict[str, float]
    # An HTTP batch's (POST /v1/batches): the key that made it, its input file in the file
    # store, its endpoint and metadata, and its output and error files once it has them.
    key_id: str = ""
    input_file_id: str = ""
    endpoint: str = "/v1/chat/completions"
    completion_window: str = ""
    metadata: dict[str, str] | None = None
    output_file_id: str = ""
    error_file_id: str = ""

    @property
    def done(self) -> int:
        return self.completed + self.failed

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.batch_id,
            "status": self.status.value,
            "request_counts": {
                "total": self.total,
                "completed": self.completed,
                "failed": self.failed,
            },
            "created_at": self.created_at,
            "expires_at": self.expires_at,
            "input_file": self.input_file,
            "output_dir": self.output_dir,
            "model": self.model or None,
            "priority": self.priority,
            **({"input_file_id": self.input_file_id} if self.input_file_id else {}),
            **({"output_file_id": self.output_file_id} if self.output_file_id else {}),
            **({"error_file_id": self.error_file_id} if self.error_file_id else {}),
            **self.timestamps,
        }


class BatchStore:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._record = register(redis, "gateway_client", "batch_record")
        self._move = register(redis, "gateway_client", "batch_move")
        self._create = register(redis, "gateway_client", "batch_create")

    async def create(
        self,
        batch_id: str,
        *,
        input_file: str,
        output_dir: str,
        model: str | None,
        priority: str,
        agent_did: str,
        completion_window_s: float,
        notify: str | None = None,
        key_id: str | None = None,
        http: dict[str, str] | None = None,
        fleet: bool = False,
    ) -> bool:
        """Create the batch record; False if a batch with this id exists (then resume it).

        ``notify``: the batch's id as webhooks name it (``batch_...``): its move to completed,
        failed, expired or cancelled then adds ``batch.<status>`` to the webhook outbox in the
        same script (``lua/batch_move.lua``), for the global webhook and ``key_id``'s own.
        ``fleet``: the fleet's servers drive it (an HTTP batch): it is in their set from the
        moment it exists (``lua/batch_create.lua`` makes it whole in one step).
        """
        now = time.time()
        fields: dict[str, Any] = {
            "status": BatchStatus.VALIDATING.value,
            "created_at": repr(now),
            "expires_at": repr(now + completion_window_s),
            "input_file": input_file,
            "output_dir": output_dir,
            "model": model or "",
            "priority": priority,
            "agent_did": agent_did,
            "total": 0,
            "completed": 0,
            "failed": 0,
            **({"notify": f"batch:{notify}"} if notify else {}),
            **({"key_id": key_id} if key_id else {}),
            **(http or {}),
        }
        pairs = [item for pair in fields.items() for item in pair]
        made = await self._create(
            keys=[keys.batch(batch_id), keys.BATCHES, keys.FLEET_BATCHES],
            args=[batch_id, repr(now), BATCH_TTL_S, int(fleet), *pairs],
        )
        return int(made) == 1

    async def get(self, batch_id: str) -> BatchInfo | None:
        raw: Any = await self.redis.hgetall(keys.batch(batch_id))
        if not raw:
            return None
        f = {_s(k): _s(v) for k, v in raw.items()}
        stamps = {k: float(v) for k, v in f.items() if k.endswith("_at") and k not in _FIXED}
        return BatchInfo(
            batch_id=batch_id,
            status=BatchStatus(f["status"]),
            total=int(f.get("total", 0)),
            completed=int(f.get("completed", 0)),
            failed=int(f.get("failed", 0)),
            created_at=float(f.get("created_at", 0)),
            expires_at=float(f.get("expires_at", 0)),
            input_file=f.get("input_file", ""),
            output_dir=f.get("output_dir", ""),
            model=f.get("model", ""),
            priority=f.get("priority", "low"),
            agent_did=f.get("agent_did", ""),
            timestamps=stamps,
            key_id=f.get("key_id", ""),
            input_file_id=f.get("input_file_id", ""),
            endpoint=f.get("endpoint", "/v1/chat/completions"),
            completion_window=f.get("completion_window", ""),
            metadata=json.loads(f["metadata"]) if f.get("metadata") else None,
            output_file_id=f.get("output_file_id", ""),
            error_file_id=f.get("error_file_id", ""),
        )

    async def recent(self, limit: int = 50) -> list[BatchInfo]:
        ids: Any = await self.redis.zrevrange(keys.BATCHES, 0, limit - 1)
        found = [await self.get(_s(i)) for i in ids]
        return [info for info in found if info is not None]

    async def set_files(
        self, batch_id: str, output_file_id: str, error_file_id: str
    ) -> tuple[str, str]:
        """Point the batch at its output and error files; the ids it pointed at before."""
        record = keys.batch(batch_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hmget(record, "output_file_id", "error_file_id")
            pipe.hset(
                record, mapping={"output_file_id": output_file_id, "error_file_id": error_file_id}
            )
            before, _ = await pipe.execute()
        return (_s(before[0] or b""), _s(before[1] or b""))

    async def set_total(self, batch_id: str, total: int) -> None:
        await self.redis.hset(keys.batch(batch_id), "total", total)

    async def move(self, batch_id: str, to: BatchStatus, *sources: BatchStatus) -> bool:
        """Change the status if it is one of ``sources``; stamps ``<status>_at``."""
        result = await self._move(
            keys=[keys.batch(batch_id)],
            args=[
                ",".join(s.value for s in sources),
                to.value,
                f"{to.value}_at",
                repr(time.time()),
            ],
        )
        return int(result) == 1

    async def record(self, batch_id: str, index: int, line: dict[str, Any], ok: bool) -> bool:
        """Store line ``index``'s answer unless it has one (or the batch is gone); True if this
        call stored it."""
        result = await self._record(
            keys=[keys.batch(batch_id), keys.batch_done(batch_id)],
            args=[
                index,
                json.dumps(line, separators=(",", ":")),
                "completed" if ok else "failed",
                BATCH_TTL_S,
            ],
        )
        return int(result) == 1

    async def answered(self, batch_id: str) -> set[int]:
        raw: Any = await self.redis.hkeys(keys.batch_done(batch_id))
        return {int(_s(k)) for k in raw}

    async def answers(self, batch_id: str) -> list[tuple[int, dict[str, Any]]]:
        found: list[tuple[int, dict[str, Any]]] = []
        async for index, line in self.redis.hscan_iter(keys.batch_done(batch_id), count=1000):
            found.append((int(_s(index)), json.loads(line)))
        return sorted(found, key=lambda item: item[0])

    async def beat(self, batch_id: str, driver: str) -> None:
        await self.redis.set(keys.batch_driver(batch_id), driver, ex=DRIVER_TTL_S)

    async def driver(self, batch_id: str) -> str | None:
        raw: Any = await self.redis.get(keys.batch_driver(batch_id))
        return None if raw is None else _s(raw)


_FIXED = {"created_at", "expires_at"}


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
