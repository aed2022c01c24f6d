"""The `temporal-executor` command.

dev        the embedded stack (Temporal, Kafka, NATS), a worker and a bridge
worker     the worker process (agent workflows and activities)
bridge     the bridge process (bus → Temporal)
gateway    the HTTP and A2A gateway (REST API, Server-Sent Events, A2A JSON-RPC)
send       publish an execution request; --follow prints its events
approve    reply to an approval request
cancel     ask for a task to be cancelled
events     print task events as they arrive
status     a task's state, pending approvals, usage and last events
schema     write the JSON Schemas of every event's data and of the config file
"""

import argparse
import asyncio
import json
import os
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path

from temporal_executor.config_file import CONFIG_PATH_ENV, ConfigError, load_settings
from temporal_executor.dev.stack import DevPorts
from temporal_executor.schemas import json_schemas
from temporal_executor.schemas.config import Settings

DEFAULT_CONFIG = Path("config/temporal-executor.yaml")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = _settings(args)
    except ConfigError as exc:
        print(f"temporal-executor: {exc}", file=sys.stderr)
        return 2
    from temporal_executor.logs import configure_logging

    if args.command in ("dev", "send", "approve", "cancel", "events", "status"):
        settings.logging.format = "text"
        if args.command != "dev":
            settings.logging.level = "WARNING"
    configure_logging(settings.logging)
    try:
        return asyncio.run(_run(args, settings))
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if not _is_config_problem(exc):
            raise
        # Credentials or keys that cannot work: say which, without a traceback.
        print(f"temporal-executor: {exc}", file=sys.stderr)
        return 2


def _is_config_problem(exc: Exception) -> bool:
    # Imported here: the modules are loaded by the time they raise, and the CLI starts
    # without temporalio.
    from temporal_executor.bus.errors import TransportConfigError
    from temporal_executor.tasks.payload_encryption import EncryptionError
    from temporal_executor.tasks.temporal_connection import TemporalConfigError

    return isinstance(exc, TransportConfigError | TemporalConfigError | EncryptionError)


def _settings(args: argparse.Namespace) -> Settings:
    path = args.config
    if path is None and not os.environ.get(CONFIG_PATH_ENV) and DEFAULT_CONFIG.is_file():
        path = DEFAULT_CONFIG
    settings = load_settings(path)
    if getattr(args, "transport", None):
        settings.bus.default = args.transport
    return settings


async def _run(args: argparse.Namespace, settings: Settings) -> int:
    from temporal_executor import commands

    command: str = args.command
    if command == "schema":
        return _write_schemas(Path(args.out))
    if command == "dev":
        ports = DevPorts(
            temporal=args.temporal_port,
            ui=args.ui_port,
            kafka=args.kafka_port,
            nats=args.nats_port,
            gateway=args.gateway_port,
        )
        return await commands.dev(settings, Path(args.data_dir), demo=args.demo, ports=ports)
    if command == "worker":
        return await commands.worker(settings)
    if command == "bridge":
        return await commands.bridge(settings)
    if command == "gateway":
        return await commands.gateway(settings)
    if command == "send":
        return await commands.send(
            settings,
            args.message,
            task_id=args.task_id or f"task-{uuid.uuid4().hex[:12]}",
            provider=args.provider,
            model=args.model,
            tools=args.tools,
            require_approval=args.require_approval,
            follow=args.follow,
        )
    if command == "approve":
        return await commands.approve(
            settings, args.task_id, args.approval_id, approved=not args.deny, reason=args.reason
        )
    if command == "cancel":
        return await commands.cancel(settings, args.task_id, reason=args.reason)
    if command == "status":
        from temporal_executor.task_status import show_status

        return await show_status(settings, args.task_id, sys.stdout)
    return await commands.events(settings, args.task, from_start=args.from_start)


def _write_schemas(out: Path) -> int:
    out.mkdir(parents=True, exist_ok=True)
    for name, schema in json_schemas().items():
        path = out / f"{name}.schema.json"
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        print(path)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="temporal-executor",
        description="Run AI agents durably on Temporal, driven by CloudEvents on Kafka or NATS.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__,
    )
    parser.add_argument(
        "--config",
        type=Path,
        help=f"YAML config file (default: $TEMPORAL_EXECUTOR_CONFIG, else {DEFAULT_CONFIG} "
        "if present, else built-in defaults)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    dev = sub.add_parser("dev", help="embedded stack + worker + bridge")
    dev.add_argument("--data-dir", default=".temporal-executor/dev", help="servers' data and logs")
    dev.add_argument("--demo", action="store_true", help="also send a demo task and follow it")
    defaults = DevPorts()
    for server, what, default in [
        ("temporal", "Temporal", defaults.temporal),
        ("ui", "the Temporal Web UI", defaults.ui),
        ("kafka", "Kafka", defaults.kafka),
        ("nats", "NATS", defaults.nats),
        ("gateway", "the HTTP and A2A gateway", defaults.gateway),
    ]:
        dev.add_argument(
            f"--{server}-port",
            type=int,
            default=default,
            metavar="PORT",
            help=f"port of {what} (default: {default})",
        )

    sub.add_parser("worker", help="run the worker")
    sub.add_parser("bridge", help="run the bridge")
    sub.add_parser("gateway", help="run the HTTP and A2A gateway (config: gateway.*)")

    send = sub.add_parser("send", help="publish an execution request")
    send.add_argument("message", help="the user message")
    _transport_option(send)
    send.add_argument("--task-id", help="default: a new random id")
    send.add_argument("--provider", help="LLM provider name from config")
    send.add_argument("--model", help="model name")
    send.add_argument("--tool", dest="tools", action="append", help="offer this tool (repeat)")
    send.add_argument(
        "--require-approval", action="store_true", help="every tool call needs approval"
    )
    send.add_argument("--follow", action="store_true", help="print the task's events until it ends")

    approve = sub.add_parser("approve", help="reply to an approval request")
    approve.add_argument("task_id")
    approve.add_argument("approval_id")
    approve.add_argument("--deny", action="store_true", help="deny instead of approving")
    approve.add_argument("--reason")
    _transport_option(approve)

    cancel = sub.add_parser("cancel", help="ask for a task to be cancelled")
    cancel.add_argument("task_id")
    cancel.add_argument("--reason")
    _transport_option(cancel)

    events = sub.add_parser("events", help="print task events as they arrive")
    events.add_argument("--task", help="only this task's events")
    events.add_argument("--from-start", action="store_true", help="also events already published")
    _transport_option(events)

    status = sub.add_parser("status", help="a task's state, approvals, usage and last events")
    status.add_argument("task_id")

    schema = sub.add_parser("schema", help="write JSON Schemas")
    schema.add_argument("--out", default="schemas/json", help="directory (default: schemas/json)")
    for command in sub.choices.values():
        # Also after the command (`temporal-executor worker --config F`), as people type it;
        # SUPPRESS keeps a value given before the command.
        command.add_argument(
            "--config", type=Path, default=argparse.SUPPRESS, help="YAML config file"
        )
    return parser


def _transport_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--transport", choices=["kafka", "nats"], help="bus to use (default: bus.default)"
    )


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
