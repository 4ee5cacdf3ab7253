"""What kombu's Redis transport needs of a value on a queue before it can hand it to Celery.

kombu turns each value it pops into a message with ``json.loads`` and a few dictionary look-ups,
and any failure there escapes into Celery's event loop: the worker stops ("Unrecoverable error")
and the value is gone, or, for ``{}``, the broker connection is dropped with the value. Anything
can be pushed onto a Redis list, so each value is checked here first; one that fails goes to the
dead-letter list with the reason (:mod:`workers.broker_transport`).

Only the envelope's shape is checked. What is inside the body (a task, its arguments, the job's
envelope) is Celery's and the runtime's to judge, and they set aside what they cannot use too.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

#: Our task messages are well under 2 KiB; kombu's own control replies are small too.
MAX_MESSAGE_BYTES = 1 << 20


class PoisonMessage(ValueError):
    """A value on a queue that is not a kombu message; the text says why."""


def screen(raw: Any) -> dict[str, Any]:
    """The message kombu will read from ``raw``, or :class:`PoisonMessage` saying why not."""
    if not isinstance(raw, (bytes, str)):
        raise PoisonMessage(f"a {type(raw).__name__} value, not bytes")
    if len(raw) > MAX_MESSAGE_BYTES:
        raise PoisonMessage(f"{len(raw)} bytes, over the {MAX_MESSAGE_BYTES}-byte limit")
    try:
        payload = json.loads(raw)
    except UnicodeDecodeError:
        raise PoisonMessage("not UTF-8 text") from None
    except ValueError as exc:
        raise PoisonMessage(f"not JSON ({exc.args[0] if exc.args else exc})") from None
    if not isinstance(payload, dict):
        raise PoisonMessage(f"JSON {type(payload).__name__}, not a message object")
    properties = payload.get("properties")
    if not isinstance(properties, dict):
        raise PoisonMessage("no 'properties' object")
    tag = properties.get("delivery_tag")
    if not isinstance(tag, str) or not tag:
        raise PoisonMessage("no 'properties.delivery_tag'")
    info = properties.get("delivery_info")
    if not isinstance(info, dict):
        raise PoisonMessage("no 'properties.delivery_info' object")
    for field in ("exchange", "routing_key"):
        if not isinstance(info.get(field), str):
            raise PoisonMessage(f"no 'properties.delivery_info.{field}'")
    headers = payload.get("headers", {})
    if headers is not None and not isinstance(headers, dict):
        raise PoisonMessage("'headers' is not an object")
    for field in ("content-type", "content-encoding"):
        if not isinstance(payload.get(field, ""), (str, type(None))):
            raise PoisonMessage(f"'{field}' is not a string")
    body = payload.get("body")
    if not isinstance(body, (str, type(None))):
        raise PoisonMessage("'body' is not a string")
    encoding = properties.get("body_encoding")
    if body and encoding == "base64":
        try:
            base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            raise PoisonMessage("'body' is not valid base64") from None
    elif body and encoding is not None and str(encoding).lower() != "utf-8":
        raise PoisonMessage(f"unknown body_encoding {str(encoding)[:40]!r}")
    return payload
