"""Database set-up shared by every service: its schema, its login role, migrations, pool.

Each service owns one PostgreSQL schema (``registry``, ``disclosure``, ...) in the
``chengneng`` database. Migrations run with the administrative ``DATABASE_URL``; the
service itself then connects as its own login role, which may read and insert events but
holds no UPDATE, DELETE or TRUNCATE privilege on them. Triggers refuse those statements
for every role, owners included, so append-only does not depend on the code.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg
import orjson
import structlog
from asyncpg.pool import PoolConnectionProxy

log = structlog.get_logger(__name__)

Connection = asyncpg.Connection | PoolConnectionProxy
"""A connection as handlers receive it: plain, or borrowed from a pool."""


@dataclass(frozen=True)
class Migration:
    """One forward-only schema change. ``sql`` may use ``{schema}`` and ``{role}``."""

    version: int
    name: str
    sql: str


CORE_MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "event store, relay positions, inbox, idempotency keys",
        """
        CREATE TABLE {schema}.events (
            position        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            stream_id       text        NOT NULL,
            stream_type     text        NOT NULL,
            stream_version  integer     NOT NULL CHECK (stream_version >= 1),
            event_id        uuid        NOT NULL UNIQUE,
            event_type      text        NOT NULL,
            schema_version  integer     NOT NULL CHECK (schema_version >= 1),
            occurred_at     timestamptz NOT NULL,
            recorded_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
            actor_subject   text        NOT NULL,
            actor_org       text        NOT NULL,
            actor_role      text        NOT NULL,
            actor_jurisdiction text     NOT NULL,
            jurisdiction    text        NOT NULL,
            correlation_id  uuid        NOT NULL,
            causation_id    uuid,
            payload         jsonb       NOT NULL,
            prev_hash       bytea       NOT NULL CHECK (octet_length(prev_hash) = 32),
            hash            bytea       NOT NULL CHECK (octet_length(hash) = 32),
            xact_id         xid8        NOT NULL DEFAULT pg_current_xact_id(),
            CONSTRAINT events_stream_version_key UNIQUE (stream_id, stream_version)
        );
        CREATE INDEX events_correlation_idx ON {schema}.events (correlation_id);
        CREATE INDEX events_type_idx ON {schema}.events (event_type, position);

        CREATE FUNCTION {schema}.refuse_event_change() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'the % table is append-only: % refused', TG_TABLE_NAME, TG_OP
                USING ERRCODE = 'insufficient_privilege';
        END $$;
        CREATE TRIGGER events_append_only_rows BEFORE UPDATE OR DELETE ON {schema}.events
            FOR EACH ROW EXECUTE FUNCTION {schema}.refuse_event_change();
        CREATE TRIGGER events_append_only_truncate BEFORE TRUNCATE ON {schema}.events
            FOR EACH STATEMENT EXECUTE FUNCTION {schema}.refuse_event_change();
        -- ALWAYS: the triggers fire even under session_replication_role = replica.
        ALTER TABLE {schema}.events ENABLE ALWAYS TRIGGER events_append_only_rows;
        ALTER TABLE {schema}.events ENABLE ALWAYS TRIGGER events_append_only_truncate;

        CREATE TABLE {schema}.relay_positions (
            name        text PRIMARY KEY,
            position    bigint NOT NULL,
            updated_at  timestamptz NOT NULL DEFAULT now()
        );
        CREATE TABLE {schema}.inbox (
            consumer     text NOT NULL,
            event_id     uuid NOT NULL,
            source       text NOT NULL,
            event_type   text NOT NULL,
            outcome      text NOT NULL DEFAULT 'applied',
            received_at  timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (consumer, event_id)
        );
        CREATE TABLE {schema}.idempotency_keys (
            principal     text NOT NULL,
            key           text NOT NULL,
            request_hash  text NOT NULL,
            status        integer NOT NULL,
            body          jsonb NOT NULL,
            created_at    timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (principal, key)
        );

        GRANT USAGE ON SCHEMA {schema} TO {role};
        GRANT SELECT, INSERT ON {schema}.events TO {role};
        GRANT SELECT, INSERT, UPDATE ON {schema}.relay_positions TO {role};
        GRANT SELECT, INSERT, UPDATE ON {schema}.inbox TO {role};
        GRANT SELECT, INSERT ON {schema}.idempotency_keys TO {role};
        """,
    ),
    Migration(
        2,
        "audit: dense log index in commit order, signed checkpoints (both append-only)",
        """
        CREATE TABLE {schema}.log_entries (
            log_index  bigint PRIMARY KEY CHECK (log_index >= 0),
            position   bigint NOT NULL UNIQUE,
            leaf_hash  bytea NOT NULL CHECK (octet_length(leaf_hash) = 32)
        );
        CREATE TABLE {schema}.checkpoints (
            tree_size  bigint PRIMARY KEY CHECK (tree_size >= 0),
            origin     text NOT NULL,
            root_hash  bytea NOT NULL CHECK (octet_length(root_hash) = 32),
            signed_at  timestamptz NOT NULL,
            key_id     text NOT NULL,
            body       text NOT NULL,
            signature  bytea NOT NULL
        );
        CREATE TRIGGER log_entries_append_only BEFORE UPDATE OR DELETE ON {schema}.log_entries
            FOR EACH ROW EXECUTE FUNCTION {schema}.refuse_event_change();
        CREATE TRIGGER log_entries_no_truncate BEFORE TRUNCATE ON {schema}.log_entries
            FOR EACH STATEMENT EXECUTE FUNCTION {schema}.refuse_event_change();
        CREATE TRIGGER checkpoints_append_only BEFORE UPDATE OR DELETE ON {schema}.checkpoints
            FOR EACH ROW EXECUTE FUNCTION {schema}.refuse_event_change();
        CREATE TRIGGER checkpoints_no_truncate BEFORE TRUNCATE ON {schema}.checkpoints
            FOR EACH STATEMENT EXECUTE FUNCTION {schema}.refuse_event_change();
        ALTER TABLE {schema}.log_entries ENABLE ALWAYS TRIGGER log_entries_append_only;
        ALTER TABLE {schema}.log_entries ENABLE ALWAYS TRIGGER log_entries_no_truncate;
        ALTER TABLE {schema}.checkpoints ENABLE ALWAYS TRIGGER checkpoints_append_only;
        ALTER TABLE {schema}.checkpoints ENABLE ALWAYS TRIGGER checkpoints_no_truncate;
        CREATE TABLE {schema}.sealer_cursor (
            singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
            xid        bigint NOT NULL,
            position   bigint NOT NULL
        );
        CREATE INDEX events_tail_idx ON {schema}.events (xact_id, position);
        GRANT SELECT, INSERT ON {schema}.log_entries, {schema}.checkpoints TO {role};
        GRANT SELECT, INSERT, UPDATE ON {schema}.sealer_cursor TO {role};
        """,
    ),
    Migration(
        3,
        "snapshots of long streams (derived data, rebuildable)",
        """
        CREATE TABLE {schema}.snapshots (
            stream_id    text NOT NULL,
            version      integer NOT NULL CHECK (version > 0),
            occurred_at  timestamptz NOT NULL,
            state        jsonb NOT NULL,
            PRIMARY KEY (stream_id, version)
        );
        GRANT SELECT, INSERT, DELETE ON {schema}.snapshots TO {role};
        """,
    ),
    Migration(
        4,
        "inbox: the stream and version of each event, so every stream is applied in order",
        """
        ALTER TABLE {schema}.inbox ADD COLUMN subject text, ADD COLUMN stream_version integer;
        CREATE INDEX inbox_stream_idx ON {schema}.inbox (consumer, source, subject, stream_version);
        -- Rows from before this migration know no stream; the ordering check waives itself
        -- for a consumer while it has any (a republish fills them in as duplicates arrive).
        CREATE INDEX inbox_unknown_stream_idx ON {schema}.inbox (consumer) WHERE subject IS NULL;
        """,
    ),
    Migration(
        5,
        "inbox: events that came before their predecessor are held back, with their record, until it is applied",
        """
        -- outcome 'held_back': not applied yet; held_record keeps the Kafka record (topic,
        -- partition, offset, key, value, headers) so the consumer applies it right after its
        -- predecessor, whether or not the record is delivered again.
        ALTER TABLE {schema}.inbox ADD COLUMN held_record jsonb,
            ADD CONSTRAINT inbox_held_record_check CHECK ((outcome = 'held_back') = (held_record IS NOT NULL));
        CREATE INDEX inbox_held_back_idx ON {schema}.inbox (consumer) WHERE outcome = 'held_back';
        """,
    ),
)


def channel(schema: str, what: str) -> str:
    """The LISTEN/NOTIFY channel on which a schema's sealer announces ``sealed`` events.

    Appends do not notify: PostgreSQL serialises the commits of notifying transactions
    (one queue lock), which would cost concurrent writers their group commit. The sealer
    polls instead, briefly; only its own commits notify the relay.
    """
    return f"{schema}_{what}"


UNAVAILABLE: tuple[type[Exception], ...] = (
    OSError,  # refused, reset, no socket file: the server is not there
    TimeoutError,
    asyncpg.PostgresConnectionError,  # class 08: the connection failed or was lost
    asyncpg.InterfaceError,  # the client's connection is closed
    asyncpg.exceptions.OperatorInterventionError,  # class 57: shutting down, starting up, cancelled
    asyncpg.exceptions.InsufficientResourcesError,  # class 53: too many connections, disk full
    asyncpg.exceptions.ReadOnlySQLTransactionError,  # a standby during a fail-over
    # The server ended a connection between two queries (a shutdown): the client notices on
    # the next query, as a protocol state it cannot leave; the pool then replaces the connection.
    asyncpg.exceptions.InternalClientError,
)
"""What a database outage looks like from a client, as opposed to a fault of the request."""


def unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` means the database cannot serve now (retry later), not that we did wrong.

    HTTP answers such a failure with 503 and Retry-After; a consumer waits and retries the
    event instead of counting it as the event's failure (a good event is never dead-lettered
    because the database was away).
    """
    return isinstance(exc, UNAVAILABLE)


