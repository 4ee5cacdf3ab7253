"""The line kinds of batches made over HTTP (``POST /v1/batches``): a line's body is read exactly
as the endpoint named by its ``url`` reads a request body (same validation, same ``l04``
extension, same unsupported parameters refused), and its answer is the body that endpoint
answers with.

:data:`BATCH_KINDS` maps an endpoint to its kind; a batch whose ``endpoint`` is not in it is
refused at create (400). ``/v1/responses`` lines are one more entry here: a class with the four
methods of :class:`gateway_client.batch.kinds.LineKind` (body -> job request, submit, attach,
answer -> Response object), built on the Responses API's own body and object functions.
"""

from __future__ import annotations

import uuid
from typing import Any

import pydantic

from gateway_client.batch.kinds import ChatLines, LineKind, Running
from gateway_client.gateway import ModelGateway
from gateway_core.embeddings import EmbeddingResponse, parse_embedding_request
from gateway_core.errors import InvalidParameters, InvalidRequest
from gateway_core.request import MAX_TIMEOUT_S, Priority
from gateway_http import openai_chat, openai_embeddings
from gateway_http.body import describe
from gateway_http.door import Caller, JobOptions

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


BATCH_KINDS: dict[str, LineKind] = {
    "/v1/chat/completions": HttpChatLines(),
    "/v1/embeddings": EmbeddingLines(),
}
