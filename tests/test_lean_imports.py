"""A worker imports only what its config uses (issue #16: its memory is mostly imports).

Each probe runs in a fresh interpreter: the worker's entry point and everything a worker
builds before and during its first task (the Temporal client's options, telemetry, the
activities, the configured provider), then lists `sys.modules`.
"""

import json
import subprocess
import sys
from typing import Any

import pytest

PROBE = """
import asyncio, json, sys
import temporal_executor.cli, temporal_executor.commands
from temporal_executor.schemas.config import Settings
from temporal_executor.tasks.temporal_connection import connect_options
from temporal_executor.telemetry.process import observed
from temporal_executor.worker.service import build_activities

settings = Settings.model_validate(json.loads(sys.argv[1]))

async def main():
    async with observed(settings, "worker", serve=False):
        connect_options(settings)
        activities, publisher, providers = build_activities(settings)
        for provider in settings.llm.providers:
            providers.get(provider.name)
        await providers.aclose()

asyncio.run(main())
print(json.dumps(sorted(sys.modules)))
"""

# Never in a worker: the other processes' code and their web stack.
OTHER_PROCESSES = (
    "temporal_executor.bridge",
    "temporal_executor.gateway",
    "fastapi",
    "starlette",
    "uvicorn",
    "a2a",
    "jwt",
)
# Only when config asks for them.
SDKS = ("openai", "anthropic", "google.genai")
OPTIONAL = (
    "mcp",
    "aioboto3",
    "botocore",
    "cryptography",  # temporal.encryption
    "opentelemetry.sdk",  # observability.tracing
    "opentelemetry.exporter",
)


def loaded_by_worker(config: dict[str, Any]) -> set[str]:
    config = {"llm": {"providers": []}, **config}  # not the defaults' example providers
    out = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(config)],
        capture_output=True,
        text=True,
        check=True,
        env={"PROBE_KEY": "00" * 32, "PATH": ""},
    ).stdout
    return set(json.loads(out.splitlines()[-1]))


def loaded(modules: set[str], packages: tuple[str, ...]) -> list[str]:
    return sorted(p for p in packages if any(m == p or m.startswith(f"{p}.") for m in modules))


def provider(kind: str) -> dict[str, Any]:
    return {"name": kind, "kind": kind, "api_key_env": "PROBE_KEY"}


def test_a_worker_with_only_openai_loads_no_other_sdk_nor_unused_feature() -> None:
    modules = loaded_by_worker({"llm": {"providers": [provider("openai")]}})
    assert "openai" in modules  # the probe did create the provider
    assert loaded(modules, OTHER_PROCESSES + SDKS + OPTIONAL) == ["openai"]
    # openai runs on httpx2: the older httpx (with click and pygments) is google-genai's.
    assert loaded(modules, ("httpx", "click", "pygments")) == []


@pytest.mark.parametrize(
    ("config", "feature"),
    [
        ({"llm": {"providers": [provider("anthropic")]}}, "anthropic"),
        (
            {
                "temporal": {
                    "encryption": {"enabled": True, "keys": [{"id": "k", "env": "PROBE_KEY"}]}
                }
            },
            "cryptography",
        ),
        (
            {"observability": {"tracing": {"exporter": "console"}}},
            "opentelemetry.sdk",
        ),
    ],
)
def test_a_feature_in_config_loads_what_it_needs(config: dict[str, Any], feature: str) -> None:
    """The probe reaches each lazily imported dependency when config asks for it."""
    assert feature in loaded(loaded_by_worker(config), SDKS + OPTIONAL)
