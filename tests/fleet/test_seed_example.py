"""The seed's usage example, as written, against a real worker (model_id="mock")."""

from __future__ import annotations

from collections.abc import Callable

from tests.processes import WorkerProcess


async def test_seed_usage_example_runs_against_a_real_worker(
    redis_url: str, start_worker: Callable[..., WorkerProcess], monkeypatch, capsys
) -> None:
    start_worker("mock")
    monkeypatch.setenv("REDIS_URL", redis_url)  # ModelGateway() reads the environment

    from gateway_client import InferenceRequest, Message, MessageRole, ModelGateway

    async def seed_example() -> None:
        # Initialize gateway (uses default providers)
        gateway = ModelGateway()

        # Create a request
        request = InferenceRequest.create(
            agent_did="did:key:agent1",
            messages=[
                Message(role=MessageRole.SYSTEM, content="You are a helpful assistant."),
                Message(role=MessageRole.USER, content="Hello, world!"),
            ],
            model_id="mock",  # Optional: explicit model
            enable_cache=True,
            max_tokens=100,
        )

        # Execute inference
        response = await gateway.execute(request)

        print(f"Response: {response.content}")
        print(f"Tokens: {response.token_usage.total_tokens}")
        print(f"Latency: {response.latency_ms}ms")
        print(f"Cached: {response.cached}")

        # Streaming inference
        async for chunk in gateway.stream(request):
            print(chunk.content_delta, end="", flush=True)
            if chunk.is_final:
                print(f"\nTotal tokens: {chunk.token_usage.total_tokens}")

        # Health check
        health = await gateway.health_check()
        print(f"Gateway status: {health['gateway']}")

        # Cleanup
        await gateway.close()

    await seed_example()
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "Response: Mock response to: Hello, world!"
    total = int(out[1].removeprefix("Tokens: "))
    assert total > 0
    assert out[2].startswith("Latency: ") and out[2].endswith("ms")
    assert out[3] == "Cached: False"
    # The stream printed the same answer, then the same token total.
    assert out[4] == "Mock response to: Hello, world!"
    assert out[5] == f"Total tokens: {total}"
    # Only the mock provider has a worker: the other four providers' jobs could not be answered.
    assert out[6] == "Gateway status: degraded"
