"""The registry's read models are a pure function of its events: rebuilding gives the same rows."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from services.registry import domain, projections
from services.registry.domain import FUNCTION, FUNCTION_LIST, function_stream, list_stream
from shared import db
from shared.commands import EventStore
from shared.principal import Principal, Role

DEPT = Principal(subject="clerk", organisation="deyang-sci", role=Role.DEPARTMENT, jurisdiction="510600")
CAST = Principal(subject="officer", organisation="deyang-cast", role=Role.ASSOCIATION, jurisdiction="510600")


@pytest.fixture
async def registry_store(pg_admin_url: str) -> AsyncIterator[EventStore]:
    schema = "r" + uuid.uuid4().hex[:10]
    await db.migrate(pg_admin_url, schema, projections.MIGRATIONS)
    pool = await db.create_pool(db.app_url(pg_admin_url, schema, None), schema)
    try:
        yield EventStore(pool, domain.EVENTS, projections.project)
    finally:
        await pool.close()


async def snapshot(es: EventStore) -> tuple[list[dict], list[dict]]:  # type: ignore[type-arg]
    functions = await es.pool.fetch("SELECT * FROM functions ORDER BY function_id")
    lists = await es.pool.fetch("SELECT * FROM function_lists ORDER BY jurisdiction, version")
    return [dict(r) for r in functions], [dict(r) for r in lists]


async def test_rebuilding_the_read_models_from_the_events_gives_the_same_rows(registry_store: EventStore) -> None:
    es = registry_store
    now = datetime.now(UTC)
    for n in range(12):
        fid = f"f{n:02d}"
        propose = domain.ProposeFunction(
            issued_by=DEPT,
            issued_at=now,
            function_id=fid,
            jurisdiction="510600",
            title=f"职能 {n}",
            category=domain.Category.TECHNICAL_STANDARD,
            sub_kind=domain.SubKind.GROUP_STANDARD,
            scope=domain.Scope.WHOLE,
            entrustment_mode=domain.EntrustmentMode.PURCHASE_OF_SERVICES,
            department="deyang-sci",
        )
        await es.execute(FUNCTION, function_stream(fid), propose, correlation_id=uuid.uuid4())
        if n % 3:
            listing = domain.ListFunction(issued_by=DEPT, issued_at=now, function_id=fid)
            await es.execute(FUNCTION, function_stream(fid), listing, correlation_id=uuid.uuid4())
        if n % 3 == 2:
            opening = domain.OpenForUndertaking(issued_by=DEPT, issued_at=now, function_id=fid)
            await es.execute(FUNCTION, function_stream(fid), opening, correlation_id=uuid.uuid4())
    entries = [
        domain.list_entry_of(domain.FunctionState.model_validate(r["state"]))
        for r in await es.pool.fetch("SELECT state FROM functions WHERE status IN ('listed', 'open')")
    ]
    publish = domain.PublishFunctionList(issued_by=CAST, issued_at=now, jurisdiction="510600", entries=entries)
    await es.execute(FUNCTION_LIST, list_stream("510600"), publish, correlation_id=uuid.uuid4())

    before = await snapshot(es)
    assert len(before[0]) == 12 and len(before[1]) == 1
    assert {r["status"] for r in before[0]} == {"proposed", "listed", "open"}
    async with es.pool.acquire() as conn:
        applied = await projections.rebuild(conn)
    assert applied == 12 + 8 + 4 + 1
    assert await snapshot(es) == before
