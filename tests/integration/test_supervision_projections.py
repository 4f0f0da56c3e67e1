"""The supervision read model is a pure function of its events: rebuilding gives the same rows."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from services.supervision import domain, projections
from services.supervision.domain import CASE, case_stream
from shared import db
from shared.commands import EventStore
from shared.policies import system_principal
from shared.principal import Principal, Role

SYSTEM = system_principal("supervision")
SOCIETY = Principal(subject="sg", organisation="soc-1", role=Role.SOCIETY, jurisdiction="510600")
DEPARTMENT = Principal(subject="clerk", organisation="dept-1", role=Role.DEPARTMENT, jurisdiction="510600")


@pytest.fixture
async def supervision_store(pg_admin_url: str) -> AsyncIterator[EventStore]:
    schema = "s" + uuid.uuid4().hex[:10]
    await db.migrate(pg_admin_url, schema, projections.MIGRATIONS)
    pool = await db.create_pool(db.app_url(pg_admin_url, schema, None), schema)
    try:
        yield EventStore(pool, domain.EVENTS, projections.project)
    finally:
        await pool.close()


async def test_rebuilding_cases_from_the_events_gives_the_same_rows(supervision_store: EventStore) -> None:
    es, now = supervision_store, datetime.now(UTC)

    async def run(command: domain.CaseCommand) -> None:
        await es.execute(CASE, case_stream(command.project_id), command, correlation_id=uuid.uuid4())

    for n in range(4):
        pid = f"p{n}"
        await run(
            domain.OpenCase(
                issued_by=SYSTEM,
                issued_at=now,
                project_id=pid,
                function_id=f"f{n}",
                society_id="soc-1",
                society_name="学会",
                department="dept-1",
                jurisdiction="510600",
                title=f"项目 {n}",
                category="technical_standard",
            )
        )
        if n % 2:
            await run(domain.DraftPlan(issued_by=SOCIETY, issued_at=now, project_id=pid, content="plan", goals=["g"]))
            await run(domain.SubmitPlan(issued_by=SOCIETY, issued_at=now, project_id=pid, version=1))
            await run(domain.ApprovePlan(issued_by=DEPARTMENT, issued_at=now, project_id=pid, version=1))
    before = [dict(r) for r in await es.pool.fetch("SELECT * FROM cases ORDER BY project_id")]
    assert [r["phase"] for r in before] == ["preparation"] * 4
    assert domain.CaseState.model_validate(before[1]["state"]).plan_approved
    async with es.pool.acquire() as conn:
        assert await projections.rebuild(conn) == 4 + 2 * 3
    assert [dict(r) for r in await es.pool.fetch("SELECT * FROM cases ORDER BY project_id")] == before
