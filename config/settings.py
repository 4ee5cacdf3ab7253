"""Settings from the environment, under the seed's variable names.

Secrets are ``SecretStr``: their ``repr`` and ``str`` print ``**********``, so a settings object
can be logged without leaking a key. Only adapters call ``get_secret_value()``.

Everything the seed did not name is prefixed ``L04_``.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated, Any, Literal

import pydantic
from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from gateway_core.errors import InvalidSetting
from gateway_core.queues import PROVIDERS
from gateway_core.redis_url import (
    SentinelOptions,
    amqp_url_problem,
    broker_kind,
    is_sentinel_url,
    redis_url_problem,
)
from gateway_core.webhooks import secret_problem, webhook_url_problem


class GatewaySettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="", case_sensitive=False, extra="ignore", populate_by_name=True
    )

    # Redis: job state, events, limits. The broker defaults to the same server.
    # Not in the settings' repr: a URL may carry a password.
    redis_url: str = Field(default="redis://localhost:6379/0", alias="REDIS_URL", repr=False)
    broker_url: str | None = Field(default=None, alias="L04_BROKER_URL", repr=False)
    # Any of the Redis URLs may be Celery's Sentinel form, sentinel://h1:26379;sentinel://h2:26379
    # (the master's password and db in the first part): then the master's name is required.
    redis_sentinel_master: str | None = Field(default=None, alias="L04_REDIS_SENTINEL_MASTER")
    redis_sentinel_password: SecretStr | None = Field(
        default=None, alias="L04_REDIS_SENTINEL_PASSWORD"
    )
    # WAIT for this many replicas after submit and each job transition (0: off), at most this
    # long. Replication is asynchronous: without it a failover can lose the last writes.
    redis_wait_replicas: int = Field(default=0, ge=0, alias="L04_REDIS_WAIT_REPLICAS")
    redis_wait_timeout_ms: int = Field(default=1000, gt=0, alias="L04_REDIS_WAIT_TIMEOUT_MS")

    # Provider credentials and endpoints. *_BASE_URL are read as the official SDKs read them.
    openai_api_key: SecretStr | None = Field(default=None, alias="OPENAI_API_KEY")
    openai_base_url: str = Field(default="https://api.openai.com/v1", alias="OPENAI_BASE_URL")
    anthropic_api_key: SecretStr | None = Field(default=None, alias="ANTHROPIC_API_KEY")
    anthropic_base_url: str = Field(default="https://api.anthropic.com", alias="ANTHROPIC_BASE_URL")
    ollama_url: str = Field(default="http://localhost:11434", alias="OLLAMA_URL")
    ollama_embedding_model: str = Field(default="nomic-embed-text", alias="OLLAMA_EMBEDDING_MODEL")
    ollama_embedding_dimensions: int = Field(default=768, gt=0, alias="OLLAMA_EMBEDDING_DIMENSIONS")
    claude_code_path: str = Field(default="claude", alias="L04_CLAUDE_CODE_PATH")
    provider_timeout: float = Field(default=60.0, gt=0, alias="L04_PROVIDER_TIMEOUT")
    http_max_connections: int = Field(default=2000, gt=0, alias="L04_HTTP_MAX_CONNECTIONS")

    # Caching
    cache_enabled: bool = Field(default=True, alias="CACHE_ENABLED")
    cache_ttl: int = Field(default=3600, gt=0, alias="CACHE_TTL")
    cache_similarity_threshold: float = Field(
        default=0.85, ge=0.0, le=1.0, alias="CACHE_SIMILARITY_THRESHOLD"
    )

    # Where the cache lives (default: the job-state Redis), and its own bounds, so that a
    # growing cache never fills the Redis that holds the queues (it runs with noeviction).
    cache_redis_url: str | None = Field(default=None, alias="L04_CACHE_REDIS_URL", repr=False)
    cache_max_entries: int = Field(default=100_000, gt=0, alias="L04_CACHE_MAX_ENTRIES")
    semantic_cache_max_entries: int = Field(
        default=10_000, gt=0, alias="L04_SEMANTIC_CACHE_MAX_ENTRIES"
    )
    # Which provider embeds questions for the semantic cache: ollama (OLLAMA_EMBEDDING_*),
    # openai (any OpenAI-compatible /v1/embeddings) or none.
    embedding_provider: Literal["ollama", "openai", "none"] = Field(
        default="ollama", alias="L04_EMBEDDING_PROVIDER"
    )
    openai_embedding_model: str = Field(
        default="text-embedding-3-small", alias="L04_OPENAI_EMBEDDING_MODEL"
    )

    # Rate limiting
    rate_limit_requests_per_minute: int = Field(
        default=60, gt=0, alias="RATE_LIMIT_REQUESTS_PER_MINUTE"
    )
    rate_limit_tokens_per_minute: int = Field(
        default=100_000, gt=0, alias="RATE_LIMIT_TOKENS_PER_MINUTE"
    )
    # The window the limits count over, in seconds ("per minute" is per this window). Shorter
    # windows are for tests and demos.
    rate_limit_window: float = Field(default=60.0, gt=0, alias="L04_RATE_LIMIT_WINDOW")

    # Circuit breaker
    circuit_breaker_failure_threshold: int = Field(
        default=5, gt=0, alias="CIRCUIT_BREAKER_FAILURE_THRESHOLD"
    )
    circuit_breaker_recovery_timeout: float = Field(
        default=60.0, gt=0, alias="CIRCUIT_BREAKER_RECOVERY_TIMEOUT"
    )

    # L01 data layer
    l01_base_url: str = Field(default="http://localhost:8001", alias="L01_BASE_URL")
    l01_api_key: SecretStr | None = Field(default=None, alias="L01_API_KEY")
    # Usage events for L01: kept in a Redis stream (the outbox, the newest ones up to
    # L04_USAGE_OUTBOX_MAX) until L01 has them. False: no events at all.
    usage_events: bool = Field(default=True, alias="L04_USAGE_EVENTS")
    usage_outbox_max: int = Field(default=100_000, gt=0, alias="L04_USAGE_OUTBOX_MAX")
    l01_events_path: str = Field(default="/api/v1/events", alias="L04_L01_EVENTS_PATH")

    # Webhooks (README "Webhooks"): every event goes to L04_WEBHOOK_URL, signed with
    # L04_WEBHOOK_SECRET (whsec_ and base64, as OpenAI's); a virtual key's own webhook (`l04 keys
    # create --webhook-url`) gets its objects' events too. A delivery that fails is retried with
    # a backoff from L04_WEBHOOK_BACKOFF_S (doubling, capped at an hour, jittered) for
    # L04_WEBHOOK_RETRY_HOURS after the event, then dropped. Each attempt may take
    # L04_WEBHOOK_TIMEOUT seconds; a delivery whose worker died is tried again by another after
    # that plus WEBHOOK_LEASE_MARGIN_S.
    webhook_url: str | None = Field(default=None, alias="L04_WEBHOOK_URL")
    webhook_secret: SecretStr | None = Field(default=None, alias="L04_WEBHOOK_SECRET")
    webhook_retry_hours: float = Field(default=72.0, gt=0, le=8760, alias="L04_WEBHOOK_RETRY_HOURS")
    webhook_backoff_s: float = Field(default=5.0, gt=0, le=3600, alias="L04_WEBHOOK_BACKOFF_S")
    webhook_timeout: float = Field(default=10.0, gt=0, le=300, alias="L04_WEBHOOK_TIMEOUT")

    # Worker logs: one JSON object per line with the job's ids ("json"), or Celery's text.
    log_format: Literal["json", "text"] = Field(default="json", alias="L04_LOG_FORMAT")

    # Show a redacted preview of the prompt in the task's arguments (Flower, Celery's logs).
    # Off by default: the broker message and everything that displays it carry only the job id.
    task_show_prompt: bool = Field(default=False, alias="L04_TASK_SHOW_PROMPT")
    # Celery task events (received, succeeded, ...) for Flower's task list. Each costs the
    # worker's consumer thread a Redis round trip: with them off one worker took 387 jobs/s
    # instead of 244-287 (BENCHMARKS.md), and Flower then shows workers but no tasks.
    task_events: bool = Field(default=True, alias="L04_TASK_EVENTS")

    # Prometheus: the port a worker serves /metrics on (``l04 worker --metrics-port`` wins).
    metrics_port: int | None = Field(default=None, ge=0, le=65535, alias="L04_METRICS_PORT")
    # Worker processes ``l04 worker`` runs under one supervisor: a number, or "auto" for the
    # cores the host gives it (``l04 worker --processes`` wins).
    worker_processes: int | Literal["auto"] = Field(default=1, alias="L04_WORKER_PROCESSES")

    # Queues and jobs
    catalog_path: str | None = Field(default=None, alias="L04_CATALOG")
    queue_max_depth: int = Field(default=100_000, gt=0, alias="L04_QUEUE_MAX_DEPTH")
    result_ttl: int = Field(default=3600, gt=0, alias="L04_RESULT_TTL")
    # A job held by a dead worker is handed to another after at most this many seconds.
    visibility_timeout: float = Field(default=30.0, ge=2.0, alias="L04_VISIBILITY_TIMEOUT")
    # A terminal event written by the client when a job's worker never reports back.
    deadline_grace: float = Field(default=2.0, ge=0.0, alias="L04_DEADLINE_GRACE")
    # A job claimed this many times without being finished (each worker that took it died)
    # fails with E4206 on its next claim: a job that kills workers stops; one death never does.
    max_deliveries: int = Field(default=10, ge=1, alias="L04_MAX_DELIVERIES")
    # A job whose record says queued while its message is on no queue list and held by no
    # worker (Redis broker only) is put back on its queue within this many seconds, once; lost
    # again, it fails with E4206 (workers/orphans.py). Half the default job timeout (120 s), so
    # such a job is still answered before its deadline.
    orphan_after: float = Field(default=60.0, ge=1.0, alias="L04_ORPHAN_AFTER")
    # The providers this worker serves and probes (`l04 worker --providers` sets it).
    worker_providers: Annotated[list[str], NoDecode] = Field(
        default_factory=list, alias="L04_WORKER_PROVIDERS"
    )

    # The HTTP front door (`l04 serve`; its --host and --port win).
    http_host: str = Field(default="127.0.0.1", alias="L04_HTTP_HOST")
    http_port: int = Field(default=8004, ge=0, le=65535, alias="L04_HTTP_PORT")
    # The largest body a JSON endpoint reads (413 past it).
    http_max_body: int = Field(default=20 * 1024 * 1024, gt=0, alias="L04_HTTP_MAX_BODY")
    # A request's deadline when it sends no X-L04-Timeout header.
    http_timeout: float = Field(default=120.0, gt=0, le=86_400, alias="L04_HTTP_TIMEOUT")
    # On SIGTERM: how long open streams and requests in flight may take to finish.
    http_drain_grace: float = Field(default=30.0, ge=0, alias="L04_HTTP_DRAIN_GRACE")

    # The Batch API's file store (POST /v1/files), in Redis: every file's bytes together may not
    # pass files_max_bytes (a full store answers 413, never a Redis out of memory); one file may
    # not pass file_max_bytes nor a batch input batch_max_lines lines (OpenAI's limits); a file
    # expires files_ttl seconds after its upload (output and error files after their batch ends).
    files_max_bytes: int = Field(default=1024**3, gt=0, alias="L04_FILES_MAX_BYTES")
    file_max_bytes: int = Field(default=200 * 1024**2, gt=0, alias="L04_FILE_MAX_BYTES")
    batch_max_lines: int = Field(default=50_000, gt=0, alias="L04_BATCH_MAX_LINES")
    files_ttl: float = Field(default=30 * 86_400.0, gt=0, le=366 * 86_400, alias="L04_FILES_TTL")
    # Every `l04 serve` drives HTTP batches, each under a lease in Redis that its driver renews;
    # a server that dies loses its leases, and another takes each batch over within two lease
    # periods. batch_window: a batch's jobs queued or running at a time.
    batch_lease_s: float = Field(default=30.0, ge=1, le=3600, alias="L04_BATCH_LEASE_S")
    batch_window: int = Field(default=256, ge=1, alias="L04_BATCH_WINDOW")

    # The in-process mock provider's defaults (a request may override them in metadata["mock"]).
    mock_latency_ms: float = Field(default=0.0, ge=0.0, alias="L04_MOCK_LATENCY_MS")
    mock_chunks: int = Field(default=5, ge=1, alias="L04_MOCK_CHUNKS")
    mock_failure_rate: float = Field(default=0.0, ge=0.0, le=1.0, alias="L04_MOCK_FAILURE_RATE")

    @field_validator("redis_url", "cache_redis_url")
    @classmethod
    def _redis_url(cls, url: str | None) -> str | None:
        if url is not None and (why := redis_url_problem(url)) is not None:
            raise ValueError(why)
        return url

    @field_validator("webhook_url")
    @classmethod
    def _webhook_url(cls, url: str | None) -> str | None:
        if url is None or url == "":
            return None
        if (why := webhook_url_problem(url)) is not None:
            raise ValueError(why)
        return url

    @field_validator("webhook_secret")
    @classmethod
    def _webhook_secret(cls, secret: SecretStr | None) -> SecretStr | None:
        if secret is None or secret.get_secret_value() == "":
            return None
        if (why := secret_problem(secret.get_secret_value())) is not None:
            raise ValueError(why)
        return secret

    @model_validator(mode="after")
    def _webhook_pair(self) -> GatewaySettings:
        if (self.webhook_url is None) != (self.webhook_secret is None):
            raise ValueError(
                "L04_WEBHOOK_URL and L04_WEBHOOK_SECRET: set both (events are always signed) "
                "or neither"
            )
        return self

    @field_validator("worker_providers", mode="before")
    @classmethod
    def _provider_list(cls, value: Any) -> Any:
        """``mock,openai`` (as ``l04 worker --providers`` takes it); each must be a provider."""
        if isinstance(value, str):
            value = [name.strip() for name in value.split(",") if name.strip()]
        unknown = [name for name in value if name not in PROVIDERS]
        if unknown:
            raise ValueError(
                f"unknown provider(s) {', '.join(unknown)}; choose from {', '.join(PROVIDERS)}"
            )
        return value

    @field_validator("worker_processes", mode="before")
    @classmethod
    def _worker_processes(cls, value: Any) -> int | Literal["auto"]:
        return parse_worker_processes(value)

    @field_validator("broker_url")
    @classmethod
    def _broker_url(cls, url: str | None) -> str | None:
        if url is None:
            return url
        kind = broker_kind(url)
        if kind == "redis":
            return cls._redis_url(url)
        if kind == "redis+socket":
            return url
        if kind == "amqp":
            if (why := amqp_url_problem(url)) is not None:
                raise ValueError(why)
            return url
        raise ValueError(
            "a broker URL is redis://, rediss://, sentinel://, redis+socket:// (a Unix socket) "
            "or amqp:// (RabbitMQ)"
        )

    @model_validator(mode="after")
    def _sentinel_master_named(self) -> GatewaySettings:
        urls = (self.redis_url, self.broker_url or "", self.cache_redis_url or "")
        if any(is_sentinel_url(url) for url in urls) and not self.redis_sentinel_master:
            raise ValueError(
                "L04_REDIS_SENTINEL_MASTER: must name the Sentinel master when a Redis URL is "
                "sentinel://"
            )
        return self

    @property
    def sentinel(self) -> SentinelOptions:
        """The master's name and the Sentinels' password, for clients of a sentinel:// URL."""
        password = self.redis_sentinel_password
        return SentinelOptions(
            master=self.redis_sentinel_master,
            password=password.get_secret_value() if password is not None else None,
        )

    def default_model_limits(self) -> tuple[int | None, int | None]:
        """RPM and TPM for a model whose catalog entry sets none: the RATE_LIMIT_* variables.

        They apply once set (in the environment or as arguments). Left unset, a model is limited
        only by its catalog entry: the seed's 60 requests per minute, imposed silently on every
        model, would throttle a local mock and most real accounts alike.
        """
        explicit = self.model_fields_set
        return (
            self.rate_limit_requests_per_minute
            if "rate_limit_requests_per_minute" in explicit
            else None,
            self.rate_limit_tokens_per_minute
            if "rate_limit_tokens_per_minute" in explicit
            else None,
        )

    @property
    def effective_broker_url(self) -> str:
        return self.broker_url or self.redis_url

    @property
    def lease_ttl(self) -> float:
        """How long a job's lease outlives its worker's last heartbeat."""
        return max(1.0, self.visibility_timeout / 3)

    @property
    def heartbeat_interval(self) -> float:
        return max(0.25, self.lease_ttl / 3)


