"""Chat messages, content parts and tool calls: the provider-neutral conversation format."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field, model_validator

from gateway_core.errors import InvalidMessages, invalid


class MessageRole(StrEnum):
    SYSTEM = "system"
    USER = "user"
    ASSISTANT = "assistant"
    TOOL = "tool"


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["text"] = "text"
    text: str


class ImagePart(BaseModel):
    """An image by URL, or inline as base64 ``data`` with its ``media_type``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    type: Literal["image"] = "image"
    url: str | None = None
    data: str | None = None
    media_type: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> ImagePart:
        if (self.url is None) == (self.data is None):
            raise ValueError("an image part needs exactly one of url or data")
        if self.data is not None and not self.media_type:
            raise ValueError("an inline image needs its media_type (e.g. image/png)")
        return self


ContentPart = Annotated[TextPart | ImagePart, Field(discriminator="type")]


class ToolCall(BaseModel):
    """A call the model asked for; ``arguments`` is the JSON text the model produced."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    id: str
    name: str
    arguments: str = "{}"


class ToolDefinition(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")
    description: str = ""
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})


class ToolResult(BaseModel):
    """What running a tool returned, fed back with ``execute_with_tools``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    tool_call_id: str
    content: str
    is_error: bool = False


class Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def __init__(self, **data: Any) -> None:
        """``Message(role="wizard")`` raises E4501 naming the field, like a bad request does.

        (Direct construction only: inside a request, messages are validated with the request,
        and ``parse_request`` turns their errors into E4501 too.)
        """
        try:
            super().__init__(**data)
        except pydantic.ValidationError as exc:
            raise invalid("message", exc, InvalidMessages) from None

    role: MessageRole
    content: str | list[ContentPart] = ""
    name: str | None = None
    tool_call_id: str | None = None
    tool_calls: list[ToolCall] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> Message:
        if self.role is MessageRole.TOOL and not self.tool_call_id:
            raise ValueError("a tool message needs the tool_call_id it answers")
        if self.tool_calls and self.role is not MessageRole.ASSISTANT:
            raise ValueError("only assistant messages carry tool_calls")
        if self.role is MessageRole.SYSTEM and not isinstance(self.content, str):
            raise ValueError("a system message's content is text")
        if not self.text and not self.tool_calls and not self.has_images:
            raise ValueError(f"a {self.role.value} message needs content")
        return self

    @property
    def text(self) -> str:
        """The message's text, parts joined; images are not text."""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content if isinstance(part, TextPart))

    @property
    def has_images(self) -> bool:
        return not isinstance(self.content, str) and any(
            isinstance(part, ImagePart) for part in self.content
        )
