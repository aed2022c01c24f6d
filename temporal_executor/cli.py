"""The `temporal-executor` command.

dev        the embedded stack (Temporal, Kafka, NATS), a worker and a bridge
worker     the worker process (agent workflows and activities)
bridge     the bridge process (bus → Temporal)
gateway    the HTTP and A2A gateway (REST API, Server-Sent Events, A2A JSON-RPC)
send       publish an execution request; --follow prints its events
approve    reply to an approval request (signed with --key)
sign-approval  print the signature (approvalsig) of an approval reply, for kcat or nats
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
from typing import TYPE_CHECKING

from temporal_executor.config_file import CONFIG_PATH_ENV, ConfigError, load_settings
from temporal_executor.dev.stack import DevPorts
from temporal_executor.processes import INTERRUPTED, until_interrupted
from temporal_executor.schemas import json_schemas
from temporal_executor.schemas.config import Settings
from temporal_executor.schemas.requests import ApprovalReplied
from temporal_executor.tasks.errors import KeyConfigError

if TYPE_CHECKING:
    from temporal_executor.signing import ReplySigner

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
        return INTERRUPTED
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

    return isinstance(
        exc, TransportConfigError | TemporalConfigError | EncryptionError | KeyConfigError
    )


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
    if command == "sign-approval":
        reply = ApprovalReplied(
            task_id=args.task_id,
            approval_id=args.approval_id,
            approved=not args.deny,
            approver=args.approver,
            reason=args.reason,
            arguments=json.loads(args.arguments) if args.arguments else None,
        )
        signer = _signer(args)
        assert signer is not None  # --key is required here
        return commands.sign_approval(reply, signer, event_id=args.event_id, whole_event=args.event)
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
        sending = commands.send(
            settings,
            args.message,
            task_id=args.task_id or f"task-{uuid.uuid4().hex[:12]}",
            provider=args.provider,
            model=args.model,
            tools=args.tools,
            require_approval=args.require_approval,
            follow=args.follow,
            stream=args.stream,
        )
        return await until_interrupted(sending) if args.follow else await sending
    if command == "approve":
        return await commands.approve(
            settings,
            args.task_id,
            args.approval_id,
            approved=not args.deny,
            reason=args.reason,
            approver=args.approver,
            signer=_signer(args),
        )
    if command == "cancel":
        return await commands.cancel(settings, args.task_id, reason=args.reason)
    if command == "status":
        from temporal_executor.task_status import show_status

        return await show_status(settings, args.task_id, sys.stdout)
    return await commands.events(
        settings, args.task, from_start=args.from_start, deltas=args.deltas
    )


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
    send.add_argument(
        "--stream",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="ask for agent.llm.delta events (default: with --follow, printing the text as "
        "it streams; else config's executor.stream)",
    )

    approve = sub.add_parser("approve", help="reply to an approval request")
    approve.add_argument("task_id")
    approve.add_argument("approval_id")
    approve.add_argument("--deny", action="store_true", help="deny instead of approving")
    approve.add_argument("--reason")
    _signing_options(approve, required=False)
    _transport_option(approve)

    sign = sub.add_parser(
        "sign-approval", help="print an approval reply's approvalsig (or, --event, the reply)"
    )
    sign.add_argument("task_id")
    sign.add_argument("approval_id")
    sign.add_argument("--deny", action="store_true", help="sign a denial")
    sign.add_argument("--reason", help="(with --event) the reply's reason; not signed")
    sign.add_argument("--arguments", help="edited tool arguments, a JSON object")
    sign.add_argument(
        "--event-id", help="the reply event's id (default: a new one, printed on stderr)"
    )
    sign.add_argument(
        "--event",
        action="store_true",
        help="print the whole signed reply as a structured-mode CloudEvent (one JSON line)",
    )
    _signing_options(sign, required=True)

    cancel = sub.add_parser("cancel", help="ask for a task to be cancelled")
    cancel.add_argument("task_id")
    cancel.add_argument("--reason")
    _transport_option(cancel)

    events = sub.add_parser("events", help="print task events as they arrive")
    events.add_argument("--task", help="only this task's events")
    events.add_argument("--from-start", action="store_true", help="also events already published")
    events.add_argument(
        "--deltas",
        action="store_true",
        help="also print agent.llm.delta text as it streams (live only, best-effort)",
    )
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


def _signing_options(parser: argparse.ArgumentParser, *, required: bool) -> None:
    parser.add_argument(
        "--key",
        type=Path,
        required=required,
        help="sign with this key file: an Ed25519 private key (PEM or JWK) or an HS256 secret",
    )
    parser.add_argument(
        "--approver", required=required, help="who approves (default: your user name)"
    )
    parser.add_argument(
        "--signer", help="the key's name in approvals.keys when it is not the approver (a bot)"
    )
    parser.add_argument(
        "--valid-for", type=float, metavar="SECONDS", help="signature lifetime (default: 300)"
    )


def _signer(args: argparse.Namespace) -> "ReplySigner | None":
    if args.key is None:
        return None
    from temporal_executor.signing import ReplySigner

    return ReplySigner.from_file(args.key, signer=args.signer, valid_seconds=args.valid_for)


def _transport_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--transport", choices=["kafka", "nats"], help="bus to use (default: bus.default)"
    )


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
