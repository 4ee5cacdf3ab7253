"""Signed webhooks: the events, their signature, and the outbox they wait in.

Events are OpenAI's thin ones, ``{"id": "evt_...", "object": "event", "created_at": <s>,
"type": "...", "data": {"id": "<resp_... or batch_...>"}}``, of the types in :data:`EVENT_TYPES`
only. They are signed by the Standard Webhooks scheme as the openai SDK's
``client.webhooks.unwrap`` verifies them: headers ``webhook-id`` (the event's id, the same on
every attempt), ``webhook-timestamp`` (seconds, each attempt's own) and ``webhook-signature:
v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">``, keyed by the base64-decoded part of the
secret after ``whsec_``.

The outbox (``keys.WEBHOOK_OUTBOX``) is a sorted set in Redis, written in the same Lua script as
the state change that causes the event (``gateway_core/lua/webhook.lua``): a job's end
(its ``notify`` field), a batch's (``gateway_client/lua/batch_move.lua``), or
:meth:`gateway_client.webhook_outbox.WebhookOutbox.add`. Workers deliver it
(``workers/webhook_delivery.py``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from urllib.parse import urlsplit

SECRET_PREFIX = "whsec_"  # noqa: S105 -- a prefix, not a secret
#: The fewest key bytes a secret may decode to (Standard Webhooks: 24 to 64).
MIN_SECRET_BYTES = 24
MAX_SECRET_BYTES = 64

RESPONSE_EVENTS = (
    "response.completed",
    "response.failed",
    "response.cancelled",
    "response.incomplete",
)
BATCH_EVENTS = ("batch.completed", "batch.failed", "batch.expired", "batch.cancelled")
EVENT_TYPES = frozenset(RESPONSE_EVENTS + BATCH_EVENTS)

#: What a job's ``notify`` field names: only background responses send webhooks.
NOTIFY_KINDS = ("response",)
RESPONSE_ID_PREFIX = "resp_"


def new_secret() -> str:
    """A fresh signing secret: ``whsec_`` and the base64 of 32 random bytes."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def secret_problem(secret: str) -> str | None:
    """Why ``secret`` is no signing secret (a message that never quotes it), or None."""
    if not secret.startswith(SECRET_PREFIX):
        return "must start with whsec_ (as OpenAI's webhook secrets do)"
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        return "the part after whsec_ must be base64"
    if not MIN_SECRET_BYTES <= len(key) <= MAX_SECRET_BYTES:
        return (
            f"the part after whsec_ must decode to {MIN_SECRET_BYTES} to {MAX_SECRET_BYTES} "
            f"bytes, not {len(key)}"
        )
    return None


def signing_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_`` secret (ValueError, without the secret, if it is none)."""
    problem = secret_problem(secret)
    if problem is not None:
        raise ValueError(f"webhook secret: {problem}")
    return base64.b64decode(secret[len(SECRET_PREFIX) :])


def signature(key: bytes, webhook_id: str, timestamp: int, body: str) -> str:
    """``v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">``."""
    signed = f"{webhook_id}.{timestamp}.{body}".encode()
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def signed_headers(secret: str, webhook_id: str, timestamp: int, body: str) -> dict[str, str]:
    """The headers of one attempt: signed afresh with its own ``timestamp`` (seconds)."""
    return {
        "content-type": "application/json",
        "webhook-id": webhook_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature(signing_key(secret), webhook_id, timestamp, body),
    }


def notify_field(notify: str, job_id: str) -> str:
    """A job's ``notify`` field for :meth:`ModelGateway.submit`'s ``notify``: ``"response"``
    (the object id is ``resp_<job id>``) or ``"response:<object id>"``; ValueError otherwise."""
    kind, _, object_id = notify.partition(":")
    if kind not in NOTIFY_KINDS:
        raise ValueError(f"notify must be 'response' or 'response:<id>', not {notify[:40]!r}")
    if not object_id:
        object_id = RESPONSE_ID_PREFIX + job_id
    if len(object_id) > 200 or not object_id.isprintable() or object_id.strip() != object_id:
        raise ValueError("notify's object id must be 1-200 printable characters")
    return f"{kind}:{object_id}"


def webhook_url_problem(url: str) -> str | None:
    """Why ``url`` cannot receive webhooks, or None. Loopback and private hosts are allowed
    (operators run receivers next to the fleet); the message never quotes the URL (it may
    carry a token in its query)."""
    if not url.isprintable():  # a trailing newline, a control character: no client sends it
        return "must be printable characters only (no newline or control character)"
    try:
        parts = urlsplit(url)
    except ValueError:  # an unclosed IPv6 bracket
        return "is no URL"
    if parts.scheme not in ("http", "https"):
        return "must be an http:// or https:// URL"
    if not parts.hostname:
        return "must name a host"
    if len(url) > 2048:
        return "must be at most 2048 characters"
    try:
        parts.port  # noqa: B018 -- a bad port raises here
    except ValueError:
        return "has a bad port"
    return None
