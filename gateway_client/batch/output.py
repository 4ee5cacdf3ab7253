"""Output lines in the shape of the OpenAI Batch API's output and error files."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gateway_client.batch.kinds import CHAT
from gateway_core.errors import GatewayError
from gateway_core.http_status import STATUS_BY_CODE
from gateway_core.response import InferenceResponse


def result_line(batch_id: str, custom_id: str, response: InferenceResponse) -> dict[str, Any]:
    return answer_line(custom_id, response.job_id, response.request_id, CHAT.body(response))


def answer_line(
    custom_id: str, job_id: str, request_id: str, body: dict[str, Any]
) -> dict[str, Any]:
    """An output file's line: the endpoint's answer ``body`` with status 200."""
    return {
        "id": f"batch_req_{job_id}",
        "custom_id": custom_id,
        "response": {"status_code": 200, "request_id": request_id, "body": body},
        "error": None,
    }


def error_line(batch_id: str, custom_id: str, code: str, message: str) -> dict[str, Any]:
    return {
        "id": f"batch_req_{batch_id}_{custom_id}",
        "custom_id": custom_id,
        "response": {
            "status_code": STATUS_BY_CODE.get(code, 500),  # batch_expired: no E4xxx code
            "body": {"error": {"code": code, "message": message}},
        },
        "error": {"code": code, "message": message},
    }


def error_line_from(batch_id: str, custom_id: str, error: GatewayError) -> dict[str, Any]:
    return error_line(batch_id, custom_id, error.code, error.message)


def write_files(directory: Path, batch_id: str, lines: list[dict[str, Any]]) -> tuple[Path, Path]:
    """``<id>.results.jsonl`` and ``<id>.errors.jsonl`` in input order, written atomically."""
    directory.mkdir(parents=True, exist_ok=True)
    results = directory / f"{batch_id}.results.jsonl"
    errors = directory / f"{batch_id}.errors.jsonl"
    for path, wanted in ((results, True), (errors, False)):
        partial = path.with_suffix(".jsonl.partial")
        with partial.open("w", encoding="utf-8") as out:
            for line in lines:
                if (line["error"] is None) is wanted:
                    out.write(json.dumps(line, ensure_ascii=False) + "\n")
        partial.replace(path)
    return results, errors


def jsonl(lines: list[dict[str, Any]], wanted: bool) -> Iterator[bytes]:
    """The output (``wanted`` True) or error file's bytes, in pieces of about a MiB."""
    piece: list[bytes] = []
    size = 0
    for line in lines:
        if (line["error"] is None) is wanted:
            text = (json.dumps(line, ensure_ascii=False) + "\n").encode()
            piece.append(text)
            size += len(text)
            if size >= 1 << 20:
                yield b"".join(piece)
                piece, size = [], 0
    if piece:
        yield b"".join(piece)
