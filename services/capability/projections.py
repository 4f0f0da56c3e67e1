"""Read models of the capability service, updated with each append in its own schema.

``societies`` holds each society's current state (folded, as JSON, with the columns the
queries filter on); ``selections`` holds each function's selection. Both can be rebuilt
from the events (``rebuild``).
"""

from __future__ import annotations

from services.capability import domain
from shared import readmodels
from shared.db import Connection, Migration
from shared.envelope import Recorded
from shared.messages import Event

MIGRATIONS = (
    Migration(
        100,
        "capability read models: societies and selections",
        """
        CREATE TABLE {schema}.societies (
            society_id       text PRIMARY KEY,
            name             text NOT NULL,
            jurisdiction     text NOT NULL,
            level            text,
            relation         text,
            status           text NOT NULL,
            society_class    text,
            brand            boolean NOT NULL,
            willingness      text,
            self_assessment  text,
            participating    boolean NOT NULL,
            stream_version   integer NOT NULL,
            updated_at       timestamptz NOT NULL,
            state            jsonb NOT NULL
        );
        CREATE INDEX societies_jurisdiction_idx ON {schema}.societies (jurisdiction);
        CREATE INDEX societies_class_idx ON {schema}.societies (society_class);
        CREATE TABLE {schema}.selections (
            function_id      text PRIMARY KEY,
            jurisdiction     text NOT NULL,
            status           text NOT NULL,
            applicants       integer NOT NULL,
            ranking_version  integer NOT NULL,
            stream_version   integer NOT NULL,
            updated_at       timestamptz NOT NULL,
            state            jsonb NOT NULL
        );
        CREATE INDEX selections_jurisdiction_idx ON {schema}.selections (jurisdiction, status);
        GRANT SELECT, INSERT, UPDATE, DELETE ON {schema}.societies, {schema}.selections TO {role};
        """,
    ),
)

_SELECTION_TYPES = frozenset(domain.SELECTION_EVENTS.by_type)


async def project(conn: Connection, envelope: Recorded, event: Event) -> None:
    """Update the read models for one new event (inside the append transaction)."""
    if event.event_type in _SELECTION_TYPES:
        await _project_selection(conn, envelope, event)
    else:
        await _project_society(conn, envelope, event)


async def _project_society(conn: Connection, envelope: Recorded, event: Event) -> None:
    society_id: str = event.society_id  # type: ignore[attr-defined]  # every society event names it
    raw = await conn.fetchval("SELECT state FROM societies WHERE society_id = $1", society_id)
    state = domain.SocietyState.model_validate(raw) if raw is not None else domain.initial_society()
    state = domain.evolve_society(state, event)
    await conn.execute(
        """INSERT INTO societies (society_id, name, jurisdiction, level, relation, status, society_class, brand,
                                  willingness, self_assessment, participating, stream_version, updated_at, state)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
           ON CONFLICT (society_id) DO UPDATE SET name = $2, status = $6, society_class = $7, brand = $8,
               willingness = $9, self_assessment = $10, participating = $11, stream_version = $12,
               updated_at = $13, state = $14""",
        state.society_id,
        state.name,
        state.jurisdiction,
        state.level,
        state.relation,
        state.status,
        state.society_class,
        state.brand,
        state.survey.willingness if state.survey else None,
        state.survey.self_assessment if state.survey else None,
        bool(state.functions_undertaken),
        envelope.stream_version,
        envelope.occurred_at,
        state.model_dump(mode="json"),
    )


async def _project_selection(conn: Connection, envelope: Recorded, event: Event) -> None:
    function_id: str = event.function_id  # type: ignore[attr-defined]  # every selection event names it
    raw = await conn.fetchval("SELECT state FROM selections WHERE function_id = $1", function_id)
    state = domain.SelectionState.model_validate(raw) if raw is not None else domain.initial_selection()
    state = domain.evolve_selection(state, event)
    await conn.execute(
        """INSERT INTO selections (function_id, jurisdiction, status, applicants, ranking_version, stream_version,
                                   updated_at, state)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
           ON CONFLICT (function_id) DO UPDATE SET jurisdiction = $2, status = $3, applicants = $4,
               ranking_version = $5, stream_version = $6, updated_at = $7, state = $8""",
        state.function_id,
        state.jurisdiction,
        state.status,
        len(state.applicants),
        state.ranking_version,
        envelope.stream_version,
        envelope.occurred_at,
        state.model_dump(mode="json"),
    )


async def rebuild(conn: Connection) -> int:
    """Recompute every read model of this service from its events."""
    return await readmodels.rebuild(conn, ("societies", "selections"), domain.EVENTS, project)
