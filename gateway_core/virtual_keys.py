"""Virtual keys: the HTTP front door's API keys, each bound to one agent, with limits of its own.

A key is ``sk-l04-`` followed by ``secrets.token_urlsafe(32)``: 43 characters, 256 random bits.
It is shown once, when it is made; Redis keeps only its SHA-256 (hex), never the key.

Why a plain SHA-256 and not bcrypt, scrypt or argon2: a slow, salted hash protects secrets that
people choose (passwords, guessable) when a table of hashes leaks. A key of 256 random bits
cannot be guessed at any speed, from its hash or otherwise, so a slow hash would add nothing but
milliseconds to every request (authentication is on every request's hot path), and a salt would
stop the hash from being the key's address. The hash names the record, so authenticating is one
``HGETALL`` whose key no one can compute without the key; comparing in Redis is no timing oracle
(a guess must match the whole 256-bit hash, and the attacker cannot choose it).

Redis keys (:mod:`gateway_core.keys`):

    l04:vkey:sha256:<hex>   hash    the record: VirtualKey's fields (absent when None); no key
    l04:vkey:id:<id>        string  the key's SHA-256, where its record is (by id)
    l04:vkeys               set     every key id

A record has no TTL: keys are configuration an operator makes (a handful, not one per job), and
revoked or expired keys stay listed. Nothing is cached in a process by :meth:`authenticate`, so
a revocation is seen by the next request of every server; ``last_used_at`` is written at most
once per :data:`LAST_USED_EVERY_S` per key, never once per request. :class:`KeyCache` keeps a
record for at most a second, for the producers and workers that read a key's limits per job.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import math
import re
import secrets
import time
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import pydantic
from pydantic import BaseModel, ConfigDict, Field, field_validator
from redis.asyncio import Redis

from gateway_core import keys
from gateway_core.errors import InvalidParameters, KeyRefused, ModelNotAllowed, invalid
from gateway_core.request import AGENT_DID_PATTERN, MAX_AGENT_DID_CHARS
from gateway_core.store_errors import job_store_errors
from gateway_core.webhooks import secret_problem, webhook_url_problem

KEY_PREFIX = "sk-l04-"
#: What a key looks like (the random part is 43 characters when made here; longer is accepted
#: so that a future format can carry more).
KEY_PATTERN = re.compile(r"sk-l04-[A-Za-z0-9_-]{43,128}")
KEY_ID_PATTERN = re.compile(r"vk_[0-9a-f]{16}")
#: A key's quotas count over this many seconds unless told otherwise (an agent's default too).
DEFAULT_QUOTA_PERIOD_S = 86_400
#: ``last_used_at`` is refreshed at most this often per key (seconds).
LAST_USED_EVERY_S = 10.0
#: How long :class:`KeyCache` keeps a record (seconds).
CACHE_MAX_AGE_S = 1.0

_NO_CONTROL = re.compile(r"[^\x00-\x1f\x7f]*")


def new_key() -> str:
    """A fresh key: ``sk-l04-`` and 256 random bits (43 URL-safe characters)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def new_key_id() -> str:
    """A key's public id: ``vk_`` and 16 hex digits (random, unrelated to the key)."""
    return "vk_" + secrets.token_hex(8)


