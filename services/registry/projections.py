"""Read models of the registry, kept in its own schema and updated with each append.

``functions`` holds each function's current state (one row per stream, with the folded
state as JSON so the projector can evolve it without re-reading the stream);
``function_lists`` holds every published version of each jurisdiction's list.
Both can be rebuilt from the events at any time (``rebuild``).
"""

from __future__ import annotations

from services.registry import domain
from shared import readmodels
from shared.db import Connection, Migration
from shared.envelope import Recorded
from shared.messages import Event

MIGRATIONS = (
    Migration(
        100,
        "registry read models: functions and published lists",
        """
        CREATE TABLE {schema}.functions (
            function_id      text PRIMARY KEY,
            jurisdiction     text NOT NULL,
            title            text NOT NULL,
            category         text NOT NULL,
            sub_kind         text NOT NULL,
            department       text NOT NULL,
            status           text NOT NULL,
            society_id       text,
            stream_version   integer NOT NULL,
            last_position    bigint NOT NULL,
            updated_at       timestamptz NOT NULL,
            state            jsonb NOT NULL
        );
        CREATE INDEX functions_jurisdiction_status_idx ON {schema}.functions (jurisdiction, status);
        CREATE INDEX functions_category_idx ON {schema}.functions (category);
        CREATE TABLE {schema}.function_lists (
            jurisdiction  text NOT NULL,
            version       integer NOT NULL,
            entries       jsonb NOT NULL,
            note          text NOT NULL,
            published_at  timestamptz NOT NULL,
            published_by  text NOT NULL,
            PRIMARY KEY (jurisdiction, version)
        );
        GRANT SELECT, INSERT, UPDATE, DELETE ON {schema}.functions, {schema}.function_lists TO {role};
        """,
    ),
)

ON_THE_LIST = (
    domain.Status.LISTED,
    domain.Status.OPEN,
    domain.Status.ASSIGNED,
    domain.Status.TRANSFERRED,
    domain.Status.RETURNED,
)
"""States in which a function stands on its jurisdiction's transferable-function list."""


async def project(conn: Connection, envelope: Recorded, event: Event) -> None:
    """Update the read models for one new event (called inside the append transaction)."""
    if isinstance(event, domain.FunctionListPublished):
        await conn.execute(
            """INSERT INTO function_lists (jurisdiction, version, entries, note, published_at, published_by)
               VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING""",
            event.jurisdiction,
            event.version,
            [e.model_dump(mode="json") for e in event.entries],
            event.note,
            envelope.occurred_at,
            envelope.actor.organisation,
        )
        return
    function_id: str = event.function_id  # type: ignore[attr-defined]  # every other event names it  # every other registry event names its function
    raw = await conn.fetchval("SELECT state FROM functions WHERE function_id = $1", function_id)
    state = domain.FunctionState.model_validate(raw) if raw is not None else domain.initial_function()
    state = domain.evolve_function(state, event)
    await conn.execute(
        """INSERT INTO functions (function_id, jurisdiction, title, category, sub_kind, department, status,
                                  society_id, stream_version, last_position, updated_at, state)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
           ON CONFLICT (function_id) DO UPDATE SET
               title = $3, status = $7, society_id = $8, stream_version = $9, last_position = $10,
               updated_at = $11, state = $12""",
        state.function_id,
        state.jurisdiction,
        state.title,
        state.category,
        state.sub_kind,
        state.department,
        state.status,
        state.society_id,
        envelope.stream_version,
        envelope.position,
        envelope.occurred_at,
        state.model_dump(mode="json"),
    )


async def rebuild(conn: Connection) -> int:
    """Recompute every read model of this service from its events."""
    return await readmodels.rebuild(conn, ("functions", "function_lists"), domain.EVENTS, project)
