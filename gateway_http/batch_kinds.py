"""The line kinds of batches made over HTTP (``POST /v1/batches``): a line's body is read exactly
as the endpoint named by its ``url`` reads a request body (same validation, same ``l04``
extension, same unsupported parameters refused), and its answer is the body that endpoint
answers with.

:data:`BATCH_KINDS` maps an endpoint to its kind; a batch whose ``endpoint`` is not in it is
refused at create (400). Each kind has the four methods of
:class:`gateway_client.batch.kinds.LineKind` (body -> job request, submit, attach, answer ->
the endpoint's object), built on its endpoint's own body and object functions.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

import pydantic

from gateway_client.batch.kinds import ChatLines, LineKind, Running
from gateway_client.gateway import ModelGateway
from gateway_core.embeddings import EmbeddingResponse, parse_embedding_request
from gateway_core.errors import InvalidParameters, InvalidRequest
from gateway_core.request import MAX_TIMEOUT_S, InferenceRequest, Priority
from gateway_core.response import InferenceResponse
from gateway_http import openai_chat, openai_embeddings, openai_responses, responses_store
from gateway_http.body import describe
from gateway_http.door import Caller, JobOptions
from gateway_http.responses_object import (
    ResponseRecord,
    response_id,
    response_object,
    status_of_answer,
)

Model = Any


def _validated(model: type[pydantic.BaseModel], body: dict[str, Any]) -> Any:
    try:
        return model.model_validate(body)
    except pydantic.ValidationError as exc:
        error = describe(exc)
        raise InvalidRequest(error.message, details={"param": error.param}) from None
    except RecursionError:
        raise InvalidRequest("the body is nested too deeply") from None


def _options(priority: str) -> JobOptions:
    return JobOptions(uuid.uuid4().hex, Priority(priority), MAX_TIMEOUT_S, None)


class HttpChatLines(ChatLines):
    """``/v1/chat/completions`` lines, read as ``POST /v1/chat/completions`` reads a body."""

    def request(
        self, body: dict[str, Any], *, agent_did: str, model: str | None, priority: str
    ) -> Any:
        chat = _validated(openai_chat.ChatCompletionBody, body)
        if chat.stream:
            raise InvalidParameters("stream is not allowed in a batch", details={"param": "stream"})
        return openai_chat.to_request(chat, Caller(agent_did=agent_did), _options(priority))

    def body(self, response: Any) -> dict[str, Any]:
        return openai_chat.completion_object(response, None)


class EmbeddingLines:
    """``/v1/embeddings`` lines, read as ``POST /v1/embeddings`` reads a body."""

    def request(
        self, body: dict[str, Any], *, agent_did: str, model: str | None, priority: str
    ) -> Any:
        parsed = _validated(openai_embeddings.EmbeddingsBody, body)
        if parsed.encoding_format != "float":
            raise InvalidParameters(
                "a batch answers embeddings as floats", details={"param": "encoding_format"}
            )
        request = openai_embeddings.to_request(
            parsed, Caller(agent_did=agent_did), _options(priority)
        )
        return parse_embedding_request(request)

    async def submit(
        self, gateway: ModelGateway, request: Any, job_id: str, key_id: str | None
    ) -> Running:
        job = await gateway.embed(request, job_id, key_id=key_id)
        return Running(job.handle, job.result)

    async def attach(self, gateway: ModelGateway, job_id: str) -> Running:
        job = await gateway.embedding_job(job_id)
        return Running(job.handle, job.result)

    def body(self, response: Any) -> dict[str, Any]:
        assert isinstance(response, EmbeddingResponse)
        return openai_embeddings.embeddings_object(response, "float")


class ResponseLineRequest(pydantic.BaseModel):
    """A ``/v1/responses`` line: its job, and its body for the Response object's echo of it.
    ``deadline`` is the batch's window end, which the runner sets on every line's request."""

    job: InferenceRequest
    body: openai_responses.ResponsesBody
    agent_did: str
    deadline: float | None = None


@dataclass(frozen=True, slots=True)
class ResponseLineAnswer:
    """A line's answer and its response's record (what the object echoes of the request)."""

    response: InferenceResponse
    record: ResponseRecord

    @property
    def request_id(self) -> str:
        return self.response.request_id


class ResponseLines:
    """``/v1/responses`` lines, read as ``POST /v1/responses`` reads a body; each answer is
    the Response object, whose record is kept beside the job as the API keeps it, so that
    ``GET /v1/responses/resp_<job id>`` answers for a line too (and a driver that takes the
    batch over finds the record of a line its predecessor submitted)."""

    def request(
        self, body: dict[str, Any], *, agent_did: str, model: str | None, priority: str
    ) -> Any:
        parsed = _validated(openai_responses.ResponsesBody, body)
        for name in ("stream", "background"):
            if getattr(parsed, name):
                raise InvalidParameters(
                    f"{name} is not allowed in a batch", details={"param": name}
                )
        job = openai_responses.to_request(parsed, Caller(agent_did=agent_did), _options(priority))
        return ResponseLineRequest(job=job, body=parsed, agent_did=agent_did)

    async def submit(
        self, gateway: ModelGateway, request: Any, job_id: str, key_id: str | None
    ) -> Running:
        assert isinstance(request, ResponseLineRequest)
        job = request.job.model_copy(update={"deadline": request.deadline})
        handle = await gateway.submit(job, job_id, key_id=key_id)
        caller = Caller(agent_did=request.agent_did, key_id=key_id)
        record = openai_responses.record_for(request.body, job_id, caller, int(time.time()))
        if record.store:
            settings = gateway.settings
            expires = handle.deadline + settings.result_ttl + settings.deadline_grace
            record = await responses_store.save(gateway.redis, record, expires)
        return self._running(gateway, handle, record)

    async def attach(self, gateway: ModelGateway, job_id: str) -> Running:
        handle = await gateway.job(job_id)
        return self._running(gateway, handle, None)

    @staticmethod
    def _running(gateway: ModelGateway, handle: Any, record: ResponseRecord | None) -> Running:
        async def result() -> ResponseLineAnswer:
            answer = await handle.result()
            kept = record or await responses_store.load(gateway.redis, handle.job_id)
            if kept is None:  # its submitter died before keeping it: what the answer says
                kept = ResponseRecord(
                    id=response_id(handle.job_id),
                    created_at=int(time.time()),
                    owner="",
                    model=answer.model_id,
                )
            return ResponseLineAnswer(answer, kept)

        return Running(handle, result)

    def body(self, response: Any) -> dict[str, Any]:
        assert isinstance(response, ResponseLineAnswer)
        answer = response.response
        return response_object(response.record, status_of_answer(answer), answer)


BATCH_KINDS: dict[str, LineKind] = {
    "/v1/chat/completions": HttpChatLines(),
    "/v1/embeddings": EmbeddingLines(),
    "/v1/responses": ResponseLines(),
}
