"""OpenAI Chat Completions and Embeddings responses, as OpenAI documents them."""

from __future__ import annotations

REPLY = "Hello! How can I assist you today?"
REPLY_PIECES = ["Hello", "!", " How", " can", " I", " assist", " you", " today", "?"]

OPENAI_COMPLETION = """{
  "id": "%(id)s",
  "object": "chat.completion",
  "created": %(created)d,
  "model": "%(model)s",
  "choices": [
    {
      "index": 0,
      "message": {
        "role": "assistant",
        "content": "Hello! How can I assist you today?",
        "refusal": null,
        "annotations": []
      },
      "logprobs": null,
      "finish_reason": "stop"
    }
  ],
  "usage": {
    "prompt_tokens": 19,
    "completion_tokens": 10,
    "total_tokens": 29,
    "prompt_tokens_details": {
      "cached_tokens": 0,
      "audio_tokens": 0
    },
    "completion_tokens_details": {
      "reasoning_tokens": 0,
      "audio_tokens": 0,
      "accepted_prediction_tokens": 0,
      "rejected_prediction_tokens": 0
    }
  },
  "service_tier": "default",
  "system_fingerprint": "fp_44709d6fcb"
}
"""

OPENAI_CHUNK_ROLE = (
    'data: {"id":"%(id)s","object":"chat.completion.chunk","created":%(created)d,'
    '"model":"%(model)s","system_fingerprint":"fp_44709d6fcb","choices":[{"index":0,'
    '"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,'
    '"finish_reason":null}],"usage":null}\n\n'
)
OPENAI_CHUNK_CONTENT = (
    'data: {"id":"%(id)s","object":"chat.completion.chunk","created":%(created)d,'
    '"model":"%(model)s","system_fingerprint":"fp_44709d6fcb","choices":[{"index":0,'
    '"delta":{"content":%(piece)s},"logprobs":null,"finish_reason":null}],"usage":null}\n\n'
)
OPENAI_CHUNK_STOP = (
    'data: {"id":"%(id)s","object":"chat.completion.chunk","created":%(created)d,'
    '"model":"%(model)s","system_fingerprint":"fp_44709d6fcb","choices":[{"index":0,'
    '"delta":{},"logprobs":null,"finish_reason":"stop"}],"usage":null}\n\n'
)
OPENAI_CHUNK_USAGE = (
    'data: {"id":"%(id)s","object":"chat.completion.chunk","created":%(created)d,'
    '"model":"%(model)s","system_fingerprint":"fp_44709d6fcb","choices":[],"usage":'
    '{"prompt_tokens":19,"completion_tokens":10,"total_tokens":29,"prompt_tokens_details":'
    '{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0,'
    '"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}}\n\n'
)
OPENAI_DONE = "data: [DONE]\n\n"

OPENAI_TOOL_COMPLETION = """{
  "id": "%(id)s",
  "object": "chat.completion",
  "created": %(created)d,
  "model": "%(model)s",
  "choices": [
    {
      "index": 0,
      "message": {
        "role": "assistant",
        "content": null,
        "tool_calls": [
          {
            "id": "call_abc123",
            "type": "function",
            "function": {
              "name": "%(tool)s",
              "arguments": "{\\"location\\": \\"San Francisco, CA\\"}"
            }
          }
        ],
        "refusal": null,
        "annotations": []
      },
      "logprobs": null,
      "finish_reason": "tool_calls"
    }
  ],
  "usage": {
    "prompt_tokens": 82,
    "completion_tokens": 17,
    "total_tokens": 99,
    "prompt_tokens_details": {"cached_tokens": 64, "audio_tokens": 0},
    "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
      "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}
  },
  "service_tier": "default",
  "system_fingerprint": "fp_44709d6fcb"
}
"""
OPENAI_TOOL_CHUNKS = [
    '{"role":"assistant","content":null,"tool_calls":[{"index":0,"id":"call_abc123",'
    '"type":"function","function":{"name":"%(tool)s","arguments":""}}],"refusal":null}',
    '{"tool_calls":[{"index":0,"function":{"arguments":"{\\"location\\""}}]}',
    '{"tool_calls":[{"index":0,"function":{"arguments":": \\"San Francisco, CA\\"}"}}]}',
]
OPENAI_DELTA = (
    'data: {"id":"%(id)s","object":"chat.completion.chunk","created":%(created)d,'
    '"model":"%(model)s","system_fingerprint":"fp_44709d6fcb","choices":[{"index":0,'
    '"delta":%(delta)s,"logprobs":null,"finish_reason":%(finish)s}],"usage":null}\n\n'
)
OPENAI_JSON_REPLY = '{"location": "San Francisco, CA"}'
OPENAI_EMBEDDINGS = """{
  "object": "list",
  "data": [%(rows)s],
  "model": "%(model)s",
  "usage": {"prompt_tokens": %(tokens)d, "total_tokens": %(tokens)d}
}
"""
OPENAI_EMBEDDING_ROW = '{"object": "embedding", "index": %(index)d, "embedding": %(vector)s}'
