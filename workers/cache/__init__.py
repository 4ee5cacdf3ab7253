"""The response cache: exact (hash of the normalized request) and semantic (embeddings)."""
