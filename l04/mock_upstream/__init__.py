"""``l04 mock-provider``: a local server speaking OpenAI's, Anthropic's and Ollama's wire formats.

The transcripts are in ``*_wire.py``, one module per provider; ``server.py`` serves them.
"""

from l04.mock_upstream.openai_wire import REPLY, REPLY_PIECES
from l04.mock_upstream.server import MockUpstream, embed, serve

__all__ = ["REPLY", "REPLY_PIECES", "MockUpstream", "embed", "serve"]
