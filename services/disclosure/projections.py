"""The disclosure service's copy of registry facts, built from consumed events."""

from __future__ import annotations

from services.disclosure import domain
from services.registry import domain as registry
from shared.consumer import OutOfOrder
from shared.db import Connection, Migration
from shared.kafka import IncomingEvent

MIGRATIONS = (
    Migration(
        100,
        "disclosure read models: public functions and list versions",
        """
        CREATE TABLE {schema}.registry_functions (
            function_id     text PRIMARY KEY,
            jurisdiction    text NOT NULL,
            status          text NOT NULL,
            is_public       boolean NOT NULL,
            stream_version  integer NOT NULL,
            updated_at      timestamptz NOT NULL,
            state           jsonb NOT NULL
        );
        CREATE INDEX registry_functions_public_idx ON {schema}.registry_functions (jurisdiction) WHERE is_public;
        CREATE TABLE {schema}.public_list_versions (
            jurisdiction  text NOT NULL,
            version       integer NOT NULL,
            entries       jsonb NOT NULL,
            published_at  timestamptz NOT NULL,
            PRIMARY KEY (jurisdiction, version)
        );
        GRANT SELECT, INSERT, UPDATE, DELETE ON {schema}.registry_functions, {schema}.public_list_versions TO {role};
        """,
    ),
)


async def apply_registry_event(conn: Connection, incoming: IncomingEvent) -> None:
    """Fold one registry event into the disclosure copy (runs inside the inbox transaction)."""
    event = registry.EVENTS.decode(incoming.event_type, incoming.schema_version, incoming.data)
    if isinstance(event, registry.FunctionListPublished):
        await conn.execute(
            """INSERT INTO public_list_versions (jurisdiction, version, entries, published_at)
               VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING""",
            event.jurisdiction,
            event.version,
            [e.model_dump(mode="json") for e in event.entries],
            incoming.time,
        )
        return
    function_id: str = event.function_id  # type: ignore[attr-defined]  # every other event names it
    row = await conn.fetchrow(
        "SELECT state, stream_version FROM registry_functions WHERE function_id = $1 FOR UPDATE", function_id
    )
    known = row["stream_version"] if row else 0
    if incoming.stream_version <= known:
        return  # an older copy of something already folded in (a republish under a new id)
    if incoming.stream_version != known + 1:
        raise OutOfOrder(f"{incoming.subject}: version {incoming.stream_version} arrived after {known}")
    state = registry.FunctionState.model_validate(row["state"]) if row else registry.initial_function()
    state = registry.evolve_function(state, event)
    await conn.execute(
        """INSERT INTO registry_functions
               (function_id, jurisdiction, status, is_public, stream_version, updated_at, state)
           VALUES ($1, $2, $3, $4, $5, $6, $7)
           ON CONFLICT (function_id) DO UPDATE SET status = $3, is_public = $4, stream_version = $5,
               updated_at = $6, state = $7""",
        function_id,
        state.jurisdiction,
        state.status,
        domain.is_public(state),
        incoming.stream_version,
        incoming.time,
        state.model_dump(mode="json"),
    )
