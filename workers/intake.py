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
    """A message moved into the unacknowledged set: its queue, its delivery tag (the field of
    ``unacked`` it is under) and the value."""

    queue: str
    tag: bytes  # as Redis stored it: the field to remove if the worker refuses the value
    raw: bytes


@dataclass(frozen=True, slots=True)
class TakeReply:
    taken: list[Taken]
    poison: list[bytes]  # values moved to ``keys.INTAKE_POISON``, to be set aside


def take_args(
    lists: list[tuple[str, str]],
    limit: int,
    now: float,
    unacked: str = REDIS_UNACKED,
    unacked_index: str = REDIS_UNACKED_INDEX,
) -> list[Any]:
    """``EVALSHA`` arguments after the script's sha: numkeys, KEYS, ARGV.

    ``lists`` are (list key, queue name) pairs, highest priority first; ``unacked`` and
    ``unacked_index`` the channel's names for kombu's two keys.
    """
    list_keys = [key for key, _ in lists]
    queues = [queue for _, queue in lists]
    script_keys = [unacked, unacked_index, keys.INTAKE_POISON, *list_keys]
    return [len(script_keys), *script_keys, limit, repr(now), *queues]


def parse_take(reply: Any) -> TakeReply:
    taken: list[Taken] = []
    poison: list[bytes] = []
    items = list(reply or [])
    for queue, tag, raw in zip(items[::3], items[1::3], items[2::3], strict=True):
        name = queue.decode() if isinstance(queue, bytes) else str(queue)
        value = raw if isinstance(raw, bytes) else str(raw).encode()
        if name:
            field = tag if isinstance(tag, bytes) else str(tag).encode()
            taken.append(Taken(name, field, value))
        else:
            poison.append(value)
    return TakeReply(taken, poison)


def bells(lists: list[str]) -> list[str]:
    return [keys.queue_bell(name) for name in lists]
