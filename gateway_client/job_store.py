"""A job's life in Redis, one atomic Lua script per transition.

Keys (see :mod:`gateway_client.keys`): a hash with the job's state and request, a stream with its
events, a lease naming the worker that runs it. States::

    queued ──claim──▶ running ──finish──▶ succeeded | failed
     ▲ │                 │  ▲
     │ │                 │  └── claim again after the lease lapsed (worker died): attempt + 1
     │ │                 ├──defer──▶ deferred (over a rate limit, held by no worker)
     │ │                 └──hand_off──▶ queued on the next model's queue (failover)
     │ └─────────────────┴──▶ cancelled (cancel) | expired (deadline passed)
     └──release (the wait is over)── deferred

Every event goes to the stream first and is then announced on the job's pub/sub channel as
``"<n>\\n<stream id>\\n<event json>"``, and on its producer's inbox (``reply_to``, if the job has
one) with the job's channel in front; ``n`` counts the job's events from 0 so a listener can
tell a gap from a duplicate. Exactly one terminal event (result or error) is ever written: each
terminal transition checks the state inside the script. All keys expire.

Redis replicates asynchronously: a master that fails right after a script can take the script's
writes with it, and the replica promoted in its place never saw the job, its claim or its end.
With ``wait_replicas`` > 0 the job's transitions (create, claim, finish, hand-off, defer, release)
are each followed by ``WAIT wait_replicas wait_timeout_ms`` on the same connection (a pipeline:
WAIT may not run inside a script), so the call returns only once that many replicas have the
write, or the timeout passed (then a warning is logged and the call returns all the same).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from gateway_client import keys

log = logging.getLogger(__name__)

TERMINAL_STATES = frozenset({"succeeded", "failed", "cancelled", "expired"})

_PRELUDE = """
local TERMINAL = {succeeded=true, failed=true, cancelled=true, expired=true}
local function now_seconds()
  local t = redis.call('TIME')
  return tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local function emit(job, events_key, channel, expire_at_ms, event_json)
  local n = redis.call('XLEN', events_key)
  local id = redis.call('XADD', events_key, '*', 'n', n, 'e', event_json)
  if n == 0 and expire_at_ms then redis.call('PEXPIREAT', events_key, expire_at_ms) end
  local announcement = n .. '\\n' .. id .. '\\n' .. event_json
  redis.call('PUBLISH', channel, announcement)
  local inbox = redis.call('HGET', job, 'reply_to')
  if inbox then redis.call('PUBLISH', inbox, channel .. '\\n' .. announcement) end
  return n
end
local function deadline_event(state, job)
  local code, message
  if state ~= 'running' and redis.call('HEXISTS', job, 'deferrals') == 1 then
    code, message = 'E4401', 'deadline passed while the job waited for a rate limit'
  elseif state == 'queued' then
    code, message = 'E4404', 'deadline passed before a worker started the job'
  else
    code, message = 'E4205', 'deadline passed while the job was running'
  end
  return cjson.encode({type='error', error={code=code, message=message, retryable=false}})
end
local function finish(job, events, lease, channel, state_to, event_json, ttl)
  local expire_at = redis.call('HGET', job, 'expire_at_ms')
  emit(job, events, channel, expire_at, event_json)
  redis.call('HSET', job, 'state', state_to, 'finished_ms', math.floor(now_seconds() * 1000))
  redis.call('DEL', lease)
  redis.call('EXPIRE', job, ttl)
  redis.call('EXPIRE', events, ttl)
end
"""

# KEYS: job, then the queue's priority lists, then the list to push onto (or none).
# ARGV: expire_at_ms, max queue depth, message (or ''), then field, value pairs.
# Returns 'created', 'full', or the state of the job that already has this id.
_CREATE = """
local state = redis.call('HGET', KEYS[1], 'state')
if state then return state end
local depth = 0
for i = 2, #KEYS - 1 do depth = depth + redis.call('LLEN', KEYS[i]) end
if depth >= tonumber(ARGV[2]) then return 'full' end
redis.call('HSET', KEYS[1], 'state', 'queued', 'attempt', 0,
           'created_ms', math.floor(now_seconds() * 1000), unpack(ARGV, 4))
