"""The dead-letter list ``l04:dlq``: the messages workers could not use, kept, never dropped.

One record format (:func:`record`), one writer (:func:`push`, given a pipeline of either client),
one reader (:func:`read`) and one remover (:func:`remove`): workers write through
:mod:`workers.dead_letters`, ``l04 dlq`` reads and replays.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

from gateway_core import keys

MAX_DEAD_LETTERS = 10_000
DEAD_LETTER_TTL_S = 7 * 24 * 3600
#: The most of a raw value a record keeps (a queue may hold a value of any size).
MAX_RAW_CHARS = 65_536


def record(reason: str, raw: Any, *, code: str = "E4503", **known: Any) -> str:
    """The record kept for one message: its code, why, when, the raw value (capped) and what is
    known. No caller gets the code: no job of record could be failed with it."""
    if isinstance(raw, bytes):
        size = len(raw)
        text = raw[: MAX_RAW_CHARS * 4].decode("utf-8", "replace")
    elif isinstance(raw, str):
        size, text = len(raw), raw
    else:
        try:
            text = json.dumps(raw)
        except (TypeError, ValueError):
            text = repr(raw)
        size = len(text)
    fields = {
        "code": code,
        "reason": reason,
        **{k: v for k, v in known.items() if v is not None},
        "envelope": text[:MAX_RAW_CHARS],
        "size": size,
        "at": time.time(),
    }
    return json.dumps(fields, default=str)


def push(pipe: Any, entry: str) -> None:
    """Queue the commands that add ``entry`` (newest first, bounded, expiring) on ``pipe``."""
    pipe.lpush(keys.DEAD_LETTERS, entry)
    pipe.ltrim(keys.DEAD_LETTERS, 0, MAX_DEAD_LETTERS - 1)
    pipe.expire(keys.DEAD_LETTERS, DEAD_LETTER_TTL_S)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    raw: bytes  # the stored record, as :func:`remove` needs it
    fields: dict[str, Any]  # the record read back; a record that is no JSON says so


async def read(redis: Any, limit: int | None = None) -> list[DeadLetter]:
    """The dead letters, newest first (all of them, or the first ``limit``)."""
    stored: list[Any] = await redis.lrange(keys.DEAD_LETTERS, 0, -1 if limit is None else limit - 1)
    found = []
    for item in stored:
        try:
            fields = json.loads(item)
        except ValueError:
            fields = {"reason": "unreadable record", "envelope": str(item)[:200]}
        found.append(DeadLetter(item, fields if isinstance(fields, dict) else {"envelope": fields}))
    return found


async def remove(redis: Any, letter: DeadLetter) -> None:
    await redis.lrem(keys.DEAD_LETTERS, 1, letter.raw)
