"""Anthropic Messages responses and server-sent events, as Anthropic documents them."""

from __future__ import annotations

ANTHROPIC_MESSAGE = """{
  "id": "msg_013Zva2CMHLNnXjNJJKqJ2EF",
  "type": "message",
  "role": "assistant",
  "model": "%(model)s",
  "content": [
    {
      "type": "text",
      "text": "Hello! How can I assist you today?"
    }
  ],
  "stop_reason": "end_turn",
  "stop_sequence": null,
  "usage": {
    "input_tokens": 12,
    "cache_creation_input_tokens": 0,
    "cache_read_input_tokens": 0,
    "output_tokens": 10
  }
}
"""
ANTHROPIC_TOOL_MESSAGE = """{
  "id": "msg_01Aq9w938a90dw8q",
  "type": "message",
  "role": "assistant",
  "model": "%(model)s",
  "content": [
    {
      "type": "text",
      "text": "I'll check that."
    },
    {
      "type": "tool_use",
      "id": "toolu_01A09q90qw90lq917835lq9",
      "name": "%(tool)s",
      "input": {"location": "San Francisco, CA"}
    }
  ],
  "stop_reason": "tool_use",
  "stop_sequence": null,
  "usage": {
    "input_tokens": 472,
    "cache_creation_input_tokens": 0,
    "cache_read_input_tokens": 100,
    "output_tokens": 91
  }
}
"""
ANTHROPIC_STREAM_START = (
    "event: message_start\n"
    'data: {"type":"message_start","message":{"id":"msg_1nZdL29xx5MUA1yADyHTEsnR8uuvGzszyY",'
    '"type":"message","role":"assistant","content":[],"model":"%(model)s","stop_reason":null,'
    '"stop_sequence":null,"usage":{"input_tokens":12,"cache_creation_input_tokens":0,'
    '"cache_read_input_tokens":0,"output_tokens":1}}}\n\n'
    "event: content_block_start\n"
    'data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}\n\n'
    "event: ping\n"
    'data: {"type": "ping"}\n\n'
)
ANTHROPIC_TEXT_DELTA = (
    "event: content_block_delta\n"
    'data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":%(piece)s}}'
    "\n\n"
)
ANTHROPIC_BLOCK_STOP = (
    'event: content_block_stop\ndata: {"type":"content_block_stop","index":%(index)d}\n\n'
)
ANTHROPIC_TOOL_BLOCK = (
    "event: content_block_start\n"
    'data: {"type":"content_block_start","index":1,"content_block":{"type":"tool_use",'
    '"id":"toolu_01T1x1fJ34qAmk2tNTrN7Up6","name":"%(tool)s","input":{}}}\n\n'
    "event: content_block_delta\n"
    'data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta",'
    '"partial_json":""}}\n\n'
    "event: content_block_delta\n"
    'data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta",'
    '"partial_json":"{\\"location\\": \\"San Fra"}}\n\n'
    "event: content_block_delta\n"
    'data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta",'
    '"partial_json":"ncisco, CA\\"}"}}\n\n'
)
ANTHROPIC_STREAM_END = (
    "event: message_delta\n"
    'data: {"type":"message_delta","delta":{"stop_reason":"%(stop)s","stop_sequence":null},'
    '"usage":{"output_tokens":10}}\n\n'
    "event: message_stop\n"
    'data: {"type":"message_stop"}\n\n'
)
ANTHROPIC_SSE_ERROR = (
    "event: error\n"
    'data: {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}\n\n'
)
ANTHROPIC_ERROR = """{
  "type": "error",
  "error": {
    "type": "%(type)s",
    "message": "%(message)s"
  }
}
"""
_ANTHROPIC_ERROR_KINDS = {
    400: ("invalid_request_error", "messages: field required"),
    401: ("authentication_error", "invalid x-api-key"),
    403: ("permission_error", "Your API key does not have permission to use this resource."),
    429: ("rate_limit_error", "Number of requests has exceeded your rate limit."),
    500: ("api_error", "An unexpected error has occurred internal to Anthropic's systems."),
    529: ("overloaded_error", "Overloaded"),
}
