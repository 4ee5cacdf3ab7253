"""Redis URLs as the fleet takes them: ``redis://``, ``rediss://``, ``unix://``, or Sentinel.

The Sentinel form is Celery's (kombu's) own, so one value serves the broker and every client::

    sentinel://:master-password@host1:26379/0;sentinel://host2:26379;sentinel://host3:26379

Each part names one Sentinel. As kombu's ``SentinelChannel`` does, the master's username,
password and database are taken from the first part; the master's name is not in the URL
(``L04_REDIS_SENTINEL_MASTER``, Celery's ``master_name``), nor is a Sentinel's own password
(``L04_REDIS_SENTINEL_PASSWORD``, kombu's ``sentinel_kwargs``).

A malformed URL is an :class:`InvalidSetting` (E4004) naming the variable. Its text never
repeats the URL, which may carry a password.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from redis.connection import parse_url

from gateway_core.errors import InvalidSetting

SENTINEL_SCHEME = "sentinel"
DEFAULT_SENTINEL_PORT = 26379


@dataclass(frozen=True, slots=True)
class SentinelOptions:
    """What a Sentinel URL leaves out: the master's name and the Sentinels' own password."""

    master: str | None = None
    password: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class SentinelTarget:
    """A parsed ``sentinel://`` URL: where the Sentinels are, and how to log in to the master."""

    sentinels: tuple[tuple[str, int], ...]
    db: int = 0
    username: str | None = None
    password: str | None = field(default=None, repr=False)


def is_sentinel_url(url: str) -> bool:
    return url.strip().lower().startswith(f"{SENTINEL_SCHEME}://")


def _bad(variable: str, why: str) -> InvalidSetting:
    message = f"invalid setting: {variable}: {why}"
    details = {"errors": [f"{variable}: {why}"], "why": why}
    return InvalidSetting(message, details=details)


def parse_sentinel_url(url: str, variable: str = "REDIS_URL") -> SentinelTarget:
    """The Sentinels of a ``sentinel://a:26379;sentinel://b:26379`` URL; E4004 if malformed."""
    parts = [part.strip() for part in url.split(";") if part.strip()]
    if not parts:
        raise _bad(variable, "a sentinel URL names no Sentinel")
    sentinels: list[tuple[str, int]] = []
    first = None
    for part in parts:
        try:
            split = urlsplit(part)
            port = split.port or DEFAULT_SENTINEL_PORT
        except ValueError:
            raise _bad(variable, "a Sentinel's port is not a number from 1 to 65535") from None
        if split.scheme.lower() != SENTINEL_SCHEME:
            raise _bad(variable, "every part of a sentinel URL must start with sentinel://")
        if not split.hostname:
            raise _bad(variable, "a part of the sentinel URL has no host")
        sentinels.append((split.hostname, port))
        first = first or split
    assert first is not None
    path = first.path.strip("/")
    if path and not path.isdigit():
        raise _bad(variable, "the database in a sentinel URL must be a number (sentinel://h/0)")
    return SentinelTarget(
        sentinels=tuple(sentinels),
        db=int(path) if path else 0,
        username=unquote(first.username) if first.username else None,
        password=unquote(first.password) if first.password else None,
    )


def redis_url_problem(url: str) -> str | None:
    """Why ``url`` is not a Redis or Sentinel URL we can use, or None if it is."""
    if is_sentinel_url(url):
        try:
            parse_sentinel_url(url)
        except InvalidSetting as exc:
            return str(exc.details["why"])
        return None
    try:
        parse_url(url)
    except ValueError:
        return "not a Redis URL (redis://, rediss://, unix:// or sentinel://)"
    return None


def check_redis_url(url: str, variable: str = "REDIS_URL") -> None:
    """Raise E4004 naming ``variable`` unless ``url`` is a Redis or Sentinel URL we can use."""
    why = redis_url_problem(url)
    if why is not None:
        raise _bad(variable, why)


def check_sentinel_options(url: str, options: SentinelOptions, variable: str) -> None:
    """A Sentinel URL needs the master's name; E4004 naming L04_REDIS_SENTINEL_MASTER if not."""
    if is_sentinel_url(url) and not options.master:
        raise _bad(
            "L04_REDIS_SENTINEL_MASTER",
            f"must name the Sentinel master when {variable} is a sentinel:// URL",
        )


def broker_kind(url: str) -> str:
    """What a broker URL names: 'redis' (redis://, rediss://, sentinel://), 'redis+socket'
    (kombu's form for a Unix socket), 'amqp' (amqp://, amqps://, pyamqp://: RabbitMQ), or ''.

    The one reading of a broker URL: settings, the Celery app, producers and metrics all ask it.
    """
    scheme = url.split("://", 1)[0].strip().lower() if "://" in url else ""
    if scheme in ("redis", "rediss", SENTINEL_SCHEME):
        return "redis"
    if scheme == "redis+socket":
        return "redis+socket"
    if scheme in ("amqp", "amqps", "pyamqp"):
        return "amqp"
    return ""


def amqp_url_problem(url: str) -> str | None:
    """Why ``url`` is not an AMQP URL kombu can connect with (its text never repeats the URL)."""
    try:
        parts = urlsplit(url.split(";", 1)[0])
        port = parts.port  # a port that is not a number raises here
    except ValueError:
        return "not an AMQP URL (amqp://user:password@host:5672/vhost): bad host or port"
    if not parts.hostname:
        return "not an AMQP URL (amqp://user:password@host:5672/vhost): no host"
    if port is not None and not 0 < port < 65536:
        return "not an AMQP URL: port out of range"
    return None
