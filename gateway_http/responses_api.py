"""The routes of OpenAI's Responses API: ``POST /v1/responses`` (plain, streamed, background),
``GET /v1/responses/{id}`` (its state, or ``?stream=true&starting_after=N`` its events again)
and ``POST /v1/responses/{id}/cancel``.

A response is a job of the fleet and a :class:`ResponseRecord` beside it in Redis; its id is
``resp_<job id>``. A background one is an ordinary job, answered ``queued`` at once: it runs
whatever happens to the client or to the server that took it, and any server answers for it
(its state, its output, its events) until the job's record expires (``L04_RESULT_TTL``). Only
the key that made a response reads or cancels it: for any other key it does not exist (404).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from starlette.requests import Request
from starlette.responses import Response

from gateway_client.gateway import ModelGateway
from gateway_client.handle import JobHandle
from gateway_core.errors import (
    BrokerUnavailable,
    GatewayError,
    InvalidParameters,
    InvalidRequest,
    JobStoreUnavailable,
    UnknownJob,
)
from gateway_core.request import InferenceRequest
from gateway_core.response import StreamChunk
from gateway_http import responses_store
from gateway_http.body import read_json, validate
from gateway_http.door import (
    Caller,
    ClientGone,
    JobOptions,
    abandon,
    answer_headers,
    check_models,
    hold_idempotency_key,
    job_options,
    unless_gone,
    wait_for_answer,
)
from gateway_http.errors import HttpError
from gateway_http.openai_responses import ResponsesBody, record_for, to_request
from gateway_http.openapi import error_responses, operation
from gateway_http.responses_events import ResponseEvents, sse
from gateway_http.responses_object import (
    ResponseRecord,
    job_id_of,
    owner_of,
    response_object,
    status_of_answer,
    status_of_error,
    status_of_state,
)
from gateway_http.sse import EventStreamResponse

if TYPE_CHECKING:
    from gateway_http.app import Door

ENDPOINT = "/v1/responses"

#: Past a job's deadline and the worker's grace, how long a stream still waits on Redis.
STORE_SLACK_S = 3.0

#: The query of ``GET /v1/responses/{id}``, read by :func:`_starting_after` (not by FastAPI,
#: so that a bad value is a 400 in OpenAI's shape, not a 422).
RETRIEVE_PARAMETERS = [
    {
        "name": "stream",
        "in": "query",
        "required": False,
        "schema": {"type": "boolean", "default": False},
        "description": "Stream the response's events (Server-Sent Events) instead",
    },
    {
        "name": "starting_after",
        "in": "query",
        "required": False,
        "schema": {"type": "integer", "minimum": -1},
        "description": "With stream=true: only the events after this sequence number",
    },
]

Guard = Callable[[Request, Any, Callable[[], Awaitable[Response]]], Awaitable[Response]]
Note = Callable[..., None]


async def submit_background(
    gateway: ModelGateway, job: InferenceRequest, job_id: str, caller: Caller
) -> JobHandle:
    """Where a background response's job is submitted: an ordinary job of the fleet, streamed
    (its chunks kept, so that its events can be replayed) under the caller's key.

    Its end is a webhook event (``response.completed`` / ``.failed`` / ``.cancelled`` /
    ``.incomplete`` for ``resp_<job id>``): ``notify="response"`` has the script that ends the
    job write it to the outbox in the same step (gateway_core/lua/webhook.lua), whichever
    process ends it, so no end goes unannounced.
    """
    return await gateway.submit(job, job_id, stream=True, key_id=caller.key_id, notify="response")


def _not_found(response_id: str) -> UnknownJob:
    return UnknownJob(
        f"no response {response_id[:160]!r} (unknown, expired, or not this key's)",
        details={"param": "response_id"},
    )


def _unanswered() -> JobStoreUnavailable:
    return JobStoreUnavailable(
        "the job store did not answer before the response's deadline", details={"retry_after": 1}
    )


def _until(door: Door, deadline: float) -> float:
    """The loop-clock time past which a wait for a job that ends at ``deadline`` (epoch
    seconds) has lasted too long: the store is not answering."""
    left = deadline - time.time() + door.settings.deadline_grace + STORE_SLACK_S
    return asyncio.get_running_loop().time() + max(left, STORE_SLACK_S)


async def _create(request: Request, door: Door, note: Note) -> Response:
    note(request, ENDPOINT)
    caller = await door.auth.caller(request)
    note(request, ENDPOINT, caller)
    data = await read_json(request, door.settings.http_max_body)
    body = validate(ResponsesBody, data)
    options = job_options(request, caller, body.service_tier, door.settings.http_timeout)
    job = to_request(body, caller, options)
    check_models(caller, door.gateway.catalog, job)
    job_id = options.job_id or uuid.uuid4().hex
    record = record_for(body, job_id, caller, int(time.time()))
    deadline = time.time() + options.timeout
    try:
        async with asyncio.timeout_at(_until(door, deadline)):
            await hold_idempotency_key(door.gateway.redis, options, ENDPOINT, data, door.ttl)
            stream = bool(body.stream)
            if body.background:
                handle = await submit_background(door.gateway, job, job_id, caller)
            else:
                handle = await door.gateway.submit(job, job_id, stream=stream, key_id=caller.key_id)
            request.scope["l04.job_id"] = handle.job_id
            record = await _kept(door, record, handle)
            if body.background:
                headers = {"x-request-id": options.request_id, "x-l04-job-id": handle.job_id}
                if stream:
                    return _events(door, handle, record, -1, headers, on_disconnect=None)
                return JSONResponse(response_object(record, "queued"), headers=headers)
            if stream:
                return await _first_then_stream(request, door, handle, record, options)
            answer, headers = await wait_for_answer(
                handle, handle.result(), options, request.receive
            )
    except ClientGone:
        return Response(status_code=499)
    except TimeoutError:
        raise _unanswered() from None
    return JSONResponse(response_object(record, status_of_answer(answer), answer), headers=headers)


async def _kept(door: Door, record: ResponseRecord, handle: JobHandle) -> ResponseRecord:
    """The response's record, kept as long as its job's answer (unless ``store`` is false).

    Written once the job exists (a refused request leaves nothing in Redis); a retry with the
    same Idempotency-Key finds the first request's record. A server that dies between the two
    writes never answered, so no client holds the response's id: its retry makes the record.
    """
    if not record.store:
        return record
    settings = door.settings
    expires = handle.deadline + settings.result_ttl + settings.deadline_grace
    return await responses_store.save(door.gateway.redis, record, expires)


async def _first_then_stream(
    request: Request, door: Door, handle: JobHandle, record: ResponseRecord, options: JobOptions
) -> Response:
    """A streamed (not background) response: its job's first event awaited before the stream
    starts, so that an error before it is a plain HTTP error the SDK raises; a client that
    goes away cancels the job (unless it sent an Idempotency-Key), as in the chat door."""
    chunks = handle.stream()
    try:
        first = await unless_gone(chunks.__anext__(), request.receive)
    except ClientGone:
        await chunks.aclose()
        await abandon(handle, options)
        return Response(status_code=499)
    except BaseException:
        await chunks.aclose()
        raise
    headers = await answer_headers(handle, options, first.response if first.is_final else None)
    return _events(
        door,
        handle,
        record,
        -1,
        headers,
        on_disconnect=lambda: abandon(handle, options),
        chunks=_prepend(first, chunks),
    )


async def _prepend(
    first: StreamChunk, rest: AsyncIterator[StreamChunk]
) -> AsyncIterator[StreamChunk]:
    try:
        yield first
        if not first.is_final:
            async for chunk in rest:
                yield chunk
    finally:
        await rest.aclose()  # type: ignore[attr-defined]


async def _numbered(
    record: ResponseRecord, chunks: AsyncIterator[StreamChunk]
) -> AsyncIterator[dict[str, Any]]:
    """The response's events, numbered, from its job's feed (see :mod:`responses_events`)."""
    writer = ResponseEvents(record)
    for event in writer.opening():
        yield event
    try:
        async for chunk in chunks:
            if chunk.is_final:
                assert chunk.response is not None
                for event in writer.final(chunk.response):
                    yield event
                return
            for event in writer.chunk(chunk.content_delta):
                yield event
    except (UnknownJob, JobStoreUnavailable):
        raise  # the store's trouble, not the job's end: no numbered event for it
    except GatewayError as error:
        for event in writer.failed(error):
            yield event


def _events(
    door: Door,
    handle: JobHandle,
    record: ResponseRecord,
    starting_after: int,
    headers: dict[str, str],
    on_disconnect: Callable[[], Awaitable[None]] | None,
    chunks: AsyncIterator[StreamChunk] | None = None,
) -> Response:
    """The response's events after ``starting_after`` as Server-Sent Events, then live until
    the job ends. An error of the store mid-way is an SSE error event, then the end."""

    async def body() -> AsyncIterator[bytes]:
        feed = chunks if chunks is not None else handle.stream()
        events = _numbered(record, feed)
        ends = _until(door, handle.deadline)
        try:
            while True:
                async with asyncio.timeout_at(ends):
                    event = await events.__anext__()
                if event["sequence_number"] > starting_after:
                    yield sse(event)
        except StopAsyncIteration:
            return
        except GatewayError as error:
            yield HttpError.of(error).sse("openai")
        except TimeoutError:
            yield HttpError.of(_unanswered()).sse("openai")
        finally:
            # Both, here and now: closing the outer generator does not close the feed it was
            # iterating, whose subscription would wait for the garbage collector.
            await events.aclose()  # type: ignore[attr-defined]
            await feed.aclose()  # type: ignore[attr-defined]

    async def nothing() -> None:
        return None

    cut = HttpError.of(
        BrokerUnavailable("the server shut down before the stream ended; resume on another")
    ).sse("openai")
    return EventStreamResponse(body(), headers, on_disconnect=on_disconnect or nothing, on_cut=cut)


async def _owned(
    request: Request, door: Door, response_id: str, note: Note, endpoint: str
) -> tuple[ResponseRecord, JobHandle]:
    """The record and job of ``response_id``, if the caller's key made it; else 404."""
    note(request, endpoint)
    caller = await door.auth.caller(request)
    note(request, endpoint, caller)
    job_id = job_id_of(response_id)
    if job_id is None:
        raise _not_found(response_id)
    record = await responses_store.load(door.gateway.redis, job_id)
    if record is None or record.owner != owner_of(caller):
        raise _not_found(response_id)
    request.scope["l04.job_id"] = job_id
    try:
        return record, await door.gateway.job(job_id)
    except UnknownJob:
        raise _not_found(response_id) from None


