"""Fleet control whose state lives in Redis, shared by every worker: limits, breakers."""
