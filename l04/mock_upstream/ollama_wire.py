"""Ollama /api/chat, /api/embed and /api/tags responses, as Ollama documents them."""

from __future__ import annotations

OLLAMA_CHAT = """{
  "model": "%(model)s",
  "created_at": "2023-12-12T14:13:43.416799Z",
  "message": {
    "role": "assistant",
    "content": "Hello! How can I assist you today?"
  },
  "done": true,
  "done_reason": "stop",
  "total_duration": 5191566416,
  "load_duration": 2154458,
  "prompt_eval_count": 26,
  "prompt_eval_duration": 383809000,
  "eval_count": 10,
  "eval_duration": 4799921000
}
"""
OLLAMA_TOOL_CHAT = """{
  "model": "%(model)s",
  "created_at": "2024-07-22T20:33:28.123648Z",
  "message": {
    "role": "assistant",
    "content": "",
    "tool_calls": [
      {
        "function": {
          "name": "%(tool)s",
          "arguments": {
            "location": "San Francisco, CA"
          }
        }
      }
    ]
  },
  "done_reason": "stop",
  "done": true,
  "total_duration": 885095291,
  "load_duration": 3753500,
  "prompt_eval_count": 122,
  "prompt_eval_duration": 328493000,
  "eval_count": 33,
  "eval_duration": 552222000
}
"""
OLLAMA_STREAM_PIECE = (
    '{"model":"%(model)s","created_at":"2023-08-04T08:52:19.385406455-07:00",'
    '"message":{"role":"assistant","content":%(piece)s},"done":false}\n'
)
OLLAMA_STREAM_TOOL = (
    '{"model":"%(model)s","created_at":"2024-07-22T20:33:28.123648Z","message":{"role":'
    '"assistant","content":"","tool_calls":[{"function":{"name":"%(tool)s","arguments":'
    '{"location":"San Francisco, CA"}}}]},"done":false}\n'
)
OLLAMA_STREAM_DONE = (
    '{"model":"%(model)s","created_at":"2023-08-04T19:22:45.499127Z","message":{"role":'
    '"assistant","content":""},"done":true,"done_reason":"stop","total_duration":4883583458,'
    '"load_duration":1334875,"prompt_eval_count":26,"prompt_eval_duration":342546000,'
    '"eval_count":10,"eval_duration":4535599000}\n'
)
OLLAMA_EMBED = """{
  "model": "%(model)s",
  "embeddings": %(vectors)s,
  "total_duration": 14143917,
  "load_duration": 1019500,
  "prompt_eval_count": 8
}
"""
OLLAMA_TAGS = """{
  "models": [
    {
      "name": "llama3.1:8b",
      "model": "llama3.1:8b",
      "modified_at": "2024-07-23T14:23:29.812466Z",
      "size": 4661230766,
      "digest": "42182419e9508c30c4b1fe55015f06b65f4ca4b9e28a744be55008d21998a093",
      "details": {"format": "gguf", "family": "llama", "parameter_size": "8.0B",
                  "quantization_level": "Q4_0"}
    }
  ]
}
"""
OLLAMA_ERROR = '{"error":"%(message)s"}'

OPENAI_ERROR = """{
  "error": {
    "message": "%(message)s",
    "type": "%(type)s",
    "param": null,
    "code": "%(code)s"
  }
}
"""
_OPENAI_ERROR_KINDS = {
    400: ("invalid_request_error", "invalid_request", "Invalid request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: ("invalid_request_error", "forbidden", "You are not allowed to do this."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests."),
    500: ("server_error", "server_error", "The server had an error processing your request."),
    503: ("server_error", "overloaded", "The engine is currently overloaded."),
}
