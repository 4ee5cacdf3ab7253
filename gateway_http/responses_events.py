"""The numbered events of a streamed response: a pure function of its record and its job's feed.

Every server regenerates the same sequence from Redis (the job's chunks and its terminal event,
in the order the feed keeps them), so a client that resumes with ``starting_after=N`` from any
server, any number of times, gets exactly the events after ``N``. Nothing here reads a clock
or the server's state: sequence numbers, item ids and snapshots come from the record and the
feed only.

The sequence::

    response.created                      (status queued when background, else in_progress)
    response.queued                       (background only)
    response.in_progress                  (background: when the job's first event arrives)
    response.output_item.added            (the message, at its first text)
    response.content_part.added
    response.output_text.delta            (one per non-empty chunk)
    response.output_text.done / content_part.done / output_item.done
    response.output_item.added            (each function call, then)
    response.function_call_arguments.delta / .done, response.output_item.done
    response.completed | response.incomplete | response.failed

A job that ends in an error is ``response.failed``; a cancelled one too, its response's status
``cancelled`` (the Responses API has no ``response.cancelled`` stream event).
"""

from __future__ import annotations

import json
from typing import Any

from gateway_core.errors import GatewayError
from gateway_core.response import InferenceResponse
from gateway_http.responses_object import (
    ResponseRecord,
    message_id,
    message_item,
    output_items,
    response_object,
    status_of_answer,
    status_of_error,
    text_part,
)

_TERMINAL_EVENTS = {
    "completed": "response.completed",
    "incomplete": "response.incomplete",
    "failed": "response.failed",
    "cancelled": "response.failed",
}


class ResponseEvents:
    """Builds the events of one response in order, numbering them from 0."""

    def __init__(self, record: ResponseRecord) -> None:
        self._record = record
        self._next = 0
        self._in_progress = False
        self._message_open = False

    def _event(self, kind: str, **fields: Any) -> dict[str, Any]:
        event = {"type": kind, "sequence_number": self._next, **fields}
        self._next += 1
        return event

    def opening(self) -> list[dict[str, Any]]:
        record = self._record
        if not record.background:
            self._in_progress = True
            return [
                self._event("response.created", response=response_object(record, "in_progress")),
                self._event(
                    "response.in_progress", response=response_object(record, "in_progress")
                ),
            ]
        return [
            self._event("response.created", response=response_object(record, "queued")),
            self._event("response.queued", response=response_object(record, "queued")),
        ]

    def _progress(self) -> list[dict[str, Any]]:
        if self._in_progress:
            return []
        self._in_progress = True
        return [
            self._event(
                "response.in_progress", response=response_object(self._record, "in_progress")
            )
        ]

    def _open_message(self) -> list[dict[str, Any]]:
        if self._message_open:
            return []
        self._message_open = True
        job_id = self._record.job_id
        where = {"item_id": message_id(job_id), "output_index": 0}
        return [
            self._event(
                "response.output_item.added",
                output_index=0,
                item=message_item(job_id, "", "in_progress"),
            ),
            self._event(
                "response.content_part.added", **where, content_index=0, part=text_part("")
            ),
        ]

    def _delta(self, text: str) -> dict[str, Any]:
        return self._event(
            "response.output_text.delta",
            item_id=message_id(self._record.job_id),
            output_index=0,
            content_index=0,
            delta=text,
            logprobs=[],
        )

    def chunk(self, delta: str) -> list[dict[str, Any]]:
        """The events of one chunk of text (none for an empty one)."""
        if not delta:
            return []
        return [*self._progress(), *self._open_message(), self._delta(delta)]

    def final(self, answer: InferenceResponse) -> list[dict[str, Any]]:
        """The events of the job's answer: the items closed, then the terminal event."""
        events = self._progress()
        status = status_of_answer(answer)
        for index, item in enumerate(output_items(answer)):
            if item["type"] == "message":
                events += self._message_done(item, answer.content)
            else:
                events += self._call(index, item)
        events.append(
            self._event(
                _TERMINAL_EVENTS[status],
                response=response_object(self._record, status, answer),
            )
        )
        return events

    def _message_done(self, item: dict[str, Any], text: str) -> list[dict[str, Any]]:
        events = []
        if not self._message_open:
            events += self._open_message()
            if text:
                events.append(self._delta(text))
        where = {"item_id": item["id"], "output_index": 0, "content_index": 0}
        events += [
            self._event("response.output_text.done", **where, text=text, logprobs=[]),
            self._event("response.content_part.done", **where, part=text_part(text)),
            self._event("response.output_item.done", output_index=0, item=item),
        ]
        return events

    def _call(self, index: int, item: dict[str, Any]) -> list[dict[str, Any]]:
        where = {"item_id": item["id"], "output_index": index}
        return [
            self._event(
                "response.output_item.added",
                output_index=index,
                item={**item, "arguments": "", "status": "in_progress"},
            ),
            self._event("response.function_call_arguments.delta", **where, delta=item["arguments"]),
            self._event(
                "response.function_call_arguments.done",
                **where,
                name=item["name"],
                arguments=item["arguments"],
            ),
            self._event("response.output_item.done", output_index=index, item=item),
        ]

    def failed(self, error: GatewayError) -> list[dict[str, Any]]:
        """The terminal event of a job that ended in an error (or was cancelled)."""
        status = status_of_error(error)
        return [
            self._event(
                _TERMINAL_EVENTS[status],
                response=response_object(self._record, status, error=error),
            )
        ]


def sse(event: dict[str, Any]) -> bytes:
    data = json.dumps(event, separators=(",", ":"), ensure_ascii=False)
    return f"event: {event['type']}\ndata: {data}\n\n".encode()