async def current_object(handle: JobHandle, record: ResponseRecord) -> dict[str, Any]:
    """The response as its job stands now: queued, in progress, or its answer or error."""
    status = await handle.status()
    if not status.state.is_terminal:
        return response_object(record, status_of_state(status.state))
    try:
        answer = await handle.result(timeout=STORE_SLACK_S)
    except (UnknownJob, JobStoreUnavailable):
        raise
    except TimeoutError:
        raise _unanswered() from None
    except GatewayError as error:
        return response_object(record, status_of_error(error), error=error)
    return response_object(record, status_of_answer(answer), answer)


def _starting_after(request: Request) -> tuple[bool, int]:
    query = request.query_params
    stream = query.get("stream", "false").lower()
    if stream not in ("true", "false"):
        raise InvalidParameters("stream must be true or false", details={"param": "stream"})
    after = query.get("starting_after")
    if after is None:
        return stream == "true", -1
    try:
        value = int(after)
    except ValueError:
        value = -2
    if value < -1 or value > 10**9:
        raise InvalidParameters(
            "starting_after must be a sequence number (an integer, 0 or more)",
            details={"param": "starting_after"},
        )
    if stream != "true":
        raise InvalidParameters(
            "starting_after is only allowed with stream=true", details={"param": "starting_after"}
        )
    return True, value


