"""The ``l04`` command: run workers, the mock upstream, the demo, and look at the fleet."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys

from config.settings import parse_worker_processes
from gateway_core.errors import GatewayError
from l04.batch_cmd import add_batch_commands
from l04.dlq_cmd import add_dlq_commands
from l04.keys_cmd import add_keys_commands
from l04.trace_cmd import add_trace_command


def _cmd_worker(args: argparse.Namespace) -> int:
    from config.settings import get_settings
    from l04.supervisor import resolve_processes, run_supervisor
    from l04.worker import run_worker

    providers = [p.strip() for p in args.providers.split(",") if p.strip()]
    wanted = args.processes if args.processes is not None else get_settings().worker_processes
    processes = resolve_processes(wanted)
    if processes > 1 and args.supervisor is None:
        return run_supervisor(
            processes, providers, args.concurrency, args.loglevel, args.name, args.metrics_port
        )
    return run_worker(
        providers, args.concurrency, args.loglevel, args.name, args.metrics_port, args.supervisor
    )


def _processes(value: str) -> int | str:
    try:
        return parse_worker_processes(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _supervisor(value: str) -> tuple[int, int]:
    from l04.supervisor import parse_supervisor

    try:
        return parse_supervisor(value)
    except ValueError:
        raise argparse.ArgumentTypeError("PID:FD") from None


def _cmd_serve(args: argparse.Namespace) -> int:
    from gateway_http.serve import serve

    return serve(args.host, args.port, args.workers, no_auth=args.no_auth, log_level=args.loglevel)


def _at_least_one(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number, 1 or more: {value!r}")
    return number


def _cmd_mock_provider(args: argparse.Namespace) -> int:
    from l04.mock_upstream import serve

    serve(args.host, args.port, args.latency_ms)
    return 0


def _cmd_flower(args: argparse.Namespace) -> int:
    """Flower on the fleet's broker: the l04 queues, workers and tasks."""
    import os

    from l04.worker import run_celery
    from tasks.celery import app

    argv = ["flower", f"--port={args.port}", f"--address={args.address}"]
    basic_auth = args.basic_auth or os.environ.get("L04_FLOWER_BASIC_AUTH")
    if basic_auth:
        argv.append(f"--basic-auth={basic_auth}")
    return run_celery(app, argv)


def _cmd_demo(args: argparse.Namespace) -> int:
    from l04.demo import run_demo

    return run_demo(jobs=args.jobs)


def _cmd_health(args: argparse.Namespace) -> int:
    from gateway_client.gateway import ModelGateway

    async def check() -> dict[str, object]:
        gateway = ModelGateway()
        try:
            return await gateway.health_check()
        finally:
            await gateway.close()

    report = asyncio.run(check())
    print(json.dumps(report, indent=2, default=str))
    return 0 if report.get("gateway") == "healthy" else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="l04", description="L04 model gateway fleet")
    sub = parser.add_subparsers(dest="command", required=True)

    worker = sub.add_parser("worker", help="run a worker for some providers' queues")
    worker.add_argument(
        "--providers",
        default="mock",
        help="comma-separated: openai,anthropic,ollama,claude_code,mock",
    )
    worker.add_argument(
        "--concurrency",
        type=int,
        default=500,
        help="provider calls in flight in each process (default 500)",
    )
    worker.add_argument(
        "--processes",
        type=_processes,
        default=None,
        metavar="N|auto",
        help="worker processes on this host, under one supervisor; auto: one per core "
        "(default 1, or L04_WORKER_PROCESSES)",
    )
    worker.add_argument("--loglevel", default="INFO")
    worker.add_argument("--name", default=None, help="Celery node name (default: l04-...@host)")
    worker.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="serve Prometheus metrics on this port (also L04_METRICS_PORT); with --processes, "
        "one endpoint for all of them",
    )
    # Given by the supervisor to the processes it starts: its pid and the pipe for "ready".
    worker.add_argument("--supervisor", type=_supervisor, default=None, help=argparse.SUPPRESS)
    worker.set_defaults(func=_cmd_worker)

    serve = sub.add_parser(
        "serve", help="the HTTP front door: OpenAI- and Anthropic-compatible APIs on the fleet"
    )
    serve.add_argument(
        "--host", default=None, help="address to listen on (default 127.0.0.1, or L04_HTTP_HOST)"
    )
    serve.add_argument(
        "--port", type=int, default=None, help="port (default 8004, or L04_HTTP_PORT)"
    )
    serve.add_argument(
        "--workers",
        type=_at_least_one,
        default=1,
        help="server processes on the one socket (default 1)",
    )
    serve.add_argument(
        "--no-auth",
        action="store_true",
        help="serve without virtual keys, as one local agent (loopback addresses only)",
    )
    serve.add_argument("--loglevel", default="INFO")
    serve.set_defaults(func=_cmd_serve)

    mock = sub.add_parser("mock-provider", help="serve the providers' wire formats locally")
    mock.add_argument("--host", default="127.0.0.1")
    mock.add_argument("--port", type=int, default=8099)
    mock.add_argument("--latency-ms", type=float, default=0.0)
    mock.set_defaults(func=_cmd_mock_provider)

    demo = sub.add_parser("demo", help="start Redis and a worker if needed, run mixed jobs")
    demo.add_argument("--jobs", type=int, default=12)
    demo.set_defaults(func=_cmd_demo)

    flower = sub.add_parser("flower", help="run Flower on the fleet's broker")
    flower.add_argument("--port", type=int, default=5555)
    flower.add_argument("--address", default="127.0.0.1")
    flower.add_argument(
        "--basic-auth",
        default=None,
        help="user:password (also L04_FLOWER_BASIC_AUTH); none: no authentication",
    )
    flower.set_defaults(func=_cmd_flower)

    add_batch_commands(sub)
    add_dlq_commands(sub)
    add_keys_commands(sub)
    add_trace_command(sub)

    health = sub.add_parser("health", help="Redis, workers per queue, queue depths")
    health.set_defaults(func=_cmd_health)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except GatewayError as error:
        print(f"l04: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
