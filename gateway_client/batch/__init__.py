"""Batch inference runs: a JSONL file of requests in, every line answered exactly once out."""

from gateway_client.batch.input import BatchLine, LineError, parse_jsonl, parse_line
from gateway_client.batch.runner import BatchRunner, Progress
from gateway_client.batch.store import BatchInfo, BatchStatus, BatchStore

__all__ = [
    "BatchInfo",
    "BatchLine",
    "BatchRunner",
    "BatchStatus",
    "BatchStore",
    "LineError",
    "Progress",
    "parse_jsonl",
    "parse_line",
]
