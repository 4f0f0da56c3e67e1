"""What a service's own database role must not be able to do to its history.

Shared by the integration test (each service's migrations in a fresh schema) and the
end-to-end test (the roles of a running stack): both connect as the service's login role
and try every way to change or remove an event, a log entry or a checkpoint.
"""

from __future__ import annotations

import asyncpg

HISTORY_TABLES = ("events", "log_entries", "checkpoints")
"""The append-only tables: the events, the dense sealed log, the signed checkpoints."""

REWRITES = (
    "UPDATE {table} SET {column} = {column}",
    "UPDATE {table} SET {column} = {column} WHERE false",
    "DELETE FROM {table}",
    "DELETE FROM {table} WHERE false",
    "TRUNCATE {table}",
    "TRUNCATE {table} CASCADE",
    # an upsert is an update in disguise
    "INSERT INTO {table} OVERRIDING SYSTEM VALUE SELECT * FROM {table} WHERE false"
    " ON CONFLICT ({key}) DO UPDATE SET {column} = EXCLUDED.{column}",
)
COLUMN = {"events": "payload", "log_entries": "leaf_hash", "checkpoints": "signature"}
KEY = {"events": "position", "log_entries": "log_index", "checkpoints": "tree_size"}
TRIGGERS = {
    "events": ("events_append_only_rows", "events_append_only_truncate"),
    "log_entries": ("log_entries_append_only", "log_entries_no_truncate"),
    "checkpoints": ("checkpoints_append_only", "checkpoints_no_truncate"),
}

ESCAPES = (
    "ALTER TABLE {table} DISABLE TRIGGER ALL",
    "ALTER TABLE {table} DISABLE TRIGGER USER",
    "DROP TRIGGER {trigger} ON {table}",
    "ALTER TABLE {table} DISABLE TRIGGER {trigger}",
    "ALTER TABLE {table} RENAME TO {table}_old",
    "DROP TABLE {table}",
    "CREATE RULE rewrite AS ON UPDATE TO {table} DO INSTEAD NOTHING",
    "CREATE TRIGGER sneak BEFORE INSERT ON {table} FOR EACH ROW EXECUTE FUNCTION refuse_event_change()",
    "ALTER TABLE {table} OWNER TO CURRENT_USER",
    "COMMENT ON TABLE {table} IS 'mine'",
)
SESSION_ESCAPES = (
    "SET session_replication_role = replica",
    "SET ROLE {owner}",
    "ALTER ROLE CURRENT_USER SUPERUSER",
    "ALTER ROLE CURRENT_USER BYPASSRLS",
)


async def counts(conn: asyncpg.Connection) -> dict[str, int]:
    return {table: await conn.fetchval(f"SELECT count(*) FROM {table}") for table in HISTORY_TABLES}


async def history(conn: asyncpg.Connection, upto: dict[str, int] | None = None) -> dict[str, tuple[int, int, str]]:
    """Each append-only table's rows (up to a key, if given): how many, the last key, a digest.

    A running stack keeps appending (its sealer signs checkpoints every few seconds), so what
    must hold is that the rows there before are all still there, unchanged.
    """
    seen = {}
    for table in HISTORY_TABLES:
        key = KEY[table]
        row = await conn.fetchrow(
            f"""SELECT count(*), coalesce(max({key}), 0), md5(coalesce(string_agg(t::text, ',' ORDER BY {key}), ''))
                FROM {table} t WHERE {key} <= $1""",
            (upto or {}).get(table, 2**62),
        )
        seen[table] = (row[0], row[1], row[2])
    return seen


async def assert_history_cannot_be_rewritten_by(conn: asyncpg.Connection, role: str) -> None:
    """Every rewrite, every way around the triggers and every escalation is refused to ``role``."""
    assert await conn.fetchval("SELECT current_user") == role
    attributes = await conn.fetchrow(
        "SELECT rolsuper, rolcreaterole, rolcreatedb, rolbypassrls, rolreplication FROM pg_roles WHERE rolname = $1",
        role,
    )
    assert attributes is not None and not any(attributes.values()), dict(attributes or {})
    before = await history(conn)
    assert all(count for count, _, _ in before.values()), f"test the tables with rows in them: {before}"
    for table in HISTORY_TABLES:
        owner = await conn.fetchval("SELECT tableowner FROM pg_tables WHERE tablename = $1", table)
        assert owner != role, f"{role} owns {table}"
        for privilege in ("UPDATE", "DELETE", "TRUNCATE", "TRIGGER", "REFERENCES"):
            granted = await conn.fetchval("SELECT has_table_privilege($1, $2, $3)", role, table, privilege)
            assert not granted, f"{role} holds {privilege} on {table}"
        statements = [
            statement.format(table=table, column=COLUMN[table], key=KEY[table], trigger=trigger)
            for statement in (*REWRITES, *ESCAPES)
            for trigger in TRIGGERS[table]
        ]
        for sql in dict.fromkeys(statements):
            try:
                async with conn.transaction():
                    await conn.execute(sql)
            except asyncpg.InsufficientPrivilegeError:
                continue
            raise AssertionError(f"{role} was allowed: {sql}")
        # GRANT to oneself is not an error in PostgreSQL, only a warning that nothing was granted
        async with conn.transaction():
            await conn.execute(f"GRANT UPDATE, DELETE, TRUNCATE ON {table} TO CURRENT_USER")
        assert not await conn.fetchval("SELECT has_table_privilege($1, $2, 'UPDATE')", role, table)
    owner = await conn.fetchval("SELECT tableowner FROM pg_tables WHERE tablename = 'events'")
    for sql in (statement.format(owner=owner) for statement in SESSION_ESCAPES):
        try:
            async with conn.transaction():
                await conn.execute(sql)
        except asyncpg.InsufficientPrivilegeError:
            continue
        raise AssertionError(f"{role} was allowed: {sql}")
    assert await history(conn, upto={table: last for table, (_, last, _) in before.items()}) == before
