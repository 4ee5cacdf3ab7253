"""Reading a request body: its size, its content type, JSON, and a model of its shape.

Every failure here is a 4xx with a message that says what was wrong; nothing a client sends
reaches the fleet unless it parsed and validated.
"""

from __future__ import annotations

import json
import math
import sys
from typing import Any, TypeVar

import pydantic
from starlette.requests import ClientDisconnect, Request

from gateway_http.door import ClientGone
from gateway_http.errors import HttpError, request_error

Model = TypeVar("Model", bound=pydantic.BaseModel)


JSON_MEDIA = frozenset({"", "application/json", "application/x-www-form-urlencoded"})


class BodyRefused(Exception):
    """The request cannot be read; carries the answer to send."""

    def __init__(self, error: HttpError) -> None:
        super().__init__(error.message)
        self.error = error


async def read_json(request: Request, max_bytes: int) -> dict[str, Any]:
    """The body as a JSON object, or :class:`BodyRefused` (413, 415, 400), or
    :class:`ClientGone` if the client disconnected before it sent the whole body."""
    declared = request.headers.get("content-length")
    if declared is not None:
        try:
            too_big = int(declared) > max_bytes
        except ValueError:
            raise BodyRefused(request_error(400, "Content-Length is not a number")) from None
        if too_big:
            raise BodyRefused(_too_large(max_bytes))
    content_type = request.headers.get("content-type", "application/json")
    media = content_type.split(";", 1)[0].strip().lower()
    # curl -d sends application/x-www-form-urlencoded unless told otherwise: read it as JSON.
    if media not in JSON_MEDIA and not media.endswith("+json"):
        raise BodyRefused(request_error(415, f"the body must be application/json, not {media!r}"))
    chunks: list[bytes] = []
    size = 0
    try:
        async for chunk in request.stream():
            size += len(chunk)
            if size > max_bytes:
                raise BodyRefused(_too_large(max_bytes))
            chunks.append(chunk)
    except ClientDisconnect:
        raise ClientGone from None  # it left before its body ended: no answer, no error
    raw = b"".join(chunks)
    try:
        data = json.loads(raw, parse_constant=_constant, parse_float=_finite)
    except _NumberRefused as exc:
        raise BodyRefused(request_error(400, f"the body is not JSON ({exc})")) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        message = "the body is empty" if not raw.strip() else f"the body is not JSON ({exc})"
        raise BodyRefused(request_error(400, message)) from None
    except ValueError:
        # Not a JSONDecodeError: an integer past Python's limit on the digits it converts.
        message = f"a number in the body has over {sys.get_int_max_str_digits()} digits"
        raise BodyRefused(request_error(400, message)) from None
    except RecursionError:
        raise BodyRefused(request_error(400, "the body's JSON is nested too deeply")) from None
    if not isinstance(data, dict):
        raise BodyRefused(request_error(400, "the body must be a JSON object"))
    if _lone_surrogate(data):
        raise BodyRefused(
            request_error(400, "the body's JSON has a lone surrogate escape (\\ud800-\\udfff)")
        )
    return data


class _NumberRefused(ValueError):
    """A number JSON has no room for: ``NaN``, ``Infinity``, or one past a double."""


def _constant(name: str) -> Any:
    # json.loads takes JavaScript's NaN and Infinity; RFC 8259 does not, nor do the providers a
    # field of any shape (a tool's parameters, a JSON schema) is passed on to.
    raise _NumberRefused(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise _NumberRefused(f"the number {text[:40]} is past the range of a double")
    return value


def _lone_surrogate(data: Any) -> bool:
    """Whether a string of ``data`` (a key or a value) holds a lone UTF-16 surrogate.

    JSON's ``\\ud800`` escapes decode to one; no UTF-8 encoder takes it (not the job's JSON, not
    Redis, not an answer that quotes it), so it is refused here. A walk without recursion: the
    body may be nested as deep as ``json.loads`` goes.
    """
    stack = [data]
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            if not value.isascii():
                try:
                    value.encode()
                except UnicodeEncodeError:
                    return True
        elif isinstance(value, dict):
            stack.extend(value)
            stack.extend(value.values())
        elif isinstance(value, list):
            stack.extend(value)
    return False


def _too_large(max_bytes: int) -> HttpError:
    return request_error(413, f"the body is over {max_bytes} bytes (L04_HTTP_MAX_BODY)")


def validate(model: type[Model], data: dict[str, Any]) -> Model:
    """``data`` as ``model``, or :class:`BodyRefused` (400) naming the first offending field."""
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as exc:
        raise BodyRefused(describe(exc)) from None
    except RecursionError:
        raise BodyRefused(request_error(400, "the body is nested too deeply")) from None


def describe(exc: pydantic.ValidationError) -> HttpError:
    problems = []
    param = None
    for err in exc.errors(include_url=False, include_input=False):
        loc = ".".join(str(p) for p in err["loc"]) or "body"
        param = param or loc
        if err["type"] == "extra_forbidden":
            problems.append(f"unrecognized parameter {loc!r}")
        else:
            problems.append(f"{loc}: {err['msg']}")
    return request_error(400, "invalid request: " + "; ".join(problems[:10]), param=param)