async def _retrieve(request: Request, door: Door, response_id: str, note: Note) -> Response:
    record, handle = await _owned(request, door, response_id, note, "/v1/responses/{id}")
    stream, after = _starting_after(request)
    headers = {"x-l04-job-id": handle.job_id}
    if stream:
        return _events(door, handle, record, after, headers, on_disconnect=None)
    return JSONResponse(await current_object(handle, record), headers=headers)


async def _cancel(request: Request, door: Door, response_id: str, note: Note) -> Response:
    record, handle = await _owned(request, door, response_id, note, "/v1/responses/{id}/cancel")
    if not record.background:
        raise InvalidRequest(
            "only a background response can be cancelled", details={"param": "response_id"}
        )
    await handle.cancel()  # a job that already ended is left as it is
    return JSONResponse(
        await current_object(handle, record), headers={"x-l04-job-id": handle.job_id}
    )


def register(app: FastAPI, door: Callable[[], Door], guarded: Guard, note: Note) -> None:
    """Add the Responses API's routes to ``app`` (``guarded``: the app's error boundary)."""

    @app.post(
        ENDPOINT,
        tags=["OpenAI"],
        summary="Create a response (OpenAI Responses API): plain, streamed or background",
        openapi_extra=operation(ResponsesBody, "openai", streams=True),
    )
    async def create_response(request: Request) -> Response:
        return await guarded(request, "openai", lambda: _create(request, door(), note))

    @app.get(
        "/v1/responses/{response_id}",
        tags=["OpenAI"],
        summary="A response's state and output, or (stream=true) its events after starting_after",
        responses=error_responses("openai", only=(400, 401, 404, 503)),
        openapi_extra={"parameters": RETRIEVE_PARAMETERS},
    )
    async def retrieve_response(request: Request, response_id: str) -> Response:
        return await guarded(
            request, "openai", lambda: _retrieve(request, door(), response_id, note)
        )

    @app.post(
        "/v1/responses/{response_id}/cancel",
        tags=["OpenAI"],
        summary="Cancel a background response (one that has ended is returned unchanged)",
        responses=error_responses("openai", only=(400, 401, 404, 503)),
    )
    async def cancel_response(request: Request, response_id: str) -> Response:
        return await guarded(request, "openai", lambda: _cancel(request, door(), response_id, note))
