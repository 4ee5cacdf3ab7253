"""Queue topology: one queue per provider, three priorities in each.

On Redis, kombu keeps one list per priority step and pops the lowest step first, so HIGH is 0.
On AMQP brokers (RabbitMQ) priorities are native and larger is more urgent, so the numbers flip.
"""

from __future__ import annotations

from gateway_core.redis_url import broker_kind
from gateway_core.request import Priority

# The providers the fleet has adapters for: one queue each.
PROVIDERS = ("openai", "anthropic", "ollama", "claude_code", "mock")

QUEUE_PREFIX = "l04"
INFER_TASK = "l04.infer"
# The request-dict key the AsyncioPool gives a delivery that has no delivery tag of kombu's in
# its properties (AMQP): the task body finds the job's outcome under it.
DELIVERY_KEY = "l04_delivery"

# kombu's Redis transport: one list per step, named "<queue><SEP><step>" (step 0: "<queue>").
REDIS_PRIORITY_STEPS = (0, 5, 9)
REDIS_PRIORITY_SEP = "\x06\x16"
REDIS_UNACKED_INDEX = "unacked_index"
REDIS_UNACKED = "unacked"
#: The most tokens a queue list's bell keeps (``gateway_core/lua/bell.lua`` trims to it).
QUEUE_BELL_CAP = 64

_REDIS_PRIORITY = {Priority.HIGH: 0, Priority.NORMAL: 5, Priority.LOW: 9}
_AMQP_PRIORITY = {Priority.HIGH: 9, Priority.NORMAL: 5, Priority.LOW: 0}


def queue_name(provider: str) -> str:
    return f"{QUEUE_PREFIX}.{provider}"


def all_queue_names() -> list[str]:
    return [queue_name(p) for p in PROVIDERS]


def is_redis_broker(broker_url: str) -> bool:
    return broker_kind(broker_url) in ("redis", "redis+socket")


def priority_value(priority: Priority, broker_url: str) -> int:
    table = _REDIS_PRIORITY if is_redis_broker(broker_url) else _AMQP_PRIORITY
    return table[priority]


def redis_priority_lists(queue: str) -> list[str]:
    """The Redis lists that hold ``queue``'s messages, most urgent first."""
    return [
        queue if step == 0 else f"{queue}{REDIS_PRIORITY_SEP}{step}"
        for step in REDIS_PRIORITY_STEPS
    ]


def all_redis_priority_lists() -> list[str]:
    """Every Redis list a job's message can wait on: each provider's queue, each priority."""
    return [name for queue in all_queue_names() for name in redis_priority_lists(queue)]
