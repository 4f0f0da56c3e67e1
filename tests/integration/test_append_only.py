"""Append-only as each service's own database role, on each service's real migrations.

The role a service connects as may read its history and append to it; it may not update,
delete or truncate an event, a sealed log entry or a signed checkpoint, nor get around the
triggers that forbid it (disable, drop, rename, own, replication role, escalation). The
same check runs against the roles of a running stack in tests/e2e/hardening.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import asyncpg
import pytest

from services.capability import projections as capability
from services.disclosure import projections as disclosure
from services.registry import projections as registry
from services.supervision import projections as supervision
from shared import db
from tests.integration.append_only import HISTORY_TABLES, assert_history_cannot_be_rewritten_by, counts

MIGRATIONS = {
    "registry": registry.MIGRATIONS,
    "capability": capability.MIGRATIONS,
    "supervision": supervision.MIGRATIONS,
    "disclosure": disclosure.MIGRATIONS,
}
HASH = b"\x01" * 32


async def seed_history(conn: asyncpg.Connection) -> None:
    """One event, its log entry and a checkpoint, appended as the role itself (which it may)."""
    position = await conn.fetchval(
        """INSERT INTO events (stream_id, stream_type, stream_version, event_id, event_type, schema_version,
               occurred_at, actor_subject, actor_org, actor_role, actor_jurisdiction, jurisdiction,
               correlation_id, payload, prev_hash, hash)
           VALUES ('s-1', 's', 1, $1, 'Noted', 1, $2, 'clerk', 'org', 'association', '510600', '510600',
               $3, '{"text": "kept"}'::jsonb, $4, $4)
           RETURNING position""",
        uuid.uuid4(),
        datetime.now(UTC),
        uuid.uuid4(),
        HASH,
    )
    await conn.execute("INSERT INTO log_entries (log_index, position, leaf_hash) VALUES (0, $1, $2)", position, HASH)
    await conn.execute(
        """INSERT INTO checkpoints (tree_size, origin, root_hash, signed_at, key_id, body, signature)
           VALUES (1, 'test', $1, now(), 'k', 'body', $1)""",
        HASH,
    )


@pytest.mark.parametrize("service", sorted(MIGRATIONS))
async def test_the_service_role_cannot_rewrite_its_history(pg_admin_url: str, service: str) -> None:
    schema = f"{service[:4]}{uuid.uuid4().hex[:8]}"
    await db.migrate(pg_admin_url, schema, MIGRATIONS[service])
    role = db.role_name(schema)
    conn = await db.connect(db.app_url(pg_admin_url, schema, None), schema)
    try:
        await seed_history(conn)
        await assert_history_cannot_be_rewritten_by(conn, role)
    finally:
        await conn.close()


@pytest.mark.parametrize("table", HISTORY_TABLES)
async def test_even_the_owner_cannot_rewrite_the_history_the_triggers_guard(pg_admin_url: str, table: str) -> None:
    schema = f"own{uuid.uuid4().hex[:8]}"
    await db.migrate(pg_admin_url, schema, [])
    role_conn = await db.connect(db.app_url(pg_admin_url, schema, None), schema)
    try:
        await seed_history(role_conn)
    finally:
        await role_conn.close()
    owner = await db.connect(pg_admin_url, schema)
    try:
        before = await counts(owner)
        column = {"events": "payload", "log_entries": "leaf_hash", "checkpoints": "signature"}[table]
        for sql in (f"UPDATE {table} SET {column} = {column}", f"DELETE FROM {table}", f"TRUNCATE {table}"):
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
                await owner.execute(sql)
        # the triggers fire even for replication sessions (ENABLE ALWAYS)
        async with owner.transaction():
            await owner.execute("SET LOCAL session_replication_role = replica")
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
                await owner.execute(f"DELETE FROM {table}")
        assert await counts(owner) == before
    finally:
        await owner.close()