def role_name(service: str) -> str:
    return f"chengneng_{service}"


def app_url(admin_url: str, service: str, password: str | None) -> str:
    """The service's own connection URL: the admin URL with the service role as user."""
    parts = urlsplit(admin_url)
    host = parts.netloc.rsplit("@", 1)[-1]
    user = role_name(service)
    credentials = user if password is None else f"{user}:{quote(password, safe='')}"
    return urlunsplit(parts._replace(netloc=f"{credentials}@{host}"))


def _json_bytes(value: Any) -> bytes:
    """JSON for a json/jsonb parameter: orjson, or the standard library for what orjson refuses."""
    try:
        return orjson.dumps(value)
    except TypeError:  # orjson.JSONEncodeError: e.g. integers beyond 64 bits, non-string keys
        return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def _json_text(value: Any) -> str:
    return _json_bytes(value).decode()


def _jsonb_binary(value: Any) -> bytes:
    """jsonb's binary wire form: a version byte (1), then the JSON text."""
    return b"\x01" + _json_bytes(value)


def _jsonb_parse(data: bytes) -> Any:
    """Parse jsonb's binary wire form. orjson reads the UTF-8 bytes as they come: the text
    form would first be decoded into a ``str`` that orjson then encodes again, which cost a
    quarter of reading an event's payload."""
    if data[:1] != b"\x01":
        raise ValueError(f"unknown jsonb wire format version {data[:1]!r}")
    return orjson.loads(data[1:])


