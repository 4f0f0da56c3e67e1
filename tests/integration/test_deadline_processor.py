"""The deadline processor's case copies on a real PostgreSQL: each case is folded in order,
an event that comes before its predecessor is held back and folded right after it."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import pytest

from services.supervision import deadlines, domain, projections
from services.supervision.domain import CASE, case_stream
from shared import db, kafka, store
from shared.commands import EventStore
from shared.consumer import HeldRecord
from shared.kafka import IncomingEvent
from shared.policies import system_principal
from shared.principal import Principal, Role

SYSTEM = system_principal("supervision")
SOCIETY = Principal(subject="sg", organisation="soc-1", role=Role.SOCIETY, jurisdiction="510600")
DEPARTMENT = Principal(subject="clerk", organisation="dept-1", role=Role.DEPARTMENT, jurisdiction="510600")


@pytest.fixture
async def case_records(pg_admin_url: str) -> AsyncIterator[list[HeldRecord]]:
    """The four events of one case, as the records the supervision relay would publish."""
    schema = "s" + uuid.uuid4().hex[:10]
    await db.migrate(pg_admin_url, schema, projections.MIGRATIONS)
    pool = await db.create_pool(db.app_url(pg_admin_url, schema, None), schema)
    try:
        es, now = EventStore(pool, domain.EVENTS, projections.project), datetime.now(UTC)
        for command in (
            domain.OpenCase(
                issued_by=SYSTEM,
                issued_at=now,
                project_id="p1",
                function_id="f1",
                society_id="soc-1",
                society_name="学会",
                department="dept-1",
                jurisdiction="510600",
                title="项目",
                category="technical_standard",
            ),
            domain.DraftPlan(issued_by=SOCIETY, issued_at=now, project_id="p1", content="plan", goals=["g"]),
            domain.SubmitPlan(issued_by=SOCIETY, issued_at=now, project_id="p1", version=1),
            domain.ApprovePlan(issued_by=DEPARTMENT, issued_at=now, project_id="p1", version=1),
        ):
            await es.execute(CASE, case_stream("p1"), command, correlation_id=uuid.uuid4())
        rows = await pool.fetch(f"SELECT {store.COLUMNS} FROM events ORDER BY position")
        records = []
        for offset, row in enumerate(rows):
            message = kafka.to_message("supervision", store.envelope_from_record(row))
            topic = kafka.events_topic("supervision")
            records.append(HeldRecord(topic, 0, offset, message.key, message.value, tuple(message.headers)))
        yield records
    finally:
        await pool.close()


@pytest.fixture
async def processor_pool(pg_admin_url: str) -> AsyncIterator[asyncpg.Pool]:
    schema = "d" + uuid.uuid4().hex[:10]
    await db.migrate(pg_admin_url, schema, deadlines.MIGRATIONS)
    pool = await db.create_pool(db.app_url(pg_admin_url, schema, None), schema)
    try:
        yield pool
    finally:
        await pool.close()


def incoming(record: HeldRecord) -> IncomingEvent:
    return kafka.from_record(record.headers, record.key, record.value)


async def fold(pool: asyncpg.Pool, record: HeldRecord) -> None:
    await deadlines.fold_case(pool, incoming(record), record)


async def test_events_ahead_of_their_case_are_held_and_folded_after_their_predecessor(
    processor_pool: asyncpg.Pool, case_records: list[HeldRecord]
) -> None:
    v1, v2, v3, v4 = case_records
    await fold(processor_pool, v1)
    await fold(processor_pool, v4)  # early: 2 and 3 are not folded yet
    await fold(processor_pool, v3)
    assert await processor_pool.fetchval("SELECT stream_version FROM cases WHERE project_id = 'p1'") == 1
    held = await processor_pool.fetch("SELECT stream_version FROM held_events ORDER BY 1")
    assert [r[0] for r in held] == [3, 4]

    await fold(processor_pool, v2)  # releases 3, then 4
    row = await processor_pool.fetchrow("SELECT stream_version, state FROM cases WHERE project_id = 'p1'")
    assert row["stream_version"] == 4
    assert await processor_pool.fetchval("SELECT count(*) FROM held_events") == 0

    expected = domain.initial_case()
    for record in case_records:
        event = incoming(record)
        expected = domain.evolve_case(
            expected, domain.EVENTS.decode(event.event_type, event.schema_version, event.data)
        )
    assert domain.CaseState.model_validate(row["state"]) == expected
    assert expected.plan_approved

    for record in (v3, v1, v4):  # the republished history, once more: nothing changes
        await fold(processor_pool, record)
    again = await processor_pool.fetchrow("SELECT stream_version, state FROM cases WHERE project_id = 'p1'")
    assert tuple(again) == tuple(row)
    assert await processor_pool.fetchval("SELECT count(*) FROM held_events") == 0
