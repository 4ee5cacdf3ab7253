"""The served OpenAPI document: every endpoint with its body, the door's headers, the errors it
answers in its API's shape, and how to authenticate. The endpoints read their bodies themselves
(to answer bad input in the API's error shape), so FastAPI cannot infer these: they are said
here, once."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from gateway_http.errors import Dialect

RESPONSE_HEADERS = {
    "x-request-id": "The caller's X-Request-Id, or a new one",
    "x-l04-job-id": "The fleet's job for this request",
    "x-l04-provider": "The provider that answered",
    "x-l04-model": "The model that answered",
    "x-l04-cache": "hit or miss (left out of a stream's headers)",
    "x-l04-queue-ms": "Milliseconds the job waited in the queue",
}
REQUEST_HEADERS = [
    ("Idempotency-Key", "The same key from the same virtual key is the same job"),
    ("X-L04-Priority", "high, normal or low (overrides service_tier)"),
    ("X-L04-Timeout", "Seconds the request may take, queue included (default L04_HTTP_TIMEOUT)"),
    ("X-Request-Id", "Your id for the request, echoed in x-request-id"),
]
ERROR_STATUSES = {
    400: "Bad input or an unsupported parameter (E45xx)",
    401: "No key, or an unknown, revoked or expired one (E4408)",
    403: "A model the key may not use (E4409)",
    404: "An unknown model (E4001)",
    409: "The job was cancelled by someone else (E4405)",
    413: "The body is over L04_HTTP_MAX_BODY",
    415: "The body is not application/json",
    429: "Over a rate limit past the deadline (E4401) or a spent quota (E4402); see Retry-After",
    502: "The provider failed (E42xx, E46xx)",
    503: "The fleet cannot take the job now (E4400, E4403, E4407, E4102, E4701); see Retry-After",
    504: "The deadline passed (E4404 queued, E4205 running)",
}
OPENAI_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "param", "code"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": "string", "pattern": "^E4[0-9]{3}$"},
            },
        }
    },
}
ANTHROPIC_ERROR = {
    "type": "object",
    "required": ["type", "error"],
    "properties": {
        "type": {"const": "error"},
        "error": {
            "type": "object",
            "required": ["type", "message"],
            "properties": {"type": {"type": "string"}, "message": {"type": "string"}},
        },
    },
}


def operation(body: Any, dialect: Dialect, *, streams: bool) -> dict[str, Any]:
    """``openapi_extra`` of an endpoint that creates a job from ``body`` (a pydantic model)."""
    success: dict[str, Any] = {"application/json": {"schema": {"type": "object"}}}
    if streams:
        success["text/event-stream"] = {"schema": {"type": "string"}}
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": body.model_json_schema()}},
        },
        "parameters": [
            {
                "name": name,
                "in": "header",
                "required": False,
                "description": text,
                "schema": {"type": "string"},
            }
            for name, text in REQUEST_HEADERS
        ],
        "responses": {
            "200": {
                "description": "The answer (with stream: true, Server-Sent Events)",
                "headers": {
                    name: {"description": text, "schema": {"type": "string"}}
                    for name, text in RESPONSE_HEADERS.items()
                },
                "content": success,
            },
            **{str(k): v for k, v in error_responses(dialect).items()},
        },
    }


def error_responses(
    dialect: Dialect, only: tuple[int, ...] | None = None
) -> dict[int | str, dict[str, Any]]:
    schema = ANTHROPIC_ERROR if dialect == "anthropic" else OPENAI_ERROR
    return {
        str(status): {
            "description": text,
            "content": {"application/json": {"schema": schema}},
        }
        for status, text in ERROR_STATUSES.items()
        if only is None or status in only
    }


def document(app: FastAPI) -> dict[str, Any]:
    """The document, with the keys' security schemes and without FastAPI's 422 (never sent:
    the door answers bad input with 400 in the API's shape)."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    schema = get_openapi(
        title=app.title, version=app.version, summary=app.summary, routes=app.routes
    )
    schema.setdefault("components", {})["securitySchemes"] = {
        "bearer": {"type": "http", "scheme": "bearer", "description": "A virtual key, sk-l04-..."},
        "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"},
    }
    open_paths = {"/health", "/ready", "/metrics"}
    for path, methods in schema.get("paths", {}).items():
        for spec in methods.values():
            spec.get("responses", {}).pop("422", None)
            if path not in open_paths:
                spec["security"] = [{"bearer": []}, {"apiKey": []}]
    for unused in ("HTTPValidationError", "ValidationError"):
        schema.get("components", {}).get("schemas", {}).pop(unused, None)
    app.openapi_schema = schema
    return schema
