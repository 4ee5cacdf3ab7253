"""Every Redis key and channel the fleet writes, in one place.

A job's keys share the hash tag ``{job_id}`` so that they live in one Redis Cluster slot and one
Lua script may touch them all.
"""

from __future__ import annotations

PREFIX = "l04"


def job(job_id: str) -> str:
    """Hash: the job's state, its request, deadline, attempt, timestamps."""
    return f"{PREFIX}:job:{{{job_id}}}"


def job_events(job_id: str) -> str:
    """Stream: the job's durable event record (chunks, then one result or one error)."""
    return f"{PREFIX}:job:{{{job_id}}}:events"


def job_response(job_id: str) -> str:
    """String (JSON): what an HTTP Responses API ``response`` object says beyond its job (the
    request's instructions, metadata, tools, the key that made it); expires with the job."""
    return f"{PREFIX}:job:{{{job_id}}}:response"


def job_lease(job_id: str) -> str:
    """String with a TTL: which worker runs the job now; gone when that worker stops renewing."""
    return f"{PREFIX}:job:{{{job_id}}}:lease"


def job_timeline(job_id: str) -> str:
    """List: the job's timeline, one JSON entry per step (created, claimed, deferred, ...), for
    ``l04 trace``; written by the transitions' scripts (``gateway_core/lua/timeline.lua``, which
    spells it the same), capped, and expiring with the record."""
    return f"{PREFIX}:job:{{{job_id}}}:timeline"


def job_channel(job_id: str) -> str:
    """Pub/sub channel announcing new events of the job (the stream is the record)."""
    return f"{PREFIX}:job:{{{job_id}}}:notify"


def client_inbox(client_id: str) -> str:
    """Pub/sub channel of one producer process: the events of every job it submitted.

    A job records its producer's inbox (``reply_to``); each announcement on the job's channel is
    repeated there, so a producer needs one subscription for all its jobs, made once.
    """
    return f"{PREFIX}:inbox:{{{client_id}}}"


def queue_bell(queue_list: str) -> str:
    """List: one token per message pushed onto ``queue_list`` (capped, see
    ``gateway_core.queues.QUEUE_BELL_CAP``); idle workers wait on it with BRPOP. The Lua scripts
    that push messages ring it through ``gateway_core/lua/bell.lua``, which spells it the same."""
    return f"{PREFIX}:bell:{queue_list}"


INTAKE_POISON = f"{PREFIX}:intake:poison"
"""List: values a worker's intake found on a queue that are no kombu message, held on the broker
until the worker has set them aside in ``l04:dlq`` (see ``workers/lua/intake_take.lua``)."""

DEAD_LETTERS = f"{PREFIX}:dlq"
"""List: job messages a worker could not read, set aside for ``l04 dlq``."""


def breaker(target: str) -> str:
    """Hash: circuit breaker of a provider ("openai") or a deployment ("openai:gpt-4o").

    A deployment's breaker shares its provider's hash tag, so that one script checks both.
    """
    provider, _, model = target.partition(":")
    return f"{PREFIX}:cb:{{{provider}}}" + (f":{model}" if model else "")


def rate_limit(provider: str, model: str, name: str, agent: str | None = None) -> str:
    """Hash of sub-bucket counts. One model's limits share a hash tag (one Cluster slot)."""
    scope = f"agent:{agent}:" if agent else ""
    return f"{PREFIX}:rl:{{{provider}:{model}}}:{scope}{name}"


LATENCIES = f"{PREFIX}:latency"
"""Hash: model id -> moving average of its call latency in ms, kept by the workers."""


def waiting_room(provider: str, model: str) -> str:
    """Key prefix of a model's waiting room: jobs over its limits, in admission order.

    Its keys (``:order``, ``:due``, ``:meta``) share the model's rate-limit hash tag.
    """
    return f"{PREFIX}:rl:{{{provider}:{model}}}:room"


DEFERRED = f"{PREFIX}:deferred"
"""Sorted set: deferred job ids by the server time (ms) they go back onto their queue."""

QUEUED_JOBS = f"{PREFIX}:jobs:queued"
"""Sorted set: the ids of jobs queued on a Redis broker, by the server time (ms) each became
queued (create, release, hand-off, the orphan sweeper's requeue); a claim takes a job out, and
the orphan sweeper prunes jobs that ended while queued. It expires with the longest-lived record
in it."""

ORPHAN_SWEEPER = f"{PREFIX}:orphans:lease"
"""String with a TTL: the token of the worker sweeping for orphaned jobs; while it lives no
other sweep starts (it lasts one sweep period)."""

ORPHAN_SUSPECTS = f"{PREFIX}:orphans:suspects"
"""Set with a TTL: the queued jobs whose message the last orphan sweep found nowhere."""


def orphan_sweep(token: str) -> str:
    """Key prefix of one orphan sweep's scratch keys (``:unseen``, ``:suspects``), each with a
    TTL; deleted when the sweep ends."""
    return f"{PREFIX}:orphans:{{{token}}}"


def quota(owner: str, period: int) -> str:
    """Hash: the spend (tokens, micro-USD) in one quota period of an agent (``owner`` is its
    DID) or of a virtual key (``owner`` is :func:`key_scope` of its id)."""
    return f"{PREFIX}:quota:{{{owner}}}:{period}"


def key_scope(key_id: str) -> str:
    """The owner of a virtual key's quota and rate limits: ``key:<id>``, never a DID (a DID
    starts with ``did:``), so a key's counts cannot mix with an agent's."""
    return f"key:{key_id}"


