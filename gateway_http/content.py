"""What both APIs' bodies carry alike: images inline or by URL, and tools."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from gateway_core.errors import InvalidParameters


def image_part(url: str, where: str) -> dict[str, Any]:
    """An image by URL, or a ``data:`` URL as inline base64 data with its media type."""
    if not url.startswith("data:"):
        return {"type": "image", "url": url}
    header, _, data = url.partition(",")
    media_type = header[5:].split(";", 1)[0]
    if ";base64" not in header or not data:
        raise InvalidParameters(
            f"{where}: a data URL image must be data:image/<type>;base64,<data>",
            details={"param": where},
        )
    return inline_image(data, media_type, where)


def inline_image(data: str, media_type: str, where: str) -> dict[str, Any]:
    """An inline image part, once its media type is an image's and its data decodes."""
    if not media_type.startswith("image/"):
        raise InvalidParameters(
            f"{where}: {media_type!r} is not an image media type", details={"param": where}
        )
    try:
        base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidParameters(
            f"{where}: the image's base64 data does not decode", details={"param": where}
        ) from None
    return {"type": "image", "data": data, "media_type": media_type}


def check_tools(names: list[str], tool_choice: Any) -> None:
    """Tools have distinct names, and a choice that needs a tool has one to choose."""
    if len(set(names)) != len(names):
        raise InvalidParameters("tools have repeated names", details={"param": "tools"})
    if not names and tool_choice not in (None, "none", "auto"):
        raise InvalidParameters(
            "tool_choice asks for a tool, but the request has no tools",
            details={"param": "tool_choice"},
        )