def _timestamptz_text(value: datetime) -> str:
    """A moment as ISO text in UTC: PostgreSQL refuses offsets beyond ±15:59 that Python allows."""
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise TypeError(f"a timestamptz must be a datetime with its zone, not {value!r}")
    return value.astimezone(UTC).isoformat()


def _timestamptz_parse(text: str) -> datetime:
    """A timestamptz from the server's ISO text, in UTC.

    asyncpg builds a datetime from the binary form through a timedelta: for an event's two
    timestamps, a fifth of the instructions of replaying it. The C parser of ISO text takes
    a fifth of that. The server writes ISO text under the default ``DateStyle`` (set on
    every connection) in the session's zone; other zones are brought to UTC, which is what
    asyncpg's own decoder gives.

    The price: asyncpg reads row values (``ROW(...)``, a whole-row reference) only in binary,
    so a timestamptz inside one fails to decode, loudly. Select such fields as columns.
    """
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo is UTC else moment.astimezone(UTC)


_SESSION = {"DateStyle": "ISO, MDY"}
"""PostgreSQL's default date style, whatever the server's configuration: timestamptz values
are read as ISO text (see ``_timestamptz_parse``)."""


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("json", encoder=_json_text, decoder=orjson.loads, schema="pg_catalog")
    await conn.set_type_codec(
        "timestamptz", encoder=_timestamptz_text, decoder=_timestamptz_parse, schema="pg_catalog", format="text"
    )
    await conn.set_type_codec(
        "jsonb", encoder=_jsonb_binary, decoder=_jsonb_parse, schema="pg_catalog", format="binary"
    )


async def connect(url: str, schema: str) -> asyncpg.Connection:
    """One connection with chengneng's codecs (json, jsonb, timestamptz) and the service schema on the search path."""
    conn = await asyncpg.connect(url, server_settings={"search_path": schema, **_SESSION})
    await _init_connection(conn)
    return conn


