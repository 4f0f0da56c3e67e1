"""Settings of every process, read from the environment (pydantic-settings).

The names without a prefix (``DATABASE_URL``, ``KAFKA_BOOTSTRAP_SERVERS``) are the ones
operators already know; everything of our own starts with ``CHENGNENG_``.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    # Only the upper-case names are read (no ``populate_by_name``: it would make a lower-case
    # ``home`` variable, or $HOME on case-insensitive lookups, set the state directory).
    model_config = SettingsConfigDict(extra="ignore", case_sensitive=True)

    home: Path = Field(
        default=Path(".chengneng"),
        validation_alias="CHENGNENG_HOME",
        description="State directory: embedded database files, broker port, keys.",
    )
    database_url: str | None = Field(
        default=None,
        validation_alias="DATABASE_URL",
        description="Administrative PostgreSQL URL; unset means the embedded server.",
    )
    kafka_bootstrap_servers: str | None = Field(
        default=None,
        validation_alias="KAFKA_BOOTSTRAP_SERVERS",
        description="Kafka bootstrap servers; unset means the embedded broker.",
    )
    db_app_password: str | None = Field(
        default=None,
        validation_alias="CHENGNENG_DB_APP_PASSWORD",
        description="Password of the per-service login roles (not needed with trust auth).",
    )
    http_host: str = Field(default="127.0.0.1", validation_alias="CHENGNENG_HTTP_HOST")
    http_port: int = Field(default=0, validation_alias="CHENGNENG_HTTP_PORT")
    token_private_key: Path | None = Field(
        default=None,
        validation_alias="CHENGNENG_TOKEN_PRIVATE_KEY",
        description="Ed25519 PEM used by `chengneng token issue`; default $CHENGNENG_HOME/keys.",
    )
    token_public_key: Path | None = Field(
        default=None,
        validation_alias="CHENGNENG_TOKEN_PUBLIC_KEY",
        description="Ed25519 PEM that services verify tokens with; default $CHENGNENG_HOME/keys.",
    )
    kafka_session_timeout_ms: int = Field(
        default=10_000,
        validation_alias="CHENGNENG_KAFKA_SESSION_TIMEOUT_MS",
    )
    relay_batch_size: int = Field(default=500, validation_alias="CHENGNENG_RELAY_BATCH_SIZE")
    poll_interval_s: float = Field(
        default=0.2,
        validation_alias="CHENGNENG_POLL_INTERVAL_S",
        description="How often the relay looks for new events when idle.",
    )
    topic_check_interval_s: float = Field(
        default=2.0,
        validation_alias="CHENGNENG_TOPIC_CHECK_INTERVAL_S",
        description="How often the relay checks that the broker still has its topic.",
    )
    topic_partitions: int = Field(
        default=3,
        ge=1,
        validation_alias="CHENGNENG_TOPIC_PARTITIONS",
        description="Partitions of the topics the services create (the unit of consumer scale-out).",
    )
    topic_replication: int = Field(
        default=1,
        ge=1,
        validation_alias="CHENGNENG_TOPIC_REPLICATION",
        description="Replication factor of created topics: 1 for one broker, 3 for a production cluster.",
    )
    checkpoint_interval_s: float = Field(
        default=10.0,
        gt=0,
        validation_alias="CHENGNENG_CHECKPOINT_INTERVAL_S",
        description="How often each service signs a checkpoint of its log (when it grew).",
    )
    deadline_check_interval_s: float = Field(
        default=30.0,
        gt=0,
        validation_alias="CHENGNENG_DEADLINE_CHECK_INTERVAL_S",
        description="How often the deadline processor looks for milestones and rectifications past due.",
    )
    log_level: str = Field(default="info", validation_alias="CHENGNENG_LOG_LEVEL")
    max_body_bytes: int = Field(default=1_048_576, validation_alias="CHENGNENG_MAX_BODY_BYTES")

    @cached_property
    def keys_dir(self) -> Path:
        return self.home / "keys"

    @property
    def private_key_path(self) -> Path:
        return self.token_private_key or self.keys_dir / "token-signing.pem"

    @property
    def public_key_path(self) -> Path:
        return self.token_public_key or self.keys_dir / "token-signing.pub.pem"