def hash_key(secret: str) -> str:
    """The SHA-256 (hex) of the whole key: its address in Redis (see the module's docstring)."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


class VirtualKey(BaseModel):
    """A key's record: who it speaks for, what it may use, and its own limits (None: none).

    Times are epoch seconds. ``models`` holds catalog ids; empty, the key may use any model.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=KEY_ID_PATTERN.pattern)
    name: str = Field(default="", max_length=200)
    agent_did: str = Field(min_length=1, max_length=MAX_AGENT_DID_CHARS)
    models: list[str] = Field(default_factory=list, max_length=256)
    rpm: int | None = Field(default=None, gt=0)
    tpm: int | None = Field(default=None, gt=0)
    token_quota: int | None = Field(default=None, gt=0)
    cost_quota: float | None = Field(default=None, gt=0.0, allow_inf_nan=False)  # USD
    quota_period_s: int = Field(default=DEFAULT_QUOTA_PERIOD_S, gt=0)
    created_at: float = Field(allow_inf_nan=False)
    expires_at: float | None = Field(default=None, allow_inf_nan=False)
    revoked_at: float | None = Field(default=None, allow_inf_nan=False)
    last_used_at: float | None = Field(default=None, allow_inf_nan=False)
    # Where this key's objects' webhook events go (its secret is apart: keys.virtual_key_webhook).
    webhook_url: str | None = Field(default=None, max_length=2048)

    @field_validator("agent_did")
    @classmethod
    def _did(cls, value: str) -> str:
        if not AGENT_DID_PATTERN.fullmatch(value):
            raise ValueError(
                "agent_did must be a DID: did:<method>:<id> (method a-z 0-9; id of A-Z a-z 0-9 "
                ". - _ : and %-escapes)"
            )
        return value

    @field_validator("webhook_url")
    @classmethod
    def _webhook_url(cls, value: str | None) -> str | None:
        if value is not None and (why := webhook_url_problem(value)) is not None:
            raise ValueError(f"webhook_url {why}")
        return value

    @field_validator("name")
    @classmethod
    def _printable(cls, value: str) -> str:
        if not _NO_CONTROL.fullmatch(value):
            raise ValueError("name must have no control characters")
        return value

    @field_validator("models")
    @classmethod
    def _model_names(cls, value: list[str]) -> list[str]:
        for name in value:
            if not 0 < len(name) <= 256 or not _NO_CONTROL.fullmatch(name):
                raise ValueError(f"{name!r} is no model name")
        return list(dict.fromkeys(value))

    # -- what the key allows ----------------------------------------------------------------

    def allows(self, model_id: str, *aliases: str) -> bool:
        """Whether the key may use the model (by its catalog id or any of its aliases)."""
        return not self.models or any(name in self.models for name in (model_id, *aliases))

    def check_model(self, model_id: str, *aliases: str) -> None:
        """E4409 when the key's ``models`` do not include this one."""
        if not self.allows(model_id, *aliases):
            raise ModelNotAllowed(
                f"key {self.id} may not use model {model_id!r}; it may use "
                + ", ".join(self.models),
                details={"key_id": self.id, "model_id": model_id, "allowed": list(self.models)},
            )

    def refusal(self, now: float | None = None) -> str | None:
        """Why the key is refused now ("revoked", "expired"), or None if it is good."""
        if self.revoked_at is not None:
            return "revoked"
        when = time.time() if now is None else now
        if self.expires_at is not None and when >= self.expires_at:
            return "expired"
        return None

    def check_usable(self, now: float | None = None) -> None:
        """E4408 when the key is revoked or expired (its message names the id, not the key)."""
        reason = self.refusal(now)
        if reason is not None:
            raise KeyRefused(
                f"API key {self.id} was revoked"
                if reason == "revoked"
                else f"API key {self.id} expired",
                details={"key_id": self.id, "reason": reason},
            )

    @property
    def has_quota(self) -> bool:
        return self.token_quota is not None or self.cost_quota is not None

    # -- the record in Redis ----------------------------------------------------------------

    def to_fields(self) -> dict[str, str]:
        """The record's hash fields (a None field is left out)."""
        fields: dict[str, str] = {}
        for name, value in self.model_dump(exclude_none=True).items():
            if name == "models":
                fields[name] = json.dumps(value)
            elif isinstance(value, float):
                fields[name] = repr(value)
            else:
                fields[name] = str(value)
        return fields

    @classmethod
    def from_fields(cls, raw: dict[Any, Any]) -> VirtualKey:
        fields = {_text(k): _text(v) for k, v in raw.items()}
        data: dict[str, Any] = dict(fields)
        data["models"] = json.loads(fields.get("models") or "[]")
        return cls.model_validate(data)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class VirtualKeyStore:
    """Virtual keys in Redis, shared by every server, producer and worker.

    Redis failures raise E4407 (:class:`~gateway_core.errors.JobStoreUnavailable`), retryable;
    with ``typed_errors=False`` redis-py's own errors pass through instead (a worker's pipeline
    hands the job's message back on those, where an E4407 would fail the job).
    """

    def __init__(self, redis: Redis, *, typed_errors: bool = True) -> None:
        self._redis = redis
        self._typed_errors = typed_errors

    def _errors(self) -> AbstractContextManager[None]:
        return job_store_errors() if self._typed_errors else nullcontext()

    async def create(
        self,
        *,
        agent_did: str,
        name: str = "",
        models: builtins.list[str] | tuple[str, ...] = (),
        rpm: int | None = None,
        tpm: int | None = None,
        token_quota: int | None = None,
        cost_quota: float | None = None,
        quota_period_s: int = DEFAULT_QUOTA_PERIOD_S,
        expires_in_s: float | None = None,
        webhook_url: str | None = None,
        webhook_secret: str | None = None,
    ) -> tuple[VirtualKey, str]:
        """Make a key: its record and the key itself, which is shown this once and never stored.

        ``webhook_url`` with ``webhook_secret`` (``whsec_...``, from
        :func:`gateway_core.webhooks.new_secret`): the key's own webhook, stored beside the
        record in the same transaction (a deliverer must sign with the secret, so it is kept).

        Bad values are E4500 naming each field. ``models`` should be catalog ids (the caller
        resolves aliases; gateway_core knows no catalog).
        """
        if expires_in_s is not None and not (math.isfinite(expires_in_s) and expires_in_s > 0):
            raise InvalidParameters("expires_in_s must be a positive number of seconds")
        if (webhook_url is None) != (webhook_secret is None):
            raise InvalidParameters("a key's webhook needs both its URL and its secret")
        if webhook_secret is not None and (why := secret_problem(webhook_secret)) is not None:
            raise InvalidParameters(f"webhook secret: {why}")
        now = time.time()
        try:
            record = VirtualKey(
                id=new_key_id(),
                name=name,
                agent_did=agent_did,
                models=list(models),
                rpm=rpm,
                tpm=tpm,
                token_quota=token_quota,
                cost_quota=cost_quota,
                quota_period_s=quota_period_s,
                created_at=now,
                expires_at=None if expires_in_s is None else now + expires_in_s,
                webhook_url=webhook_url,
            )
        except pydantic.ValidationError as exc:
            raise invalid("virtual key", exc) from None
        secret = new_key()
        digest = hash_key(secret)
        with self._errors():
            while not await self._write(record, digest, webhook_secret):
                record = record.model_copy(update={"id": new_key_id()})  # an id taken: another
        return record, secret

    async def _write(
        self, record: VirtualKey, digest: str, webhook_secret: str | None = None
    ) -> bool:
        """Write the record, its id and its place in the set at once; False if the id is taken."""
        by_id = keys.virtual_key_id(record.id)
        async with self._redis.pipeline(transaction=True) as pipe:
            await pipe.watch(by_id)
            if await pipe.exists(by_id):
                return False
            pipe.multi()
            pipe.hset(keys.virtual_key(digest), mapping=record.to_fields())  # type: ignore[arg-type]
            pipe.set(by_id, digest)
            pipe.sadd(keys.VIRTUAL_KEYS, record.id)
            if record.webhook_url is not None and webhook_secret is not None:
                pipe.hset(
                    keys.virtual_key_webhook(record.id),
                    mapping={"url": record.webhook_url, "secret": webhook_secret},
                )
            await pipe.execute()
        return True

    async def get(self, key_id: str) -> VirtualKey | None:
        """The key's record, or None if there is no such key."""
        if not KEY_ID_PATTERN.fullmatch(key_id):
            return None
        with self._errors():
            digest = await self._redis.get(keys.virtual_key_id(key_id))
            if digest is None:
                return None
            raw = await self._redis.hgetall(keys.virtual_key(_text(digest)))
        return VirtualKey.from_fields(raw) if raw else None

    async def webhook(self, key_id: str) -> tuple[str, str] | None:
        """The key's webhook, ``(url, secret)``, or None (no such key, or none set). Only
        deliverers call this: the secret signs, and goes nowhere else."""
        if not KEY_ID_PATTERN.fullmatch(key_id):
            return None
        with self._errors():
            raw = await self._redis.hmget(keys.virtual_key_webhook(key_id), ["url", "secret"])
        if raw[0] is None or raw[1] is None:
            return None
        return _text(raw[0]), _text(raw[1])

    async def list(self) -> builtins.list[VirtualKey]:
        """Every key, revoked and expired ones too, oldest first."""
        with self._errors():
            ids = sorted(_text(m) for m in await self._redis.smembers(keys.VIRTUAL_KEYS))
            if not ids:
                return []
            async with self._redis.pipeline(transaction=False) as pipe:
                for key_id in ids:
                    pipe.get(keys.virtual_key_id(key_id))
                digests = await pipe.execute()
            async with self._redis.pipeline(transaction=False) as pipe:
                for digest in digests:
                    if digest is not None:
                        pipe.hgetall(keys.virtual_key(_text(digest)))
                records = await pipe.execute()
        found = [VirtualKey.from_fields(raw) for raw in records if raw]
        return sorted(found, key=lambda k: (k.created_at, k.id))

    async def revoke(self, key_id: str) -> bool:
        """Revoke the key for good; False if there is no such key (revoking twice is True).

        Every server refuses it from its next request: nothing caches a key for authentication.
        """
        if not KEY_ID_PATTERN.fullmatch(key_id):
            return False
        with self._errors():
            digest = await self._redis.get(keys.virtual_key_id(key_id))
            if digest is None:
                return False
            # The record was written with the id in one transaction and is never deleted.
            await self._redis.hsetnx(
                keys.virtual_key(_text(digest)), "revoked_at", repr(time.time())
            )
        return True

    async def authenticate(self, secret: str | None) -> VirtualKey:
        """The record of a good key, or E4408 for a missing, malformed, unknown, revoked or
        expired one (the message never holds the key). One round trip, and a second at most
        once per :data:`LAST_USED_EVERY_S` to record ``last_used_at``."""
        if not secret:
            raise KeyRefused("no API key given", details={"reason": "missing"})
        if not KEY_PATTERN.fullmatch(secret):
            raise KeyRefused(
                "the API key is not an L04 key (sk-l04-...)", details={"reason": "malformed"}
            )
        record_key = keys.virtual_key(hash_key(secret))
        with self._errors():
            raw = await self._redis.hgetall(record_key)
            if not raw:
                raise KeyRefused("unknown API key", details={"reason": "unknown"})
            record = VirtualKey.from_fields(raw)
            now = time.time()
            record.check_usable(now)
            last = record.last_used_at
            if last is None or now - last >= LAST_USED_EVERY_S or now < last:
                await self._redis.hset(record_key, "last_used_at", repr(now))
                record = record.model_copy(update={"last_used_at": now})
        return record


class KeyCache:
    """Records by id, each kept at most ``max_age_s`` in this process (None, for no such key,
    too): a producer or worker reading a key's models and limits for each job reads Redis at
    most once a second per key. A key's models and limits never change; its revocation is
    seen within ``max_age_s``."""

    def __init__(
        self,
        store: VirtualKeyStore,
        max_age_s: float = CACHE_MAX_AGE_S,
        max_entries: int = 10_000,
    ) -> None:
        self._store = store
        self.max_age_s = max_age_s
        self._max_entries = max_entries
        self._entries: dict[str, tuple[float, VirtualKey | None]] = {}

    async def get(self, key_id: str) -> VirtualKey | None:
        now = time.monotonic()
        hit = self._entries.get(key_id)
        if hit is not None and now - hit[0] < self.max_age_s:
            return hit[1]
        record = await self._store.get(key_id)
        if len(self._entries) >= self._max_entries:
            self._entries.clear()  # a bound, not a policy: a second's worth is all it holds
        self._entries[key_id] = (now, record)
        return record