async def create_pool(url: str, schema: str, *, min_size: int = 1, max_size: int = 10) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(
        url,
        min_size=min_size,
        max_size=max_size,
        init=_init_connection,
        reset=_keep_session,
        server_settings={"search_path": schema, "application_name": f"chengneng-{schema}", **_SESSION},
        command_timeout=30,
    )
    assert pool is not None
    return pool


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Return a connection to the pool without asyncpg's reset query (a round trip each time).

    Pool connections carry no session state to undo: advisory locks are transaction-level,
    LISTEN and session locks live on connections of their own, nothing runs SET outside a
    transaction. asyncpg still rolls back an open transaction and drops listeners first.
    """


async def migrate(
    admin_url: str,
    service: str,
    migrations: Sequence[Migration],
    *,
    app_password: str | None = None,
) -> list[int]:
    """Create the schema and role if missing and apply pending migrations, once, under a lock.

    Core migrations are numbered 1-99; a service's own migrations start at 100.
    """
    schema, role = service, role_name(service)
    conn = await asyncpg.connect(admin_url)
    applied: list[int] = []
    try:
        # One migrator at a time across replicas: a transaction-wide advisory lock.
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext('chengneng-migrate'))")
            await _ensure_role(conn, role, app_password)
            await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
            await conn.execute(
                f"""CREATE TABLE IF NOT EXISTS {schema}.schema_migrations (
                        version integer PRIMARY KEY,
                        name text NOT NULL,
                        applied_at timestamptz NOT NULL DEFAULT now())"""
            )
            done = {r["version"] for r in await conn.fetch(f"SELECT version FROM {schema}.schema_migrations")}
            for migration in sorted((*CORE_MIGRATIONS, *migrations), key=lambda m: m.version):
                if migration.version in done:
                    continue
                await conn.execute(migration.sql.format(schema=schema, role=role))
                await conn.execute(
                    f"INSERT INTO {schema}.schema_migrations (version, name) VALUES ($1, $2)",
                    migration.version,
                    migration.name,
                )
                applied.append(migration.version)
            await conn.execute(f"GRANT SELECT ON {schema}.schema_migrations TO {role}")
    finally:
        await conn.close()
    if applied:
        log.info("migrations applied", service=service, versions=applied)
    return applied


async def drop_service(admin_url: str, service: str) -> None:
    """Undo ``migrate``: the service's schema with everything in it, and its role if any."""
    role = role_name(service)
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f"DROP SCHEMA IF EXISTS {service} CASCADE")
        if await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role):
            await conn.execute(f"DROP OWNED BY {role}")
            await conn.execute(f"DROP ROLE {role}")
    finally:
        await conn.close()


async def _ensure_role(conn: asyncpg.Connection, role: str, password: str | None) -> None:
    exists = await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role)
    if not exists:
        await conn.execute(f"CREATE ROLE {role} LOGIN")
    if password is not None:
        # Passwords cannot be bound as parameters in utility statements; quote as a literal.
        literal = await conn.fetchval("SELECT quote_literal($1)", password)
        await conn.execute(f"ALTER ROLE {role} PASSWORD {literal}")
    database = await conn.fetchval("SELECT quote_ident(current_database())")
    await conn.execute(f"GRANT CONNECT ON DATABASE {database} TO {role}")


@dataclass
class Batch:
    """A transaction that applies many things at once and, if any of them fails, is rolled
    back and each thing done again in a transaction of its own (``InboxConsumer`` applying a
    fetch together).

    Inside one, work that would protect its writes with a savepoint, to retry them alone,
    may write without: the batch's rollback and the one-by-one retry do that job. It must then
    mark the batch ``spoiled`` when it fails, because a caller may catch the error and carry
    on, and the batch must be rolled back all the same.
    """

    spoiled: bool = False


_BATCH: ContextVar[Batch | None] = ContextVar("chengneng_batch", default=None)


@contextlib.contextmanager
def batch() -> Iterator[Batch]:
    """Mark what runs inside (in this task) as part of a ``Batch``."""
    current = Batch()
    token = _BATCH.set(current)
    try:
        yield current
    finally:
        _BATCH.reset(token)


def current_batch() -> Batch | None:
    """The batch this code runs in, if any."""
    return _BATCH.get()


class Wakeup:
    """Wakes a polling loop as soon as PostgreSQL notifies a channel (``listen``) or this
    process says there is work (``notify``); the poll interval stays as the fallback, so a
    lost notification (a reconnect, say) costs at most one interval."""

    def __init__(self) -> None:
        self._notified = asyncio.Event()

    async def listen(self, conn: asyncpg.Connection, channel_name: str) -> None:
        await conn.add_listener(channel_name, self._on_notify)

    def _on_notify(self, *_: object) -> None:
        self._notified.set()

    def notify(self) -> None:
        self._notified.set()

    def pending(self) -> bool:
        """Whether the next ``wait`` returns at once."""
        return self._notified.is_set()

    async def wait(self, timeout_s: float) -> None:
        """Return when notified (or already notified since the last wait), or after ``timeout_s``."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._notified.wait(), timeout_s)
        self._notified.clear()
