"""Structured worker logs: one JSON object per line, with the job (and request) each line is about.

The pipeline sets the job in a context variable when it claims a job; every line logged while
that job runs, by any module, carries its ``job_id`` and ``request_id``. Messages hold ids and
codes, never prompt or response text, and pass through the key redaction once more on the way
out. ``L04_LOG_FORMAT=text`` keeps Celery's plain format. Inside a trace (README "Tracing") a
line also carries the current span's ``trace_id`` and ``span_id``.
"""

from __future__ import annotations

import contextvars
import json
import logging
import time
from typing import Any

from opentelemetry.trace import get_current_span

from gateway_core.redact import redact

current_job: contextvars.ContextVar[tuple[str, str] | None] = contextvars.ContextVar(
    "l04_current_job", default=None
)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        fields = getattr(record, "fields", None)  # logger.info(..., extra={"fields": {...}})
        if isinstance(fields, dict):
            entry.update({k: v for k, v in fields.items() if k not in entry and v is not None})
        job = current_job.get()
        if job is not None:
            entry["job_id"], entry["request_id"] = job
        span = get_current_span().get_span_context()
        if span.is_valid:  # in a trace (README "Tracing"): the ids a tracing backend shows
            entry["trace_id"] = format(span.trace_id, "032x")
            entry["span_id"] = format(span.span_id, "016x")
        if record.exc_info and record.exc_info[0] is not None:
            entry["error_type"] = record.exc_info[0].__name__  # the type, not the text
        return json.dumps(entry, ensure_ascii=False)


def use_json(logger: logging.Logger) -> None:
    for handler in logger.handlers:
        handler.setFormatter(JsonFormatter())