def key_rate_limit(key_id: str, name: str) -> str:
    """Hash of sub-bucket counts of a virtual key's own limit (``rpm``, ``tpm``): one bucket per
    key across all models, so its hash tag is the key's, not a model's (Redis Cluster is not
    supported: a decision touches both)."""
    return f"{PREFIX}:rl:{{{key_scope(key_id)}}}:{name}"


def virtual_key(secret_sha256: str) -> str:
    """Hash: a virtual key's record (:mod:`gateway_core.virtual_keys`), named by the SHA-256 of
    the key, so that authenticating a request is one HGETALL. It holds no key, and no TTL:
    keys are configuration, kept after revocation or expiry so that ``l04 keys list`` shows
    them."""
    return f"{PREFIX}:vkey:sha256:{secret_sha256}"


def virtual_key_id(key_id: str) -> str:
    """String: the SHA-256 of the virtual key ``key_id``, where its record is (by id: ``get``,
    ``revoke``)."""
    return f"{PREFIX}:vkey:id:{key_id}"


VIRTUAL_KEYS = f"{PREFIX}:vkeys"
"""Set: the id of every virtual key ever made (``l04 keys list``)."""


CACHE_STATS = f"{PREFIX}:cache:stats"
"""Hash: cache hits, misses and errors by kind, counted by every worker."""

EXACT_CACHE_INDEX = f"{PREFIX}:cache:{{exact}}:index"
"""Sorted set: exact-cache entry keys by the time they were stored (the oldest go first)."""


def exact_cache(key: str) -> str:
    """String: one cached answer, under the hash of its normalized request."""
    return f"{PREFIX}:cache:{{exact}}:{key}"


def semantic_cache(scope: str) -> str:
    """Key prefix of one semantic-cache scope: ``:vec``, ``:resp``, ``:order`` and ``:log``."""
    return f"{PREFIX}:cache:{{sem:{scope}}}"


USAGE_OUTBOX = f"{PREFIX}:usage"
"""Stream: usage events waiting to be delivered to L01 (consumer group ``l01``)."""


def provider_health(provider: str) -> str:
    """Hash: the last health probe of a provider by a worker that serves it (expires)."""
    return f"{PREFIX}:health:{provider}"


BATCHES = f"{PREFIX}:batches"
"""Sorted set: batch ids by creation time."""


def batch(batch_id: str) -> str:
    """Hash: a batch's status, counts, timestamps, input and output."""
    return f"{PREFIX}:batch:{{{batch_id}}}"


def batch_done(batch_id: str) -> str:
    """Hash: line index -> that line's output line, written once."""
    return f"{PREFIX}:batch:{{{batch_id}}}:done"


def batch_driver(batch_id: str) -> str:
    """String with a TTL: the process driving the batch, while it lives."""
    return f"{PREFIX}:batch:{{{batch_id}}}:driver"


def batch_lease(batch_id: str) -> str:
    """String with a PX expiry: the token of the ``l04 serve`` process that drives an HTTP batch
    (SET NX, renewed while it drives; another server takes the batch when it lapses)."""
    return f"{PREFIX}:batch:{{{batch_id}}}:lease"


FLEET_BATCHES = f"{PREFIX}:batches:fleet"
"""Set: the HTTP batches not yet ended, which the servers' batch drivers take leases on."""


def file(file_id: str) -> str:
    """Hash: a stored file's object (bytes, lines, filename, purpose, owner, times)."""
    return f"{PREFIX}:file:{{{file_id}}}"


def file_chunks(file_id: str) -> str:
    """List: a stored file's content, in chunks of up to a MiB."""
    return f"{PREFIX}:file:{{{file_id}}}:chunks"


def files_of(owner: str) -> str:
    """Sorted set: an owner's (a virtual key's id, or ``-``) file ids by creation time."""
    return f"{PREFIX}:files:owner:{{{owner}}}"


FILES_USAGE = f"{PREFIX}:files:{{usage}}:bytes"
"""Hash: file id -> the bytes it holds in the file store (its share of the cap)."""
FILES_EXPIRIES = f"{PREFIX}:files:{{usage}}:expiries"
"""Sorted set: file id -> when it expires (its bytes leave the cap's count then)."""
FILES_TOTAL = f"{PREFIX}:files:{{usage}}:total"
"""Integer: every stored file's bytes together, counted against ``L04_FILES_MAX_BYTES``."""


def idempotency(job_id: str) -> str:
    """The fingerprint of the request an HTTP ``Idempotency-Key`` (its job ``job_id``) was first
    used with (gateway_http/door.py)."""
    return f"{PREFIX}:idem:{{{job_id}}}"


WEBHOOK_OUTBOX = f"{PREFIX}:webhooks:outbox"
"""Sorted set: the webhook outbox (:mod:`gateway_core.webhooks`). Each member is one delivery
(an event, the key it belongs to, where it goes, its attempts so far), scored by the server time
(ms) it is due; a deliverer that takes one pushes its score a lease ahead, so that if it dies the
delivery is due again. The Lua scripts that add to it spell it the same (gateway_core/lua/
webhook.lua): like the queue bells, it is for one Redis (or Sentinel), not Cluster."""

WEBHOOK_BELL = f"{PREFIX}:webhooks:bell"
"""List: one token per event added to the webhook outbox (capped), so that an idle deliverer
waits on it with BRPOP and sends a new event at once, without polling."""


def virtual_key_webhook(key_id: str) -> str:
    """Hash: a virtual key's webhook, ``url`` and ``secret`` (``whsec_...``), apart from the
    key's record, so that the secret never travels with the record (authentication, caches,
    ``l04 keys list``); only deliverers read it."""
    return f"{PREFIX}:vkey:webhook:{key_id}"
