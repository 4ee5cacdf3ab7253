"""The gateway's error taxonomy: every failure a caller can see, one class per condition.

    GatewayError                      code, message, retryable, details
    ├── ConfigurationError            E4000 (reserved: the category's own code)
    │   ├── ModelNotFound             E4001  not in the catalog, or no model and no default
    │   ├── ProviderNotConfigured     E4002  no API key, URL or executable for the provider
    │   ├── InvalidCatalog            E4003  the model catalog is malformed
    │   ├── InvalidSetting            E4004  an environment variable is malformed
    │   └── ModelDisabled             E4005  the catalog disables the model
    ├── RoutingError
    │   ├── NoSuitableModel           E4100  the routing options name no candidate
    │   ├── CapabilityNotSupported    E4101  no candidate offers tools, vision, ...
    │   ├── AllModelsUnavailable      E4102  every candidate's circuit is open
    │   ├── ContextLengthExceeded     E4103  prompt + max_tokens exceed every context window
    │   └── ResidencyNotSatisfiable   E4104  no candidate in the required region
    ├── ProviderError
    │   ├── ProviderFailed            E4200  5xx, 408, 529, connection refused or broken
    │   ├── ProviderRejected          E4201  400, 404, 409, 413, 422: this request, as sent
    │   ├── ProviderTimeout           E4202  the call timed out
    │   └── ProviderAuthFailed        E4203  401, 403
    ├── CacheError                           never fatal: logged and counted, the job goes on
    │   ├── CacheUnavailable          E4300  the cache's Redis failed
    │   └── EmbeddingFailed           E4301  the embedder failed or answered nonsense
    ├── RateLimitError                       limits and admission: the job did not get in
    │   ├── BrokerUnavailable         E4400  the job could not be enqueued (retryable)
    │   ├── RateLimited               E4401  over a rate limit: fail_fast, the deadline, a 429
    │   ├── QuotaExhausted            E4402  the agent's quota is spent
    │   ├── QueueFull                 E4403  past L04_QUEUE_MAX_DEPTH (retryable)
    │   ├── JobStoreUnavailable       E4407  the job store (Redis) is unreachable (retryable)
    │   ├── KeyRefused                E4408  API key missing, unknown, revoked or expired
    │   └── ModelNotAllowed           E4409  the key may not use this model
    ├── JobError                             how a job ended when no limit and no provider did
    │   ├── DeadlineExceeded          E4404 while queued, E4205 while running
    │   ├── JobCancelled              E4405  its caller cancelled it
    │   ├── UnknownJob                E4406  never submitted, or its record expired
    │   └── JobLost                   E4206  claimed more than L04_MAX_DELIVERIES times
    ├── ValidationError
    │   ├── InvalidRequest            E4500  the request (or a batch line) is malformed
    │   ├── InvalidMessages           E4501  a message, tool call or tool result is wrong
    │   ├── InvalidParameters         E4502  sampling, max_tokens, deadline, mock options
    │   └── UnreadableJobMessage      E4503  a queue message set aside (a dead letter's code)
    ├── ResponseError
    │   ├── MalformedResponse         E4600  the provider's body is not what it should be
    │   └── StreamInterrupted         E4604  a stream cut, stalled or ended early
    └── CircuitBreakerError
        ├── CircuitOpen               E4701  the provider's breaker is open
        └── RecoveryFailed            E4702  (reserved)

A code is the wire contract and keeps its number for good; its class is the table's
(:data:`ERROR_CODES`), not its range. The E44xx and E42xx codes of a job's own outcome sit under
:class:`JobError`: ``except RateLimitError`` must not catch a cancellation, nor
``except ProviderError`` a deadline or a lost job. E4206 is a job outcome too: the job was
delivered more times than ``L04_MAX_DELIVERIES`` because the workers holding it died (or it kills
them); no provider need have failed, and failing over or counting provider trouble on it would be
wrong.

An error's class always follows its code: ``RateLimitError("...", code="E4403")`` is a
:class:`QueueFull`, ``GatewayError("...", code="E4405")`` a :class:`JobCancelled`; a code of
another branch (``RateLimitError(code="E4405")``) is a ``ValueError``. A worker that fails a job
writes ``{code, message, retryable, details}`` to the job's event stream (the Lua scripts write
codes too); the client rebuilds the same class from the table with :func:`error_from_payload`,
so ``except QueueFull`` works the same whether the error was raised locally or on a worker.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Self, cast


class GatewayError(Exception):
    """Root of every error the gateway raises. ``code`` is stable; ``message`` is for people."""

    #: The code when none is given. A condition class has its one code here (set from the table
    #: below); a class of several codes has None, and its caller must name one.
    default_code: ClassVar[str | None] = "E4000"

    def __new__(
        cls,
        message: str | None = None,
        *,
        code: str | None = None,
        retryable: bool | None = None,
        details: dict[str, Any] | None = None,
    ) -> Self:
        return cast(Self, super().__new__(_class_for(cls, code or cls.default_code)))

    def __init__(
        self,
        message: str | None = None,
        *,
        code: str | None = None,
        retryable: bool | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        code = code or self.default_code
        spec = ERROR_CODES[str(code)]  # checked by __new__
        self.code = spec.code
        self.message = message or spec.title
        self.retryable = spec.retryable if retryable is None else retryable
        self.details: dict[str, Any] = dict(details or {})
        super().__init__(f"[{spec.code}] {self.message}")

    @classmethod
    def codes(cls) -> frozenset[str]:
        """Every code an error of this class (or a subclass) may carry."""
        return frozenset(c for c, spec in ERROR_CODES.items() if issubclass(spec.error_class, cls))

    @property
    def retry_after(self) -> float | None:
        """Seconds the caller should wait before trying again, when the error says so."""
        value = self.details.get("retry_after")
        return float(value) if value is not None else None

    @property
    def title(self) -> str:
        return ERROR_CODES[self.code].title

    def to_payload(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "message": self.message,
            "retryable": self.retryable,
            "details": self.details,
        }

    def __reduce__(self) -> tuple[Any, ...]:
        # Keeps errors picklable with their keyword-only fields (multiprocessing, logging).
        return (_rebuild, (self.to_payload(),))


# -- categories: what callers catch --------------------------------------------------------------


class ConfigurationError(GatewayError):
    default_code = "E4000"


class RoutingError(GatewayError):
    default_code = "E4100"


class ProviderError(GatewayError):
    default_code = "E4200"


class CacheError(GatewayError):
    default_code = "E4300"


class RateLimitError(GatewayError):
    default_code = "E4401"


class JobError(GatewayError):
    """How a job ended when no limit and no provider ended it: cancelled, past its deadline,
    unknown, or lost by the workers. Until this class existed E4404-E4406 were
    :class:`RateLimitError` and E4205-E4206 :class:`ProviderError`."""

    default_code = None


class ValidationError(GatewayError):
    default_code = "E4500"


class ResponseError(GatewayError):
    default_code = "E4600"


class CircuitBreakerError(GatewayError):
    default_code = "E4701"


# -- conditions: one class each, named for what happened ----------------------------------------


class ModelNotFound(ConfigurationError):
    pass


class ProviderNotConfigured(ConfigurationError):
    pass


class InvalidCatalog(ConfigurationError):
    pass


class InvalidSetting(ConfigurationError):
    pass


class ModelDisabled(ConfigurationError):
    pass


class NoSuitableModel(RoutingError):
    pass


class CapabilityNotSupported(RoutingError):
    pass


class AllModelsUnavailable(RoutingError):
    pass


class ContextLengthExceeded(RoutingError):
    pass


class ResidencyNotSatisfiable(RoutingError):
    pass


class ProviderFailed(ProviderError):
    pass


class ProviderRejected(ProviderError):
    pass


class ProviderTimeout(ProviderError):
    pass


class ProviderAuthFailed(ProviderError):
    pass


class CacheUnavailable(CacheError):
    pass


class EmbeddingFailed(CacheError):
    pass


class BrokerUnavailable(RateLimitError):
    pass


class RateLimited(RateLimitError):
    pass


class QuotaExhausted(RateLimitError):
    pass


class QueueFull(RateLimitError):
    pass


class JobStoreUnavailable(RateLimitError):
    pass


class KeyRefused(RateLimitError):
    """The HTTP front door's virtual key is missing, unknown, revoked or expired (401)."""


