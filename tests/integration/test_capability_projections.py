"""The capability read models are a pure function of its events: rebuilding gives the same rows."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from services.capability import domain, projections
from services.capability.domain import SELECTION, SOCIETY, selection_stream, society_stream
from shared import db
from shared.commands import EventStore
from shared.policies import system_principal
from shared.principal import Principal, Role

CAST = Principal(subject="officer", organisation="deyang-cast", role=Role.ASSOCIATION, jurisdiction="510600")
SYSTEM = system_principal("capability")


@pytest.fixture
async def capability_store(pg_admin_url: str) -> AsyncIterator[EventStore]:
    schema = "c" + uuid.uuid4().hex[:10]
    await db.migrate(pg_admin_url, schema, projections.MIGRATIONS)
    pool = await db.create_pool(db.app_url(pg_admin_url, schema, None), schema)
    try:
        yield EventStore(pool, domain.EVENTS, projections.project)
    finally:
        await pool.close()


async def rows(es: EventStore) -> tuple[list[dict], list[dict]]:  # type: ignore[type-arg]
    societies = await es.pool.fetch("SELECT * FROM societies ORDER BY society_id")
    selections = await es.pool.fetch("SELECT * FROM selections ORDER BY function_id")
    return [dict(r) for r in societies], [dict(r) for r in selections]


async def test_rebuilding_societies_and_selections_from_the_events_gives_the_same_rows(
    capability_store: EventStore,
) -> None:
    es, now = capability_store, datetime.now(UTC)

    async def society(command: domain.SocietyCommand) -> None:
        await es.execute(SOCIETY, society_stream(command.society_id), command, correlation_id=uuid.uuid4())

    for n in range(5):
        sid = f"s{n}"
        await society(
            domain.RegisterSociety(
                issued_by=CAST,
                issued_at=now,
                society_id=sid,
                name=f"学会 {n}",
                level=domain.SocietyLevel.CITY,
                jurisdiction="510600",
                relation=domain.Relation.SUPERVISED if n % 2 else domain.Relation.GROUP_MEMBER,
                association="deyang-cast",
                registration_number=f"R{n}",
                registered_on="2020-01-01",
                reconfirmation_due="2030-01-01",
            )
        )
        await society(
            domain.AnswerSurvey(
                issued_by=CAST,
                issued_at=now,
                society_id=sid,
                willingness=domain.Willingness.VERY_WILLING,
                self_assessment=domain.SelfAssessment.FULLY_CAPABLE,
            )
        )
        await society(
            domain.AssessCapability(
                issued_by=CAST,
                issued_at=now,
                society_id=sid,
                assessment_id=f"a{n}",
                scores={s: 60.0 + n for s in domain.Standard},
                evidence=["report"],
            )
        )
    await society(
        domain.ClassifySociety(
            issued_by=CAST,
            issued_at=now,
            society_id="s4",
            society_class=domain.SocietyClass.EXIT,
            rationale="inactive",
        )
    )
    opening = domain.OpenSelection(
        issued_by=SYSTEM,
        issued_at=now,
        function_id="f1",
        jurisdiction="510600",
        title="团体标准",
        category="technical_standard",
        min_applicants=2,
    )
    await es.execute(SELECTION, selection_stream("f1"), opening, correlation_id=uuid.uuid4())
    for sid in ("s1", "s2"):
        applicant = Principal(subject=sid, organisation=sid, role=Role.SOCIETY, jurisdiction="510600")
        apply = domain.SubmitApplication(issued_by=applicant, issued_at=now, function_id="f1", society_id=sid)
        await es.execute(SELECTION, selection_stream("f1"), apply, correlation_id=uuid.uuid4())

    before = await rows(es)
    assert len(before[0]) == 5 and len(before[1]) == 1
    assert before[1][0]["applicants"] == 2
    assert [r["society_class"] for r in before[0]][-1] == "exit"
    async with es.pool.acquire() as conn:
        applied = await projections.rebuild(conn)
    assert applied == 5 * 3 + 1 + 1 + 2
    assert await rows(es) == before
