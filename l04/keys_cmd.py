"""``l04 keys``: make, list and revoke the virtual keys of the HTTP front door.

``create`` prints the new key once (it is not stored, only its SHA-256 is), and with
``--webhook-url`` the key's webhook secret once (stored, to sign; never printed again); ``list``
never prints a key, its hash or its webhook secret (a key's webhook URL, yes). ``--models``
takes catalog ids or aliases and stores catalog ids, so an alias names the same model for as
long as the catalog says so. Bad input is a message on
stderr and exit status 2; revoking an unknown id is exit status 1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import re
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from gateway_core.request import AGENT_DID_PATTERN, MAX_AGENT_DID_CHARS
from gateway_core.virtual_keys import (
    DEFAULT_QUOTA_PERIOD_S,
    KEY_ID_PATTERN,
    KEY_PREFIX,
    VirtualKey,
    VirtualKeyStore,
)
from gateway_core.webhooks import new_secret, webhook_url_problem

T = TypeVar("T")

_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
LIMIT_FIELDS = ("rpm", "tpm", "token_quota", "cost_quota")


def parse_duration(text: str) -> float:
    """``30d``, ``12h``, ``90m``, ``3600s``, ``2w`` in seconds; a unit is required (a bare
    ``30`` could mean seconds or days)."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"{text!r} is no duration: a number and a unit, e.g. 30d, 12h, 90m, 3600s")
    seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if not seconds > 0:
        raise ValueError(f"{text!r} is no duration: it must be more than 0")
    return seconds


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be more than 0")
    return value


def _usd(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an amount in USD") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"{text!r} must be an amount of USD more than 0")
    return value


def _did(text: str) -> str:
    if len(text) > MAX_AGENT_DID_CHARS or not AGENT_DID_PATTERN.fullmatch(text):
        raise argparse.ArgumentTypeError(
            f"{text[:80]!r} is not a DID: did:<method>:<id> (method a-z 0-9; id of A-Z a-z 0-9 "
            ". - _ : and %-escapes), at most 256 characters"
        )
    return text


def _webhook_url(text: str) -> str:
    if (why := webhook_url_problem(text)) is not None:
        raise argparse.ArgumentTypeError(f"the webhook URL {why}")
    return text


def resolve_models(names: str | None, catalog_path: str | None) -> list[str]:
    """The catalog ids of a comma-separated list of ids or aliases; ValueError naming any
    unknown one."""
    if not names:
        return []
    from config.catalog import cached_catalog

    catalog = cached_catalog(catalog_path)
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in wanted if catalog.get(n) is None]
    if unknown:
        raise ValueError(
            f"not in the model catalog: {', '.join(unknown)} "
            f"(known: {', '.join(sorted(m.model_id for m in catalog))})"
        )
    ids = []
    for name in wanted:
        spec = catalog.get(name)
        assert spec is not None
        ids.append(spec.model_id)
    return list(dict.fromkeys(ids))


def _with_store(work: Callable[[VirtualKeyStore], Awaitable[T]]) -> T:
    """Run ``work`` against the keys in the Redis of REDIS_URL (E4407 if it does not answer)."""
    from config.settings import load_settings
    from gateway_core.redis_pool import make_redis

    settings = load_settings()

    async def run() -> T:
        redis = make_redis(settings.redis_url, sentinel=settings.sentinel)
        try:
            return await work(VirtualKeyStore(redis))
        finally:
            await redis.aclose()

    return asyncio.run(run())


def _when(epoch: float | None) -> str:
    if epoch is None:
        return "-"
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _period(seconds: int) -> str:
    for unit in ("w", "d", "h", "m"):
        if seconds % _UNITS[unit] == 0:
            return f"{seconds // _UNITS[unit]}{unit}"
    return f"{seconds}s"


def _status(key: VirtualKey) -> str:
    return key.refusal() or "active"


def _limits(key: VirtualKey) -> str:
    parts = []
    if key.rpm:
        parts.append(f"rpm={key.rpm}")
    if key.tpm:
        parts.append(f"tpm={key.tpm}")
    if key.token_quota:
        parts.append(f"token_quota={key.token_quota}")
    if key.cost_quota:
        parts.append(f"cost_quota=${key.cost_quota:g}")
    if key.has_quota:
        parts.append(f"per {_period(key.quota_period_s)}")
    return " ".join(parts) or "none"


def _as_json(key: VirtualKey) -> dict[str, Any]:
    return {**key.model_dump(), "status": _status(key)}