class ModelNotAllowed(RateLimitError):
    """The virtual key's ``models`` do not include the model asked for (403)."""


class DeadlineExceeded(JobError):
    """The job's deadline passed: E4404 before a worker started it, E4205 while one ran it."""

    @property
    def started(self) -> bool:
        """True when a worker had started the job (E4205), False when it never left the queue."""
        return self.code == "E4205"


class JobCancelled(JobError):
    pass


class UnknownJob(JobError):
    pass


class JobLost(JobError):
    pass


class InvalidRequest(ValidationError):
    pass


class InvalidMessages(ValidationError):
    pass


class InvalidParameters(ValidationError):
    pass


class UnreadableJobMessage(ValidationError):
    pass


class MalformedResponse(ResponseError):
    pass


class StreamInterrupted(ResponseError):
    pass


class CircuitOpen(CircuitBreakerError):
    pass


class RecoveryFailed(CircuitBreakerError):
    pass


@dataclass(frozen=True, slots=True)
class ErrorSpec:
    code: str
    title: str
    retryable: bool
    error_class: type[GatewayError]
    #: Nothing in the gateway raises or writes it; kept so that the number is never reused.
    reserved: bool = False


# The one table of codes. Titles are what a caller reads first; keep them actionable.
# "added": a code the seed does not name, added inside its ranges.
ERROR_CODES: dict[str, ErrorSpec] = {
    spec.code: spec
    for spec in (
        # Configuration. E4000 is only the default of a bare GatewayError or ConfigurationError:
        # every configuration failure the gateway raises has a code of its own.
        ErrorSpec("E4000", "Configuration error", False, ConfigurationError, reserved=True),
        ErrorSpec("E4001", "Model not found", False, ModelNotFound),
        ErrorSpec("E4002", "Provider not configured", False, ProviderNotConfigured),
        ErrorSpec("E4003", "Invalid model catalog", False, InvalidCatalog),  # added
        ErrorSpec("E4004", "Invalid setting", False, InvalidSetting),  # added
        ErrorSpec("E4005", "Model disabled", False, ModelDisabled),  # added
        # Routing (E4101, E4103 and E4104 added)
        ErrorSpec("E4100", "No suitable model", False, NoSuitableModel),
        ErrorSpec("E4101", "Capability not supported by model", False, CapabilityNotSupported),
        ErrorSpec("E4102", "All models unavailable", True, AllModelsUnavailable),
        ErrorSpec("E4103", "Context length exceeded", False, ContextLengthExceeded),
        ErrorSpec("E4104", "Data residency not satisfiable", False, ResidencyNotSatisfiable),
        # Provider
        ErrorSpec("E4200", "Provider error", True, ProviderFailed),
        ErrorSpec("E4201", "Provider rejected the request", False, ProviderRejected),  # added
        ErrorSpec("E4202", "Provider timeout", True, ProviderTimeout),
        ErrorSpec("E4203", "Provider authentication failed", False, ProviderAuthFailed),
        # Cache
        ErrorSpec("E4300", "Cache error", True, CacheUnavailable),
        ErrorSpec("E4301", "Embedding failed", True, EmbeddingFailed),
        # Rate limit and admission
        ErrorSpec("E4400", "Broker unavailable", True, BrokerUnavailable),  # added
        ErrorSpec("E4401", "Rate limit exceeded", True, RateLimited),
        ErrorSpec("E4402", "Quota exhausted", False, QuotaExhausted),
        ErrorSpec("E4403", "Queue full", True, QueueFull),  # added
        ErrorSpec("E4407", "Job store unavailable", True, JobStoreUnavailable),  # added
        # Added with the HTTP front door's virtual keys (admission by key).
        ErrorSpec("E4408", "API key refused", False, KeyRefused),
        ErrorSpec("E4409", "Model not allowed for this key", False, ModelNotAllowed),
        # Job outcomes (added; numbered in the ranges they were first filed under)
        ErrorSpec("E4404", "Deadline exceeded while queued", False, DeadlineExceeded),
        ErrorSpec("E4205", "Deadline exceeded while running", False, DeadlineExceeded),
        ErrorSpec("E4405", "Job cancelled", False, JobCancelled),
        ErrorSpec("E4406", "Unknown job", False, UnknownJob),  # expired or never submitted
        # Written by job_claim.lua; not retryable: a job that outlived its deliveries may be
        # the one killing the workers.
        ErrorSpec("E4206", "Worker lost the job", False, JobLost),
        # Validation
        ErrorSpec("E4500", "Invalid request", False, InvalidRequest),
        ErrorSpec("E4501", "Invalid messages", False, InvalidMessages),
        ErrorSpec("E4502", "Invalid parameters", False, InvalidParameters),  # added
        # Added: the code of a dead letter's record (workers/dead_letters.py); such a message
        # names no job that could be failed with it.
        ErrorSpec("E4503", "Unreadable job message", False, UnreadableJobMessage),
        # Response
        ErrorSpec("E4600", "Response parse error", False, MalformedResponse),
        ErrorSpec("E4604", "Streaming error", True, StreamInterrupted),
        # Circuit breaker. E4702: a half-open breaker's failed probe reopens it, and the probing
        # job reports the probe's own error (E4200, E4202, E4604), which says more; others see
        # E4701. Reserved for the seed's name.
        ErrorSpec("E4701", "Circuit open", True, CircuitOpen),
        ErrorSpec("E4702", "Recovery failed", True, RecoveryFailed, reserved=True),
    )
}