redis.call('PEXPIREAT', KEYS[1], ARGV[1])
if ARGV[3] ~= '' then redis.call('LPUSH', KEYS[#KEYS], ARGV[3]) end
return 'created'
"""

# KEYS: job, events, lease. ARGV: worker id, lease ms, channel, result ttl.
_CLAIM = """
local f = redis.call('HMGET', KEYS[1], 'state', 'deadline')
local state, deadline = f[1], tonumber(f[2])
if not state then return {'gone'} end
if TERMINAL[state] then return {'terminal', state} end
if state == 'deferred' then return {'deferred', state} end
local now = now_seconds()
if deadline and now >= deadline then
  finish(KEYS[1], KEYS[2], KEYS[3], ARGV[3], 'expired', deadline_event(state, KEYS[1]), ARGV[4])
  return {'expired', state}
end
if state == 'running' and redis.call('EXISTS', KEYS[3]) == 1 then
  return {'busy', tostring(redis.call('PTTL', KEYS[3]))}
end
redis.call('SET', KEYS[3], ARGV[1], 'PX', ARGV[2])
local attempt = redis.call('HINCRBY', KEYS[1], 'attempt', 1)
local now_ms = math.floor(now * 1000)
if attempt == 1 then redis.call('HSET', KEYS[1], 'started_ms', now_ms) end
redis.call('HSET', KEYS[1], 'state', 'running', 'worker', ARGV[1])
local r = redis.call('HMGET', KEYS[1], 'request', 'provider', 'model', 'stream', 'deadline',
                     'created_ms', 'chain', 'priority')
return {'run', tostring(attempt), r[1], r[2], r[3], r[4], r[5], r[6],
        tostring(redis.call('XLEN', KEYS[2])), tostring(now_ms), r[7] or '[]', r[8] or 'normal'}
"""

# KEYS: job, lease, the next model's queue list. ARGV: owner, provider, model, queue, message.
# Hands a running job to another model's queue: 1 if done, 0 if this worker no longer owns it.
_HANDOFF = """
local f = redis.call('HMGET', KEYS[1], 'state')
if f[1] ~= 'running' or redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'state', 'queued', 'provider', ARGV[2], 'model', ARGV[3],
           'queue', ARGV[4])
redis.call('HINCRBY', KEYS[1], 'failovers', 1)
redis.call('DEL', KEYS[2])
if ARGV[5] ~= '' then redis.call('LPUSH', KEYS[3], ARGV[5]) end
return 1
"""

# KEYS: job, lease, the deferred set. ARGV: owner, wait ms, message, list, job id.
# Parks a running job over a rate limit until the server's clock passes now + wait: no worker
# holds it meanwhile. The attempt it used is given back (it never reached the provider).
_DEFER = """
local f = redis.call('HMGET', KEYS[1], 'state')
if f[1] ~= 'running' or redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
local ready = math.floor(now_seconds() * 1000) + tonumber(ARGV[2])
redis.call('HSET', KEYS[1], 'state', 'deferred', 'ready_ms', ready,
           'requeue', ARGV[3], 'requeue_to', ARGV[4])
redis.call('HINCRBY', KEYS[1], 'attempt', -1)
redis.call('HINCRBY', KEYS[1], 'deferrals', 1)
redis.call('DEL', KEYS[2])
redis.call('ZADD', KEYS[3], ready, ARGV[5])
return 1
"""

# KEYS: the deferred set. ARGV: how many at most, the job key prefix.
# Puts the deferred jobs whose time has come back on their queues. Returns their ids; with a
# broker other than this Redis (no stored message) the caller publishes them.
# (The job keys are derived here, so this script is for a single Redis or Sentinel, not Cluster.)
_RELEASE = """
local now = math.floor(now_seconds() * 1000)
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
local moved = {}
for _, id in ipairs(due) do
  redis.call('ZREM', KEYS[1], id)
  local job = ARGV[2] .. '{' .. id .. '}'
  local f = redis.call('HMGET', job, 'state', 'requeue', 'requeue_to', 'provider', 'priority')
  if f[1] == 'deferred' then
    redis.call('HSET', job, 'state', 'queued')
    if f[2] and f[2] ~= '' then
      redis.call('LPUSH', f[3], f[2])
      redis.call('HDEL', job, 'requeue')
    end
    table.insert(moved, id)
    table.insert(moved, f[4] or '')
    table.insert(moved, f[5] or 'normal')
  end
end
return moved
"""

# KEYS: job, events, lease. ARGV: worker id, channel, event json.
# Returns the event's n, -1 if the job is no longer running, -2 if another worker holds it.
_APPEND = """
local f = redis.call('HMGET', KEYS[1], 'state', 'expire_at_ms')
if f[1] ~= 'running' then return -1 end
if redis.call('GET', KEYS[3]) ~= ARGV[1] then return -2 end
return emit(KEYS[1], KEYS[2], ARGV[2], f[2], ARGV[3])
"""

# KEYS: job, events, lease. ARGV: mode, owner, channel, new state, event json, ttl, grace.
# mode 'worker': the running worker reports its result or error (fenced by the lease);
# mode 'cancel': anyone cancels a job that has not ended; mode 'expire': anyone ends a job whose
# deadline (plus grace) has passed. Returns 1 when this call wrote the terminal event, 0 if the job
# had already ended (or is gone), -2 if fenced out, -3 if the deadline has not passed.
_FINISH = """
local f = redis.call('HMGET', KEYS[1], 'state', 'deadline', 'finished_by')
local state, deadline = f[1], tonumber(f[2])
local mode, event = ARGV[1], ARGV[5]
if not state then return 0 end
if TERMINAL[state] then
  -- The same worker again: its first call ended the job and the reply was lost (a connection
  -- reset). It did write the answer, so it is told so, and records usage for it.
  if mode == 'worker' and f[3] == ARGV[2] then return 1 end
  return 0
end
if mode == 'worker' then
  local holder = redis.call('GET', KEYS[3])
  if holder and holder ~= ARGV[2] then return -2 end
  redis.call('HSET', KEYS[1], 'finished_by', ARGV[2])
elseif mode == 'expire' then
  if not deadline or now_seconds() < deadline + tonumber(ARGV[7]) then return -3 end
  event = deadline_event(state, KEYS[1])
end
finish(KEYS[1], KEYS[2], KEYS[3], ARGV[3], ARGV[4], event, ARGV[6])
return 1
"""

# KEYS: job, lease, job, lease, ... ARGV: worker id, lease ms.
# Renews this worker's leases. A lease that vanished while the job still runs here (a Redis
# restart without persistence) is taken back. Returns the indexes (0-based, per job) of the jobs
# this worker no longer owns: ended, cancelled, expired or taken over.
_RENEW = """
local lost = {}
for i = 1, #KEYS, 2 do
  local job, lease = KEYS[i], KEYS[i + 1]
  local holder = redis.call('GET', lease)
  if holder == ARGV[1] then
    redis.call('PEXPIRE', lease, ARGV[2])
  else
    local f = redis.call('HMGET', job, 'state', 'worker')
    if not holder and f[1] == 'running' and f[2] == ARGV[1] then
      redis.call('SET', lease, ARGV[1], 'PX', ARGV[2])
    elseif (f[1] == 'succeeded' or f[1] == 'failed') and f[2] == ARGV[1] then
      -- answered by this very worker a moment ago: nothing to stop (its usage record is due)
    else
      table.insert(lost, (i - 1) / 2)
    end
  end
end
return lost
"""


@dataclass(frozen=True, slots=True)
class Claim:
    """What a worker learns when it claims a job. ``outcome`` is run/busy/terminal/expired/gone."""

    outcome: str
    attempt: int = 0
    request_json: str = ""
    provider: str = ""
    model: str = ""
    stream: bool = False
    deadline: float = 0.0
    created_ms: int = 0
    events_so_far: int = 0
    started_ms: int = 0
    detail: str = ""
    chain: tuple[str, ...] = ()  # the models that may answer, in order
    priority: str = "normal"


@dataclass(frozen=True, slots=True)
class JobEvent:
    n: int
    stream_id: str
    data: dict[str, Any]

    @property
    def type(self) -> str:
        return str(self.data.get("type"))

    @property
    def is_terminal(self) -> bool:
        return self.type in ("result", "error")


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode()
    return "" if value is None else str(value)


def parse_entry(stream_id: Any, fields: dict[Any, Any]) -> JobEvent:
    decoded = {_text(k): _text(v) for k, v in fields.items()}
    return JobEvent(int(decoded["n"]), _text(stream_id), json.loads(decoded["e"]))


def parse_announcement(payload: Any) -> JobEvent:
    n, stream_id, body = _text(payload).split("\n", 2)
    return JobEvent(int(n), stream_id, json.loads(body))


def parse_inbox_announcement(payload: Any) -> tuple[str, JobEvent]:
    """An announcement repeated on a producer's inbox: the job's channel, then the event."""
    channel, announcement = _text(payload).split("\n", 1)
    return channel, parse_announcement(announcement)


class JobStore:
    """The scripts above, bound to one Redis client."""

    def __init__(
        self,
        redis: Redis,
        *,
        result_ttl: int = 3600,
        wait_replicas: int = 0,
        wait_timeout_ms: int = 1000,
    ) -> None:
        self.redis = redis
        self.result_ttl = result_ttl
        self.wait_replicas = wait_replicas
        self.wait_timeout_ms = wait_timeout_ms
        self._create = redis.register_script(_PRELUDE + _CREATE)
        self._claim = redis.register_script(_PRELUDE + _CLAIM)
        self._append = redis.register_script(_PRELUDE + _APPEND)
        self._finish = redis.register_script(_PRELUDE + _FINISH)
        self._renew = redis.register_script(_RENEW)
        self._handoff = redis.register_script(_HANDOFF)
        self._defer = redis.register_script(_PRELUDE + _DEFER)
        self._release = redis.register_script(_PRELUDE + _RELEASE)

    async def _transition(self, script: AsyncScript, keys: list[str], args: list[Any]) -> Any:
        """Run a transition's script; then, if asked to, WAIT for the replicas to have it."""
        if not self.wait_replicas:
            return await script(keys=keys, args=args)
        async with self.redis.pipeline(transaction=False) as pipe:
            await script(keys=keys, args=args, client=pipe)
            pipe.execute_command("WAIT", self.wait_replicas, self.wait_timeout_ms)
            result, acknowledged = await pipe.execute()
        if int(acknowledged) < self.wait_replicas:
            log.warning(
                "WAIT: %s of %s replicas acknowledged a job transition within %s ms",
                acknowledged,
                self.wait_replicas,
                self.wait_timeout_ms,
            )
        return result

    @staticmethod
    def _job_keys(job_id: str) -> list[str]:
        return [keys.job(job_id), keys.job_events(job_id), keys.job_lease(job_id)]

    async def create(
        self,
        job_id: str,
        expire_at_ms: int,
        fields: dict[str, str],
        *,
        queue_lists: list[str],
        max_depth: int,
        message: str = "",
        push_to: str = "",
    ) -> str:
        """Create the job unless it exists, and push ``message`` onto ``push_to`` with it.

        Returns 'created', 'full' (``queue_lists`` hold ``max_depth`` messages already), or the
        state of the existing job with this id (nothing is pushed then).
        """
        flat: list[str] = []
        for name, value in fields.items():
            flat += [name, value]
        result = await self._transition(
            self._create,
            [keys.job(job_id), *queue_lists, push_to or keys.job(job_id)],
            [expire_at_ms, max_depth, message, *flat],
        )
        return _text(result)

    async def claim(self, job_id: str, worker_id: str, lease_ms: int) -> Claim:
        raw = await self._transition(
            self._claim,
            self._job_keys(job_id),
            [worker_id, lease_ms, keys.job_channel(job_id), self.result_ttl],
        )
        parts = [_text(p) for p in raw]
        if parts[0] != "run":
            return Claim(outcome=parts[0], detail=parts[1] if len(parts) > 1 else "")
        return Claim(
            outcome="run",
            attempt=int(parts[1]),
            request_json=parts[2],
            provider=parts[3],
            model=parts[4],
            stream=parts[5] == "1",
            deadline=float(parts[6]),
            created_ms=int(parts[7] or 0),
            events_so_far=int(parts[8]),
            started_ms=int(parts[9]),
            chain=tuple(json.loads(parts[10])),
            priority=parts[11],
        )

    async def append(self, job_id: str, worker_id: str, event: dict[str, Any]) -> int:
        result = await self._append(
            keys=self._job_keys(job_id),
            args=[worker_id, keys.job_channel(job_id), json.dumps(event, separators=(",", ":"))],
        )
        return int(result)

    async def finish(
        self,
        job_id: str,
        *,
        mode: str,
        state: str,
        event: dict[str, Any] | None = None,
        owner: str = "",
        grace: float = 0.0,
    ) -> int:
        result = await self._transition(
            self._finish,
            self._job_keys(job_id),
            [
                mode,
                owner,
                keys.job_channel(job_id),
                state,
                json.dumps(event or {}, separators=(",", ":")),
                self.result_ttl,
                grace,
            ],
        )
        return int(result)

    async def hand_off(
        self,
        job_id: str,
        owner: str,
        provider: str,
        model: str,
        queue: str,
        message: str = "",
        push_to: str = "",
    ) -> bool:
        """Move a running job to another model's queue (failover); False if no longer ours."""
        result = await self._transition(
            self._handoff,
            [keys.job(job_id), keys.job_lease(job_id), push_to or keys.job(job_id)],
            [owner, provider, model, queue, message],
        )
        return int(result) == 1

    async def defer(
        self, job_id: str, owner: str, wait_ms: int, message: str = "", push_to: str = ""
    ) -> bool:
        """Park a running job for ``wait_ms`` (see ``_DEFER``); False if no longer ours."""
        result = await self._transition(
            self._defer,
            [keys.job(job_id), keys.job_lease(job_id), keys.DEFERRED],
            [owner, wait_ms, message, push_to, job_id],
        )
        return int(result) == 1

    async def release_due(self, limit: int = 200) -> list[tuple[str, str, str]]:
        """Requeue the deferred jobs whose wait is over: (job id, provider, priority) each."""
        flat = [
            _text(v)
            for v in await self._transition(
                self._release, [keys.DEFERRED], [limit, f"{keys.PREFIX}:job:"]
            )
        ]
        return [(flat[i], flat[i + 1], flat[i + 2]) for i in range(0, len(flat), 3)]

    async def renew_leases(self, job_ids: list[str], worker_id: str, lease_ms: int) -> list[str]:
        """Renew the leases; returns the job ids this worker no longer owns."""
        if not job_ids:
            return []
        job_keys: list[str] = []
        for job_id in job_ids:
            job_keys += [keys.job(job_id), keys.job_lease(job_id)]
        lost = await self._renew(keys=job_keys, args=[worker_id, lease_ms])
        return [job_ids[int(index)] for index in lost]

    async def events_after(self, job_id: str, after_id: str = "0-0") -> list[JobEvent]:
        return (await self.events_after_many([(job_id, after_id)]))[0]

    async def events_after_many(self, watched: list[tuple[str, str]]) -> list[list[JobEvent]]:
        """For each ``(job_id, after_id)``: the events after that stream id, in one round trip."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for job_id, after_id in watched:
                start = "-" if after_id == "0-0" else f"({after_id}"
                pipe.xrange(keys.job_events(job_id), min=start, max="+")
            replies = await pipe.execute()
        return [
            [parse_entry(stream_id, fields or {}) for stream_id, fields in entries or []]
            for entries in replies
        ]

    async def status(self, job_id: str) -> dict[str, str]:
        raw = await self.redis.hgetall(keys.job(job_id))
        info = {_text(k): _text(v) for k, v in raw.items()}
        info.pop("request", None)
        return info