def parse_worker_processes(value: object) -> int | Literal["auto"]:
    """A count of worker processes as ``--processes`` and ``L04_WORKER_PROCESSES`` take it: a
    positive whole number, or ``auto`` (one per core); anything else is a ``ValueError``."""
    text = str(value).strip().lower()
    if text == "auto":
        return "auto"
    if isinstance(value, bool) or not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise ValueError(f"must be a positive whole number or 'auto', not {str(value)!r}")
    return int(text)


def load_settings(**overrides: Any) -> GatewaySettings:
    """Read settings; a malformed variable fails here, naming the variable (E4004).

    The E4004 is raised outside the ``except`` block: pydantic's error holds the input (a URL
    with its password), and would otherwise ride along as the exception's ``__context__``.
    """
    problems: list[str] = []
    try:
        return GatewaySettings(**overrides)
    except pydantic.ValidationError as exc:
        for err in exc.errors(include_url=False, include_input=False):
            message = err["msg"].removeprefix("Value error, ")
            if not err["loc"]:  # a check across variables names them in its message
                problems.append(message)
                continue
            name = str(err["loc"][0])
            field = GatewaySettings.model_fields.get(name)
            env = (field.alias if field and field.alias else name).upper()
            problems.append(f"{env}: {message}")
    raise InvalidSetting("invalid setting: " + "; ".join(problems), details={"errors": problems})


@lru_cache(maxsize=1)
def get_settings() -> GatewaySettings:
    return load_settings()
