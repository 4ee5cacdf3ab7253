"""Scrubbing credentials out of any text that may reach a log, an error or a metric."""

from __future__ import annotations

import re
from collections.abc import Iterable

# Key shapes of the providers we speak to, whole or partly masked with '*' as providers echo
# them back ("Incorrect API key provided: sk-proj-********abcd").
_KEY_PATTERN = re.compile(r"\bsk-[A-Za-z0-9_\-*]{4,}")
REDACTED = "[REDACTED]"


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    return _KEY_PATTERN.sub(REDACTED, text)