def _set_default_codes() -> None:
    """A class with one code of its own takes it as its default; one of several needs it named."""
    for cls in {spec.error_class for spec in ERROR_CODES.values()}:
        own = [code for code, spec in ERROR_CODES.items() if spec.error_class is cls]
        cls.default_code = own[0] if len(own) == 1 else None


_set_default_codes()


def _class_for(cls: type[GatewayError], code: str | None) -> type[GatewayError]:
    """The class of an error of ``code`` constructed as ``cls(...)``, or ValueError."""
    if code is None:
        raise ValueError(f"{cls.__name__} needs a code: one of {', '.join(sorted(cls.codes()))}")
    spec = ERROR_CODES.get(code)
    if spec is None:
        raise ValueError(f"unknown gateway error code {code!r}")
    if cls is GatewayError and code == "E4000":
        return GatewayError  # a bare GatewayError stays one, as it always was
    if issubclass(spec.error_class, cls):
        return spec.error_class
    if issubclass(cls, spec.error_class):  # a caller's own subclass of the condition
        return cls
    own = _project_base(cls)
    if own is not cls and issubclass(spec.error_class, own):
        return cls  # a caller's own subclass of a category, with a code of that category
    raise ValueError(f"{code} does not belong to {cls.__name__}")


def _project_base(cls: type[GatewayError]) -> type[GatewayError]:
    """The nearest of the gateway's own classes ``cls`` is or derives from."""
    return next(base for base in cls.__mro__ if base.__module__ == __name__)


