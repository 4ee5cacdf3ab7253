"""Circuit breakers as everyone reads them: their names, their states, one read for many.

Workers change a breaker's state with the scripts in :mod:`workers.control.circuit_breaker`;
the router, ``health_check()`` and the metrics only read it, through :func:`read_states`.
A provider has a breaker (``"openai"``) and so has each deployment of a model on it
(``"openai:gpt-4o"``, see :func:`deployment`).
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import IntEnum
from typing import Any

from gateway_core.keys import breaker as breaker_key


class BreakerState(IntEnum):
    """Values as the seed's ``l04_circuit_breaker_state`` gauge has them."""

    CLOSED = 0
    HALF_OPEN = 1
    OPEN = 2

    @property
    def label(self) -> str:
        """``closed``, ``half_open`` or ``open``, as ``health_check()`` reports it."""
        return self.name.lower()


def deployment(provider: str, model_id: str) -> str:
    """The breaker name of one model on one provider."""
    return f"{provider}:{model_id}"


def catalog_breakers(providers: Iterable[str], deployments: Iterable[tuple[str, str]]) -> list[str]:
    """Every breaker a catalog has: its providers' (sorted), then each deployment's."""
    return sorted(providers) + [deployment(p, m) for p, m in deployments]


def decode(raw: Any) -> BreakerState:
    """A breaker hash's ``state`` field (bytes, str or None when it has none: closed)."""
    try:
        return BreakerState(int(raw or 0))
    except (TypeError, ValueError):
        return BreakerState.CLOSED


async def read_states(redis: Any, names: list[str]) -> dict[str, BreakerState]:
    """The state of each breaker in ``names``, in one round trip (an asyncio client)."""
    async with redis.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.hget(breaker_key(name), "state")
        raw = await pipe.execute()
    return {name: decode(value) for name, value in zip(names, raw, strict=True)}


def read_states_sync(redis: Any, names: list[str]) -> dict[str, BreakerState]:
    """The same with a blocking client (the metrics collector runs in the scrape's thread)."""
    with redis.pipeline(transaction=False) as pipe:
        for name in names:
            pipe.hget(breaker_key(name), "state")
        raw = pipe.execute()
    return {name: decode(value) for name, value in zip(names, raw, strict=True)}
