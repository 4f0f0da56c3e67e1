"""The disclosure consumer on a real PostgreSQL: duplicates and early events change nothing."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from services.disclosure import projections
from services.registry import domain as registry
from shared import db, kafka
from shared.consumer import InboxConsumer, OutOfOrder
from shared.envelope import Envelope
from shared.kafka import IncomingEvent
from shared.messages import Event
from shared.principal import Principal, Role

DEPT = Principal(subject="clerk", organisation="deyang-sci", role=Role.DEPARTMENT, jurisdiction="510600")


@pytest.fixture
async def consumer(pg_admin_url: str) -> AsyncIterator[InboxConsumer]:
    schema = "d" + uuid.uuid4().hex[:10]
    await db.migrate(pg_admin_url, schema, projections.MIGRATIONS)
    pool = await db.create_pool(db.app_url(pg_admin_url, schema, None), schema)
    try:
        # No broker is needed to apply events directly through the inbox.
        yield InboxConsumer("disclosure-registry", [], pool, "unused:9092", projections.apply_registry_event)
    finally:
        await pool.close()


def incoming(event: Event, version: int, stream: str = "function-f1") -> IncomingEvent:
    envelope = Envelope(
        stream_id=stream,
        stream_type="function",
        stream_version=version,
        event_id=uuid.uuid4(),
        event_type=event.event_type,
        schema_version=event.schema_version,
        occurred_at=datetime.now(UTC),
        actor=DEPT,
        jurisdiction="510600",
        correlation_id=uuid.uuid4(),
        causation_id=None,
        payload=event.model_dump(mode="json"),
        prev_hash=bytes(32),
        hash=bytes(32),
        position=version,
    )
    message = kafka.to_message("registry", envelope)
    return kafka.from_record(message.headers, message.key, message.value)


PROPOSED = registry.FunctionProposed(
    function_id="f1",
    jurisdiction="510600",
    title="科技奖励推荐",
    description="",
    category=registry.Category.AWARD_NOMINATION,
    sub_kind=registry.SubKind.NATIONAL_AWARD_NOMINATION,
    scope=registry.Scope.WHOLE,
    entrustment_mode=registry.EntrustmentMode.PURCHASE_OF_SERVICES,
    department="deyang-sci",
    proposed_by_org="deyang-sci",
    proposer_role=Role.DEPARTMENT,
)
LISTED = registry.FunctionListed(function_id="f1", department="deyang-sci")


async def public_rows(c: InboxConsumer) -> list[tuple[str, str, bool]]:
    rows = await c.pool.fetch("SELECT function_id, status, is_public FROM registry_functions")
    return [(r["function_id"], r["status"], r["is_public"]) for r in rows]


async def test_an_event_ahead_of_its_stream_is_left_for_its_copy_and_applied_in_order(consumer: InboxConsumer) -> None:
    proposed, listed = incoming(PROPOSED, 1), incoming(LISTED, 2)
    with pytest.raises(OutOfOrder):
        await consumer.apply(listed)
    assert await consumer.pool.fetchval("SELECT count(*) FROM inbox") == 0  # not marked as done
    assert await consumer.apply(proposed) is True
    assert await consumer.apply(listed) is True
    assert await public_rows(consumer) == [("f1", "listed", True)]


async def test_a_redelivered_event_changes_nothing(consumer: InboxConsumer) -> None:
    proposed = incoming(PROPOSED, 1)
    assert await consumer.apply(proposed) is True
    before = await consumer.pool.fetchrow("SELECT * FROM registry_functions")
    assert await consumer.apply(proposed) is False
    assert await consumer.pool.fetchrow("SELECT * FROM registry_functions") == before
    assert await public_rows(consumer) == [("f1", "proposed", False)]  # proposals are not public