def invalid(
    what: str, exc: Any, kind: type[ValidationError] = InvalidRequest, *, under: str = ""
) -> ValidationError:
    """One E45xx error of class ``kind`` for a pydantic ``ValidationError``, naming every field.

    ``under`` is the path of the validated value inside the request (``metadata.mock``).
    """
    problems = []
    for err in exc.errors(include_url=False, include_input=False):
        path = ".".join(str(p) for p in (under, *err["loc"]) if p != "") or "value"
        problems.append(f"{path}: {err['msg']}")
    return kind(f"invalid {what}: " + "; ".join(problems), details={"errors": problems})


def unknown_job(job_id: str) -> UnknownJob:
    return UnknownJob(f"job {job_id} is unknown or its record expired", details={"job_id": job_id})


def error_from_payload(payload: dict[str, Any]) -> GatewayError:
    """Rebuild the typed error a worker reported (the inverse of ``to_payload``).

    A code this version does not know (a newer worker's) becomes E4200, the code kept in
    ``details["unknown_code"]``.
    """
    code = str(payload.get("code", "E4200"))
    details = dict(payload.get("details") or {})
    spec = ERROR_CODES.get(code)
    if spec is None:
        details.setdefault("unknown_code", code)
        spec = ERROR_CODES["E4200"]
    return spec.error_class(
        str(payload.get("message") or spec.title),
        code=spec.code,
        retryable=bool(payload.get("retryable", spec.retryable)),
        details=details,
    )


def _rebuild(payload: dict[str, Any]) -> GatewayError:
    return error_from_payload(payload)
