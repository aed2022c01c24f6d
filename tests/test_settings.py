from pathlib import Path

import pytest

from temporal_executor.config_file import ConfigError, load_settings

REPO_CONFIG = Path(__file__).parent.parent / "config" / "temporal-executor.yaml"


def test_shipped_config_file_matches_the_built_in_defaults() -> None:
    from_file = load_settings(REPO_CONFIG, env={})
    built_in = load_settings(None, env={})
    assert from_file == built_in


def test_environment_overrides_the_file(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("temporal:\n  host_port: file:7233\nbus:\n  default: kafka\n")
    settings = load_settings(
        config,
        env={
            "TEMPORAL_ADDRESS": "env:7233",
            "TEMPORAL_EXECUTOR__BUS__DEFAULT": "nats",
            "TEMPORAL_EXECUTOR__EXECUTOR__REQUIRE_APPROVAL": "[save_note, calculator]",
            "NATS_URL": "nats://elsewhere:4222",
        },
    )
    assert settings.temporal.host_port == "env:7233"
    assert settings.bus.default == "nats"
    assert settings.executor.require_approval == ["save_note", "calculator"]
    assert settings.bus.nats.url == "nats://elsewhere:4222"


def test_config_path_from_environment(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("executor:\n  max_iterations: 3\n")
    settings = load_settings(None, env={"TEMPORAL_EXECUTOR_CONFIG": str(config)})
    assert settings.executor.max_iterations == 3


@pytest.mark.parametrize(
    ("content", "named"),
    [
        ("executor:\n  max_iterations: 0\n", "executor.max_iterations"),
        ("executor:\n  max_iteratons: 3\n", "executor.max_iteratons"),
        ("bus:\n  default: rabbitmq\n", "bus.default"),
        (
            "llm:\n  providers:\n    - {name: a, kind: openai}\n    - {name: a, kind: anthropic}\n",
            "duplicate",
        ),
        ("bus:\n  kafka:\n    enabled: false\n", "bus.kafka.enabled is false"),
        ("tools:\n  - name: bad.name\n", "tools.0.name"),
    ],
)
def test_bad_config_names_the_key(tmp_path: Path, content: str, named: str) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(content)
    with pytest.raises(ConfigError, match=r"Invalid configuration in .*c\.yaml") as caught:
        load_settings(config, env={})
    assert named in str(caught.value)


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="Cannot read config file"):
        load_settings(tmp_path / "missing.yaml", env={})
    broken = tmp_path / "broken.yaml"
    broken.write_text("temporal: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(broken, env={})
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="mapping at the top level"):
        load_settings(listing, env={})


def test_results_must_fit_in_an_event(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("bus:\n  max_message_bytes: 100000\nexecutor:\n  max_result_bytes: 60000\n")
    with pytest.raises(ConfigError, match="max_result_bytes"):
        load_settings(config, env={})


def test_a_fallback_must_name_a_configured_provider(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text(
        "llm:\n  providers:\n"
        "    - {name: a, kind: scripted, fallbacks: [{provider: b}]}\n"
        "    - {name: b, kind: scripted, fallbacks: [{provider: typo}]}\n"
    )
    with pytest.raises(ConfigError, match=r"'b' falls back to unknown providers \['typo'\]"):
        load_settings(config, env={})
