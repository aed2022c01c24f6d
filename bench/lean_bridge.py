"""The bridge with only what it needs imported: `temporal-executor bridge` minus the CLI.

``python -m bench.lean_bridge CONFIG`` runs `run_bridge` as the CLI does (same settings,
logging and signals) without importing `temporal_executor.commands`, which also imports
the worker, the HTTP/A2A gateway and the dev stack for its other subcommands. The
benchmark reports both, to show what the bridge itself costs in memory.
"""

import asyncio
import sys

from temporal_executor.bridge.service import run_bridge
from temporal_executor.config_file import load_settings
from temporal_executor.logs import configure_logging
from temporal_executor.processes import stop_on_signals


async def main_async(config: str) -> None:
    settings = load_settings(config)
    configure_logging(settings.logging)
    stop = asyncio.Event()
    stop_on_signals(stop)
    await run_bridge(settings, stop)


if __name__ == "__main__":
    asyncio.run(main_async(sys.argv[1]))
