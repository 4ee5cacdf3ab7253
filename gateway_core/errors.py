"""The gateway's error taxonomy: every failure a caller can see, with an E4xxx code.

    GatewayError                       code, message, retryable, details
    ├── ConfigurationError             E4000-E4099  model / provider / catalog / settings
    ├── RoutingError                   E4100-E4199  no model fits, all candidates down
    ├── ProviderError                  E4200-E4299  upstream failed, timed out, refused auth
    ├── CacheError                     E4300-E4399  cache or embedding failure (never fatal)
    ├── RateLimitError                 E4400-E4499  limits, quotas, queue admission, deadlines
    ├── ValidationError                E4500-E4599  the request itself is wrong
    ├── ResponseError                  E4600-E4699  the provider answered something unusable
    └── CircuitBreakerError            E4700-E4799  provider fenced off by its breaker

A worker that fails a job writes ``{code, message, retryable, details}`` to the job's event
stream; the client rebuilds the same subclass from the code with :func:`error_from_payload`, so
``except RateLimitError`` works the same whether the error was raised locally or on a worker.

Codes the seed does not name are added inside its ranges (marked "added" below).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class ErrorSpec:
    code: str
    title: str
    retryable: bool


# The one table of codes. Titles are what a caller reads first; keep them actionable.
ERROR_CODES: dict[str, ErrorSpec] = {
    spec.code: spec
    for spec in (
        # Configuration
        ErrorSpec("E4000", "Configuration error", False),
        ErrorSpec("E4001", "Model not found", False),
        ErrorSpec("E4002", "Provider not configured", False),
        ErrorSpec("E4003", "Invalid model catalog", False),  # added
        ErrorSpec("E4004", "Invalid setting", False),  # added
        ErrorSpec("E4005", "Model disabled", False),  # added
        # Routing
        ErrorSpec("E4100", "No suitable model", False),
        ErrorSpec("E4101", "Capability not supported by model", False),  # added
        ErrorSpec("E4102", "All models unavailable", True),
        ErrorSpec("E4103", "Context length exceeded", False),  # added
        ErrorSpec("E4104", "Data residency not satisfiable", False),  # added
        # Provider
        ErrorSpec("E4200", "Provider error", True),
        ErrorSpec("E4201", "Provider rejected the request", False),  # added: 400/404/422
        ErrorSpec("E4202", "Provider timeout", True),
        ErrorSpec("E4203", "Provider authentication failed", False),
        ErrorSpec("E4205", "Deadline exceeded while running", False),  # added
        ErrorSpec("E4206", "Worker lost the job", True),  # added
        # Cache
        ErrorSpec("E4300", "Cache error", True),
        ErrorSpec("E4301", "Embedding failed", True),
        # Rate limit and admission
        ErrorSpec("E4400", "Admission error", True),  # added
        ErrorSpec("E4401", "Rate limit exceeded", True),
        ErrorSpec("E4402", "Quota exhausted", False),
        ErrorSpec("E4403", "Queue full", True),  # added
        ErrorSpec("E4404", "Deadline exceeded while queued", False),  # added
        ErrorSpec("E4405", "Job cancelled", False),  # added
        ErrorSpec("E4406", "Unknown job", False),  # added: expired or never submitted
        ErrorSpec("E4407", "Job store unavailable", True),  # added: Redis unreachable, retry
        # Validation
        ErrorSpec("E4500", "Invalid request", False),
        ErrorSpec("E4501", "Invalid messages", False),
        ErrorSpec("E4502", "Invalid parameters", False),  # added: sampling, max_tokens
        ErrorSpec("E4503", "Unreadable job message", False),  # added: set aside, not run
        # Response
        ErrorSpec("E4600", "Response parse error", False),
        ErrorSpec("E4604", "Streaming error", True),
        # Circuit breaker
        ErrorSpec("E4701", "Circuit open", True),
        ErrorSpec("E4702", "Recovery failed", True),
    )
}


class GatewayError(Exception):
    """Root of every error the gateway raises. ``code`` is stable; ``message`` is for people."""

    code_range: tuple[int, int] = (4000, 4999)
    default_code = "E4000"

    def __init__(
        self,
        message: str | None = None,
        *,
        code: str | None = None,
        retryable: bool | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        code = code or self.default_code
        spec = ERROR_CODES.get(code)
        if spec is None:
            raise ValueError(f"unknown gateway error code {code!r}")
        low, high = self.code_range
        if not low <= int(code[1:]) <= high:
            raise ValueError(f"{code} does not belong to {type(self).__name__}")
        self.code = code
        self.message = message or spec.title
        self.retryable = spec.retryable if retryable is None else retryable
        self.details: dict[str, Any] = dict(details or {})
        super().__init__(f"[{code}] {self.message}")

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


class ConfigurationError(GatewayError):
    code_range = (4000, 4099)
    default_code = "E4000"


class RoutingError(GatewayError):
    code_range = (4100, 4199)
    default_code = "E4100"


class ProviderError(GatewayError):
    code_range = (4200, 4299)
    default_code = "E4200"


class CacheError(GatewayError):
    code_range = (4300, 4399)
    default_code = "E4300"


class RateLimitError(GatewayError):
    code_range = (4400, 4499)
    default_code = "E4401"


class ValidationError(GatewayError):
    code_range = (4500, 4599)
    default_code = "E4500"


class ResponseError(GatewayError):
    code_range = (4600, 4699)
    default_code = "E4600"


class CircuitBreakerError(GatewayError):
    code_range = (4700, 4799)
    default_code = "E4701"


_CATEGORIES: tuple[type[GatewayError], ...] = (
    ConfigurationError,
    RoutingError,
    ProviderError,
    CacheError,
    RateLimitError,
    ValidationError,
    ResponseError,
    CircuitBreakerError,
)


def invalid(what: str, exc: Any, code: str, *, under: str = "") -> ValidationError:
    """One E45xx error for a pydantic ``ValidationError``, naming every field that failed.

    ``under`` is the path of the validated value inside the request (``metadata.mock``).
    """
    problems = []
    for err in exc.errors(include_url=False, include_input=False):
        path = ".".join(str(p) for p in (under, *err["loc"]) if p != "") or "value"
        problems.append(f"{path}: {err['msg']}")
    return ValidationError(
        f"invalid {what}: " + "; ".join(problems), code=code, details={"errors": problems}
    )


def unknown_job(job_id: str) -> RateLimitError:
    return RateLimitError(
        f"job {job_id} is unknown or its record expired", code="E4406", details={"job_id": job_id}
    )


def error_class_for(code: str) -> type[GatewayError]:
    number = int(code[1:])
    for cls in _CATEGORIES:
        low, high = cls.code_range
        if low <= number <= high:
            return cls
    return GatewayError


def error_from_payload(payload: dict[str, Any]) -> GatewayError:
    """Rebuild the typed error a worker reported (the inverse of ``to_payload``)."""
    code = str(payload.get("code", "E4200"))
    if code not in ERROR_CODES:
        code = "E4200"
    cls = error_class_for(code)
    return cls(
        str(payload.get("message") or ERROR_CODES[code].title),
        code=code,
        retryable=bool(payload.get("retryable", ERROR_CODES[code].retryable)),
        details=dict(payload.get("details") or {}),
    )


def _rebuild(payload: dict[str, Any]) -> GatewayError:
    return error_from_payload(payload)
