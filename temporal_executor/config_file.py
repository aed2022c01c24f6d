"""Load `Settings` from YAML plus environment overrides, once, at process start.

Overrides, strongest first:
- `TEMPORAL_EXECUTOR__<SECTION>__<KEY>=value` for any key (nested with `__`; the value is
  read as YAML, so `true`, `5` and `[a, b]` work), e.g. `TEMPORAL_EXECUTOR__BUS__DEFAULT=nats`;
- the conventional `TEMPORAL_ADDRESS`, `TEMPORAL_NAMESPACE`, `TEMPORAL_TASK_QUEUE`,
  `KAFKA_BOOTSTRAP_SERVERS` and `NATS_URL`;
- the YAML file (`--config`, else `$TEMPORAL_EXECUTOR_CONFIG`, else none: built-in defaults).
"""

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from temporal_executor.schemas.config import Settings

ENV_PREFIX = "TEMPORAL_EXECUTOR__"
CONFIG_PATH_ENV = "TEMPORAL_EXECUTOR_CONFIG"
CONVENTIONAL_ENV = {
    "TEMPORAL_ADDRESS": ("temporal", "host_port"),
    "TEMPORAL_NAMESPACE": ("temporal", "namespace"),
    "TEMPORAL_TASK_QUEUE": ("temporal", "task_queue"),
    "KAFKA_BOOTSTRAP_SERVERS": ("bus", "kafka", "bootstrap_servers"),
    "NATS_URL": ("bus", "nats", "url"),
}


class ConfigError(Exception):
    """The configuration cannot be used; the message names the key and the source."""


def load_settings(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> Settings:
    env = os.environ if env is None else env
    chosen = path or env.get(CONFIG_PATH_ENV)
    raw: dict[str, Any] = _read_yaml(Path(chosen)) if chosen else {}
    for name, keys in CONVENTIONAL_ENV.items():
        if env.get(name):
            _set(raw, keys, env[name])
    for name, value in env.items():
        if name.startswith(ENV_PREFIX) and len(name) > len(ENV_PREFIX):
            keys = tuple(part.lower() for part in name[len(ENV_PREFIX) :].split("__"))
            _set(raw, keys, yaml.safe_load(value) if value else value)
    try:
        return Settings.model_validate(raw)
    except ValidationError as exc:
        source = f" in {chosen}" if chosen else ""
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top level)'}: {err['msg']}"
            for err in exc.errors()
        )
        msg = f"Invalid configuration{source}: {problems}"
        raise ConfigError(msg) from None


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        msg = f"Cannot read config file {path}: {exc.strerror}"
        raise ConfigError(msg) from None
    except yaml.YAMLError as exc:
        msg = f"Config file {path} is not valid YAML: {exc}"
        raise ConfigError(msg) from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        msg = f"Config file {path} must hold a mapping at the top level"
        raise ConfigError(msg)
    return loaded


def _set(tree: dict[str, Any], keys: tuple[str, ...], value: Any) -> None:
    node = tree
    for key in keys[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = {}
            node[key] = child
        node = child
    node[keys[-1]] = value