def cmd_create(args: argparse.Namespace) -> int:
    from config.settings import load_settings

    try:
        models = resolve_models(args.models, load_settings().catalog_path)
    except ValueError as exc:
        print(f"l04 keys create: --models: {exc}", file=sys.stderr)
        return 2

    webhook_secret = new_secret() if args.webhook_url is not None else None

    async def work(store: VirtualKeyStore) -> tuple[VirtualKey, str]:
        return await store.create(
            agent_did=args.agent,
            name=args.name,
            models=models,
            rpm=args.rpm,
            tpm=args.tpm,
            token_quota=args.token_quota,
            cost_quota=args.cost_quota,
            quota_period_s=round(args.quota_period),
            expires_in_s=args.expires_in,
            webhook_url=args.webhook_url,
            webhook_secret=webhook_secret,
        )

    key, secret = _with_store(work)
    if args.json:
        shown = {"key": secret, **_as_json(key)}
        if webhook_secret is not None:
            shown["webhook_secret"] = webhook_secret
        print(json.dumps(shown))
        return 0
    print(secret)
    print(f"id: {key.id}")
    print(f"agent: {key.agent_did}")
    print(f"models: {', '.join(key.models) or 'any'}")
    print(f"limits: {_limits(key)}")
    print(f"expires: {_when(key.expires_at) if key.expires_at else 'never'}")
    if webhook_secret is not None:
        print(f"webhook: {key.webhook_url}")
        print(f"webhook secret: {webhook_secret}")
        print(
            "The key and its webhook secret are shown this once: store them now.", file=sys.stderr
        )
        return 0
    print("The key is shown this once: store it now.", file=sys.stderr)
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    found = _with_store(lambda store: store.list())
    if args.json:
        print(json.dumps([_as_json(key) for key in found]))
        return 0
    if not found:
        print("no virtual keys", file=sys.stderr)
        return 0
    columns = (
        "ID",
        "NAME",
        "AGENT",
        "MODELS",
        "LIMITS",
        "WEBHOOK",
        "CREATED",
        "EXPIRES",
        "LAST USED",
    )
    rows = [(*columns, "STATUS")]
    for key in found:
        status = _status(key)
        if key.revoked_at is not None:
            status += f" {_when(key.revoked_at)}"
        rows.append(
            (
                key.id,
                key.name or "-",
                key.agent_did,
                ",".join(key.models) or "any",
                _limits(key),
                key.webhook_url or "-",
                _when(key.created_at),
                _when(key.expires_at),
                _when(key.last_used_at),
                status,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(columns))]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        print("  ".join([*cells, row[-1]]).rstrip())
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    key_id = args.id
    if key_id.startswith(KEY_PREFIX):
        # Never echo it: it is a key, and it may be live.
        print(
            "l04 keys revoke: give the key's id (vk_..., see `l04 keys list`), not the key",
            file=sys.stderr,
        )
        return 2
    if not KEY_ID_PATTERN.fullmatch(key_id):
        print(
            f"l04 keys revoke: {key_id[:80]!r} is not a key id (vk_ and 16 hex digits)",
            file=sys.stderr,
        )
        return 2

    async def work(store: VirtualKeyStore) -> tuple[VirtualKey | None, bool]:
        before = await store.get(key_id)
        return before, await store.revoke(key_id)

    before, revoked = _with_store(work)
    if not revoked:
        print(f"l04 keys revoke: no key {key_id}", file=sys.stderr)
        return 1
    if before is not None and before.revoked_at is not None:
        print(f"key {key_id} was already revoked at {_when(before.revoked_at)}")
    else:
        print(f"key {key_id} revoked")
    return 0


def add_keys_commands(sub: Any) -> None:
    keys = sub.add_parser("keys", help="virtual keys of the HTTP front door")
    commands = keys.add_subparsers(dest="keys_command", required=True)

    create = commands.add_parser("create", help="make a key for an agent and print it (this once)")
    create.add_argument("--agent", required=True, type=_did, help="the agent's DID")
    create.add_argument("--name", default="", help="a label for people")
    create.add_argument(
        "--models",
        default=None,
        help="comma-separated catalog ids or aliases the key may use (default: any)",
    )
    create.add_argument("--rpm", type=_positive_int, default=None, help="requests per minute")
    create.add_argument("--tpm", type=_positive_int, default=None, help="tokens per minute")
    create.add_argument(
        "--token-quota", type=_positive_int, default=None, help="tokens per quota period"
    )
    create.add_argument("--cost-quota", type=_usd, default=None, help="USD per quota period")
    create.add_argument(
        "--quota-period",
        type=_duration,
        default=float(DEFAULT_QUOTA_PERIOD_S),
        help="what the quotas count over, e.g. 1d, 30d (default 1d, aligned to 00:00 UTC)",
    )
    create.add_argument(
        "--expires-in", type=_duration, default=None, help="e.g. 30d, 12h (default: never)"
    )
    create.add_argument(
        "--webhook-url",
        type=_webhook_url,
        default=None,
        help="where this key's background responses and batches send their webhook events; "
        "a signing secret (whsec_...) is made and printed this once",
    )
    create.add_argument("--json", action="store_true", help="one JSON object on stdout")
    create.set_defaults(func=cmd_create)

    listing = commands.add_parser("list", help="every key (never the key itself)")
    listing.add_argument("--json", action="store_true", help="a JSON array on stdout")
    listing.set_defaults(func=cmd_list)

    revoke = commands.add_parser("revoke", help="revoke a key for good, on every server")
    revoke.add_argument("id", help="the key's id (vk_...)")
    revoke.set_defaults(func=cmd_revoke)
