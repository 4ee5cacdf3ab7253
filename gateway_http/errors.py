"""Gateway errors as HTTP answers: the status the SDKs map to their exception classes, and the
body in each API's own shape.

OpenAI: ``{"error": {"message", "type", "param", "code"}}`` with ``code`` always the E4xxx code.
Anthropic: ``{"type": "error", "error": {"type", "message"}}`` with the E4xxx code in the message
(its error object has no code field) and the type that Anthropic gives the status.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any, Literal

from gateway_core.errors import GatewayError
from gateway_core.http_status import STATUS_BY_CODE as STATUS_BY_CODE

Dialect = Literal["openai", "anthropic"]

#: The codes that are about the request's ``model``: OpenAI names it as their ``param``.
MODEL_CODES = frozenset({"E4001", "E4005", "E4409"})

#: The statuses that always carry ``Retry-After`` (seconds), from the error's details or 1.
RETRY_AFTER_STATUSES = frozenset({429, 503})

_OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "conflict_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    429: "rate_limit_error",
    502: "api_error",
    503: "service_unavailable_error",
    504: "timeout_error",
}
_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    409: "invalid_request_error",
    413: "request_too_large",
    415: "invalid_request_error",
    429: "rate_limit_error",
    502: "api_error",
    503: "overloaded_error",
    504: "api_error",
}


@dataclass(frozen=True, slots=True)
class HttpError:
    """One error answer: status, code, message, and where it came from in the request."""

    status: int
    code: str
    message: str
    param: str | None = None
    retry_after: float | None = None

    @classmethod
    def of(cls, error: GatewayError, param: str | None = None) -> HttpError:
        status = STATUS_BY_CODE.get(error.code, 502)
        retry_after = error.retry_after
        if retry_after is None and error.details.get("resets_in") is not None:
            retry_after = float(error.details["resets_in"])  # a spent quota: when it resets
        if retry_after is None and status in RETRY_AFTER_STATUSES:
            retry_after = 1.0
        if param is None:
            named = error.details.get("param") or error.details.get("field")
            param = str(named) if named else None
        if param is None and error.code in MODEL_CODES:
            param = "model"
        if param is None and error.details.get("errors"):
            # A validation error's first problem, "stop: List should have at most 16 items".
            param = str(error.details["errors"][0]).split(":", 1)[0] or None
        return cls(status, error.code, error.message, param, retry_after)

    @property
    def openai_type(self) -> str:
        if self.code == "E4402":
            return "insufficient_quota"
        return _OPENAI_TYPES.get(self.status, "api_error")

    @property
    def anthropic_type(self) -> str:
        return _ANTHROPIC_TYPES.get(self.status, "api_error")

    def body(self, dialect: Dialect) -> dict[str, Any]:
        if dialect == "anthropic":
            return {
                "type": "error",
                "error": {"type": self.anthropic_type, "message": f"[{self.code}] {self.message}"},
            }
        return {
            "error": {
                "message": self.message,
                "type": self.openai_type,
                "param": self.param,
                "code": self.code,
            }
        }

    def headers(self) -> dict[str, str]:
        if self.retry_after is None:
            return {}
        return {"retry-after": str(max(1, math.ceil(self.retry_after)))}

    def sse(self, dialect: Dialect) -> bytes:
        """The error as the last event of a stream that had already started."""
        data = json.dumps(self.body(dialect), separators=(",", ":"))
        if dialect == "anthropic":
            return f"event: error\ndata: {data}\n\n".encode()
        return f"data: {data}\n\n".encode()


def request_error(
    status: int, message: str, *, code: str = "E4500", param: str | None = None
) -> HttpError:
    """An error of the HTTP layer itself (a body too large, not JSON, a wrong content type)."""
    return HttpError(status, code, message, param)
