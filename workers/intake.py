"""How a worker takes messages off a Redis broker: many at once, never held only in memory.

kombu's Redis transport pops one message per ``BRPOP`` and then records it as unacknowledged
with a second round trip (``MULTI ZADD unacked_index / HSET unacked``). Between the two the
message exists only in the worker's memory: a worker killed, or a connection lost, right then
loses it for good (celery/celery#7950). And one message per round trip, on Celery's consumer
thread, caps what one worker process takes in.

Here one Lua script (``workers/lua/intake_take.lua``) moves up to the worker's free slots of
messages, highest priority first, from the queue lists into kombu's ``unacked`` hash and
``unacked_index``, exactly as kombu's ``QoS.append`` would have recorded them: a message is on a
list or in the unacknowledged set at every moment, and kombu's own restore, the heartbeat, a
stock kombu worker beside ours, ``celery inspect`` and Flower all see the layout they know.

A script cannot block, so an idle worker waits with ``BRPOP`` on the lists' *bells*
(:func:`gateway_core.keys.queue_bell`): every script that pushes a message rings its list's bell
(``gateway_core/lua/bell.lua``), and so does the transport when it restores a message. A bell
token is only a wake-up: the message stays on its list until a take moves it. A message pushed
by someone who rings no bell (a stock Celery producer, a stock worker's restore) is taken at the
latest when the wait times out (kombu's ``brpop_timeout``, 1 s).

This module holds what does not depend on kombu: the script's arguments and its reply.
:mod:`workers.broker_transport` wires it into kombu's channel.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from gateway_core import keys
from gateway_core.lua_scripts import script_source
from gateway_core.queues import REDIS_UNACKED, REDIS_UNACKED_INDEX

#: The most messages one take moves (fewer when the worker has fewer free slots). Bounds how
#: long one script holds Redis (about 3 µs a message here) and how much one worker takes of a
#: backlog that other workers could share.
TAKE_MAX = 100

TAKE_SOURCE = script_source("workers", "intake_take")
TAKE_SHA = hashlib.sha1(TAKE_SOURCE.encode()).hexdigest()  # noqa: S324 - Redis names scripts so


@dataclass(frozen=True, slots=True)
class Taken:
    """A message moved into the unacknowledged set, and the queue it came from."""

    queue: str
    raw: bytes


@dataclass(frozen=True, slots=True)
class TakeReply:
    taken: list[Taken]
    poison: list[bytes]  # values moved to ``keys.INTAKE_POISON``, to be set aside


def take_args(lists: list[tuple[str, str]], limit: int, now: float) -> list[Any]:
    """``EVALSHA`` arguments after the script's sha: numkeys, KEYS, ARGV.

    ``lists`` are (list key, queue name) pairs, highest priority first.
    """
    list_keys = [key for key, _ in lists]
    queues = [queue for _, queue in lists]
    script_keys = [REDIS_UNACKED, REDIS_UNACKED_INDEX, keys.INTAKE_POISON, *list_keys]
    return [len(script_keys), *script_keys, limit, repr(now), *queues]


def parse_take(reply: Any) -> TakeReply:
    taken: list[Taken] = []
    poison: list[bytes] = []
    items = list(reply or [])
    for queue, raw in zip(items[::2], items[1::2], strict=True):
        name = queue.decode() if isinstance(queue, bytes) else str(queue)
        value = raw if isinstance(raw, bytes) else str(raw).encode()
        if name:
            taken.append(Taken(name, value))
        else:
            poison.append(value)
    return TakeReply(taken, poison)


def bells(lists: list[str]) -> list[str]:
    return [keys.queue_bell(name) for name in lists]
