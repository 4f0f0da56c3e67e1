"""Read models of the supervision service: one row per case, updated with each append."""

from __future__ import annotations

from services.supervision import domain
from shared import readmodels
from shared.db import Connection, Migration
from shared.envelope import Recorded
from shared.messages import Event

MIGRATIONS = (
    Migration(
        100,
        "supervision read model: cases",
        """
        CREATE TABLE {schema}.cases (
            project_id      text PRIMARY KEY,
            function_id     text NOT NULL,
            society_id      text NOT NULL,
            department      text NOT NULL,
            jurisdiction    text NOT NULL,
            title           text NOT NULL,
            phase           text NOT NULL,
            overdue_items   integer NOT NULL,
            open_rectifications integer NOT NULL,
            grade           text,
            typical_case    boolean NOT NULL,
            stream_version  integer NOT NULL,
            updated_at      timestamptz NOT NULL,
            state           jsonb NOT NULL
        );
        CREATE INDEX cases_jurisdiction_phase_idx ON {schema}.cases (jurisdiction, phase);
        CREATE INDEX cases_department_idx ON {schema}.cases (department);
        CREATE INDEX cases_society_idx ON {schema}.cases (society_id);
        CREATE INDEX cases_overdue_idx ON {schema}.cases (jurisdiction) WHERE overdue_items > 0;
        GRANT SELECT, INSERT, UPDATE, DELETE ON {schema}.cases TO {role};
        """,
    ),
)


def overdue_items(state: domain.CaseState) -> list[dict[str, str]]:
    """Milestones and rectifications recorded as overdue and still not done."""
    items = [
        {"kind": "milestone", "item_id": m_id, "title": m.title, "due_date": m.due_date}
        for m_id, m in state.milestones.items()
        if m.overdue and m.progress is not domain.MilestoneProgress.DONE
    ]
    items += [
        {"kind": "rectification", "item_id": r_id, "title": "; ".join(r.required_actions), "due_date": r.deadline}
        for r_id, r in state.rectifications.items()
        if r.overdue and r.status is not domain.RectificationStatus.ACCEPTED
    ]
    return items


async def project(conn: Connection, envelope: Recorded, event: Event) -> None:
    """Update the case row for one new event (inside the append transaction)."""
    project_id: str = event.project_id  # type: ignore[attr-defined]  # every case event names it
    raw = await conn.fetchval("SELECT state FROM cases WHERE project_id = $1", project_id)
    state = domain.CaseState.model_validate(raw) if raw is not None else domain.initial_case()
    state = domain.evolve_case(state, event)
    open_rectifications = sum(
        1 for r in state.rectifications.values() if r.status is not domain.RectificationStatus.ACCEPTED
    )
    await conn.execute(
        """INSERT INTO cases (project_id, function_id, society_id, department, jurisdiction, title, phase,
                              overdue_items, open_rectifications, grade, typical_case, stream_version,
                              updated_at, state)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
           ON CONFLICT (project_id) DO UPDATE SET phase = $7, overdue_items = $8, open_rectifications = $9,
               grade = $10, typical_case = $11, stream_version = $12, updated_at = $13, state = $14""",
        state.project_id,
        state.function_id,
        state.society_id,
        state.department,
        state.jurisdiction,
        state.title,
        state.phase,
        len(overdue_items(state)),
        open_rectifications,
        state.evaluation.grade if state.evaluation else None,
        state.typical_case is not None,
        envelope.stream_version,
        envelope.occurred_at,
        state.model_dump(mode="json"),
    )


async def rebuild(conn: Connection) -> int:
    """Recompute every read model of this service from its events."""
    return await readmodels.rebuild(conn, ("cases",), domain.EVENTS, project)
