"""Scrubbing credentials out of any text that may reach a log, an error or a metric."""

from __future__ import annotations

import re
from collections.abc import Iterable

# Key shapes of the providers we speak to, in case an upstream echoes a key we never sent.
_KEY_PATTERN = re.compile(r"\b(sk-ant-[A-Za-z0-9_\-]{6,}|sk-[A-Za-z0-9_\-]{6,})")
REDACTED = "[REDACTED]"


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    return _KEY_PATTERN.sub(REDACTED, text)
