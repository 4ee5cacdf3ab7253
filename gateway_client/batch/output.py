"""Output lines in the shape of the OpenAI Batch API's output and error files."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from gateway_core.errors import GatewayError
from gateway_core.response import InferenceResponse

# HTTP statuses an OpenAI-compatible server would have answered an error code with.
_STATUS = {"E40": 400, "E41": 400, "E42": 502, "E43": 500, "E44": 429, "E45": 400, "E46": 502}


def result_line(batch_id: str, custom_id: str, response: InferenceResponse) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": response.content}
    if response.tool_calls:
        message["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments},
            }
            for call in response.tool_calls
        ]
    usage = response.token_usage
    return {
        "id": f"batch_req_{response.job_id}",
        "custom_id": custom_id,
        "response": {
            "status_code": 200,
            "request_id": response.request_id,
            "body": {
                "id": f"chatcmpl-{response.job_id}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": response.model_id,
                "choices": [
                    {"index": 0, "message": message, "finish_reason": response.finish_reason}
                ],
                "usage": {
                    "prompt_tokens": usage.prompt_tokens,
                    "completion_tokens": usage.completion_tokens,
                    "total_tokens": usage.total_tokens,
                },
                "l04": {
                    "provider": response.provider,
                    "cached": response.cached,
                    "cost": response.cost,
                    "latency_ms": response.latency_ms,
                },
            },
        },
        "error": None,
    }


def error_line(batch_id: str, custom_id: str, code: str, message: str) -> dict[str, Any]:
    return {
        "id": f"batch_req_{batch_id}_{custom_id}",
        "custom_id": custom_id,
        "response": {
            "status_code": _STATUS.get(code[:3], 500),
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
