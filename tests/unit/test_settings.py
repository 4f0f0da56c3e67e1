"""Settings read from the environment: operator names, our CHENGNENG_ names, and nothing else."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from shared.settings import Settings

_ENV_NAMES = (
    "DATABASE_URL",
    "KAFKA_BOOTSTRAP_SERVERS",
    "home",
    "database_url",
    "kafka_bootstrap_servers",
    "token_private_key",
    "token_public_key",
    "http_port",
)


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """No setting leaks in from the shell that runs the tests."""
    for name in list(os.environ):
        if name.startswith("CHENGNENG_") or name in _ENV_NAMES:
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return monkeypatch


def test_defaults_point_at_a_local_state_directory() -> None:
    settings = Settings()
    assert settings.home == Path(".chengneng")
    assert settings.database_url is None
    assert settings.kafka_bootstrap_servers is None
    assert settings.http_host == "127.0.0.1"
    assert settings.http_port == 0


def test_home_stays_dot_chengneng_when_the_users_home_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", "/home/operator")
    assert Settings().home == Path(".chengneng")


def test_operator_names_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql://admin@db:5432/chengneng")
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "kafka-1:9092,kafka-2:9092")
    settings = Settings()
    assert settings.database_url == "postgresql://admin@db:5432/chengneng"
    assert settings.kafka_bootstrap_servers == "kafka-1:9092,kafka-2:9092"


def test_chengneng_names_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHENGNENG_HOME", "/var/lib/chengneng")
    monkeypatch.setenv("CHENGNENG_HTTP_PORT", "8081")
    monkeypatch.setenv("CHENGNENG_RELAY_BATCH_SIZE", "50")
    settings = Settings()
    assert settings.home == Path("/var/lib/chengneng")
    assert settings.http_port == 8081
    assert settings.relay_batch_size == 50


@pytest.mark.parametrize(
    ("name", "attribute", "default"),
    [("home", "home", Path(".chengneng")), ("database_url", "database_url", None)],
)
def test_lower_case_field_names_in_the_environment_are_ignored(
    monkeypatch: pytest.MonkeyPatch, name: str, attribute: str, default: object
) -> None:
    monkeypatch.setenv(name, "/from/a/lower-case/variable")
    assert getattr(Settings(), attribute) == default


def test_lower_case_chengneng_home_is_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("chengneng_home", "/from/a/lower-case/variable")
    assert Settings().home == Path(".chengneng")


def test_constructor_keywords_set_the_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHENGNENG_HOME", "/from/the/environment")
    settings = Settings(CHENGNENG_HOME=Path("/from/the/command/line"), DATABASE_URL="postgresql://x/y")  # type: ignore[call-arg]
    assert settings.home == Path("/from/the/command/line")
    assert settings.database_url == "postgresql://x/y"


def test_key_paths_default_under_home_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHENGNENG_HOME", "/srv/chengneng")
    settings = Settings()
    assert settings.private_key_path == Path("/srv/chengneng/keys/token-signing.pem")
    assert settings.public_key_path == Path("/srv/chengneng/keys/token-signing.pub.pem")


def test_key_paths_default_under_the_default_home() -> None:
    settings = Settings()
    assert settings.private_key_path == Path(".chengneng/keys/token-signing.pem")
    assert settings.public_key_path == Path(".chengneng/keys/token-signing.pub.pem")


def test_explicit_key_paths_win_over_home(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHENGNENG_HOME", "/srv/chengneng")
    monkeypatch.setenv("CHENGNENG_TOKEN_PRIVATE_KEY", "/secrets/signing.pem")
    monkeypatch.setenv("CHENGNENG_TOKEN_PUBLIC_KEY", "/config/signing.pub.pem")
    settings = Settings()
    assert settings.private_key_path == Path("/secrets/signing.pem")
    assert settings.public_key_path == Path("/config/signing.pub.pem")
