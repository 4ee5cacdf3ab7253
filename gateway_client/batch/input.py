"""Batch input in the OpenAI Batch API's JSONL format, validated line by line.

Each line is ``{"custom_id", "method": "POST", "url": "/v1/chat/completions", "body": {...}}``
with a body for its url (its :class:`LineKind`: chat completions unless the runner is given
more kinds). A line that is not valid becomes a :class:`LineError` (an error
output line with a code) and does not stop the others.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from gateway_client.batch.kinds import DEFAULT_KINDS, LineKind
from gateway_core.errors import GatewayError

MAX_CUSTOM_ID = 512


@dataclass(frozen=True, slots=True)
class BatchLine:
    index: int  # 0-based line number in the input
    custom_id: str
    request: Any  # an InferenceRequest for chat lines; what the line's kind makes
    url: str = "/v1/chat/completions"


@dataclass(frozen=True, slots=True)
class LineError:
    index: int
    custom_id: str
    code: str
    message: str


def parse_line(
    index: int,
    text: str,
    *,
    agent_did: str,
    model: str | None,
    priority: str,
    kinds: Mapping[str, LineKind] | None = None,
) -> BatchLine | LineError:
    kinds = DEFAULT_KINDS if kinds is None else kinds
    try:
        line = json.loads(text)
    except json.JSONDecodeError as exc:
        return LineError(index, f"line-{index + 1}", "E4500", f"not JSON: {exc.msg}")
    if not isinstance(line, dict):
        return LineError(index, f"line-{index + 1}", "E4500", "a line must be a JSON object")
    custom_id = line.get("custom_id")
    if not isinstance(custom_id, str) or not 0 < len(custom_id) <= MAX_CUSTOM_ID:
        return LineError(index, f"line-{index + 1}", "E4500", "custom_id must be a string")
    url = line.get("url")
    if line.get("method", "POST") != "POST" or not isinstance(url, str) or url not in kinds:
        urls = ", ".join(sorted({u for u in kinds if u.startswith("/v1/")}))
        return LineError(index, custom_id, "E4500", f"only POST lines to {urls} are supported")
    body = line.get("body")
    if not isinstance(body, dict):
        return LineError(index, custom_id, "E4500", "body must be a JSON object")
    try:
        request = kinds[url].request(body, agent_did=agent_did, model=model, priority=priority)
    except GatewayError as error:
        return LineError(index, custom_id, error.code, error.message)
    return BatchLine(index, custom_id, request, url)


def parse_jsonl(
    lines: Iterable[str],
    *,
    agent_did: str,
    model: str | None = None,
    priority: str = "low",
    kinds: Mapping[str, LineKind] | None = None,
    start: int = 0,
    seen: set[str] | None = None,
) -> Iterator[BatchLine | LineError]:
    """Every line, validated; blank lines are skipped, a repeated custom_id is an error.

    ``start``: the index of the first of ``lines``; ``seen``: the custom_ids of the lines
    before it (a file parsed a piece at a time), added to as the lines are parsed."""
    seen = set() if seen is None else seen
    for index, text in enumerate(lines, start=start):
        if not text.strip():
            continue
        parsed = parse_line(
            index, text, agent_did=agent_did, model=model, priority=priority, kinds=kinds
        )
        if parsed.custom_id in seen:
            parsed = LineError(index, parsed.custom_id, "E4500", "custom_id is used twice")
        else:
            seen.add(parsed.custom_id)
        yield parsed
