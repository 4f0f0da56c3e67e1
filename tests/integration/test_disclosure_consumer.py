"""The disclosure consumer on a real PostgreSQL: the policy decides, duplicates change nothing."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from asyncpg import Connection

from services.disclosure import domain, policies, projections
from services.registry import domain as registry
from shared import db, kafka
from shared.commands import EventStore
from shared.consumer import InboxConsumer
from shared.envelope import Envelope
from shared.kafka import IncomingEvent
from shared.messages import Event
from shared.policies import policy_handler
from shared.principal import Principal, Role

DEPT = Principal(subject="clerk", organisation="deyang-sci", role=Role.DEPARTMENT, jurisdiction="510600")


@pytest.fixture
async def consumer(pg_admin_url: str) -> AsyncIterator[InboxConsumer]:
    schema = "d" + uuid.uuid4().hex[:10]
    await db.migrate(pg_admin_url, schema, projections.MIGRATIONS)
    pool = await db.create_pool(db.app_url(pg_admin_url, schema, None), schema)
    store = EventStore(pool, domain.EVENTS, projections.project)
    try:
        # No broker is needed to apply events directly through the inbox.
        yield InboxConsumer(
            "disclosure-registry", [], pool, "unused:9092", policy_handler(store, policies.on_internal_event)
        )
    finally:
        await pool.close()


def incoming(event: Event, version: int, stream: str = "function-f1") -> IncomingEvent:
    message = kafka.to_message("registry", envelope_of(event, version, stream))
    return kafka.from_record(message.headers, message.key, message.value)


def envelope_of(event: Event, version: int, stream: str) -> Envelope:
    return Envelope(
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


PROPOSED = registry.FunctionProposed(
    function_id="f1",
    jurisdiction="510600",
    title="科技奖励推荐",
    description="内部说明",
    category=registry.Category.AWARD_NOMINATION,
    sub_kind=registry.SubKind.NATIONAL_AWARD_NOMINATION,
    scope=registry.Scope.WHOLE,
    entrustment_mode=registry.EntrustmentMode.PURCHASE_OF_SERVICES,
    department="deyang-sci",
    proposed_by_org="deyang-sci",
    proposer_role=Role.DEPARTMENT,
)
LISTED = registry.FunctionListed(function_id="f1", department="deyang-sci")
REVIEW = registry.DepartmentReviewRecorded(function_id="f1", department="deyang-sci", reference="内部文号", note="x")


async def test_disclosed_facts_follow_the_policy_and_a_redelivery_changes_nothing(consumer: InboxConsumer) -> None:
    proposed, review, listed = incoming(PROPOSED, 1), incoming(REVIEW, 2), incoming(LISTED, 3)
    for event in (proposed, review, listed):
        assert await consumer.apply(event) is True
    facts = await consumer.pool.fetch("SELECT payload FROM events ORDER BY position")
    # The department's internal review is not disclosed; the proposal and the listing are.
    assert [f["payload"]["public_type"] for f in facts] == ["FunctionProposed", "FunctionListed"]
    assert all(f["payload"]["subject"] == "function/f1" for f in facts)
    row = await consumer.pool.fetchrow("SELECT status, on_list, data FROM p_functions WHERE function_id = 'f1'")
    assert (row["status"], row["on_list"]) == ("listed", True)
    assert "内部文号" not in str(row["data"])

    before = await consumer.pool.fetchval("SELECT count(*) FROM events")
    assert await consumer.apply(listed) is False  # the inbox: delivered twice, applied once
    assert await consumer.pool.fetchval("SELECT count(*) FROM events") == before


async def test_the_public_wire_format_carries_only_the_disclosed_data(consumer: InboxConsumer) -> None:
    await consumer.apply(incoming(PROPOSED, 1))
    (row,) = await consumer.pool.fetch("SELECT * FROM events")
    from shared.store import envelope_from_record

    message = domain.public_message(envelope_from_record(row))
    headers = dict(message.headers)
    assert headers["ce_type"] == b"org.chengneng.public.FunctionProposed"
    assert headers["ce_subject"] == b"function/f1"
    assert headers["ce_source"] == b"/chengneng/disclosure"
    assert message.key == b"function/f1"
    assert b"proposer_role" in message.value and b"source_event_id" not in message.value


def fact(public_type: str, subject: str, data: dict[str, object]) -> tuple[Envelope, domain.FactDisclosed]:
    event = domain.FactDisclosed(
        public_type=public_type,
        subject=subject,
        data=data,
        correction=False,
        source_service=subject.split("/")[0],
        source_event_type=public_type,
        source_event_id=str(uuid.uuid4()),
        source_stream_id=subject,
        source_stream_version=1,
    )
    return envelope_of(event, 1, f"public-{subject}"), event


async def test_a_society_assigned_while_its_own_facts_arrive_is_participating(consumer: InboxConsumer) -> None:
    """The assignment and the society's facts come on two consumers at once: neither may hide
    its uncommitted row from the other (the statistics page counted such a society as idle)."""
    assigned = fact("FunctionAssigned", "function/f9", {"title": "t", "jurisdiction": "510600", "society_id": "s9"})
    registered = fact("SocietyRegistered", "society/s9", {"name": "学会", "jurisdiction": "510600"})
    async with consumer.pool.acquire() as first, consumer.pool.acquire() as second:
        outer = first.transaction()
        await outer.start()
        await projections.project(first, *assigned)  # the assignment, not yet committed
        concurrent = asyncio.ensure_future(_in_transaction(second, registered))
        done, _ = await asyncio.wait({concurrent}, timeout=0.5)
        assert not done, "the society's facts did not wait for the assignment in flight"
        await outer.commit()
        await concurrent
    assert await consumer.pool.fetchval("SELECT participating FROM p_societies WHERE society_id = 's9'") is True


async def _in_transaction(conn: Connection, item: tuple[Envelope, domain.FactDisclosed]) -> None:
    async with conn.transaction():
        await projections.project(conn, *item)


async def test_statistics_count_figures_beyond_a_32_bit_integer(consumer: InboxConsumer) -> None:
    """Survey sizes and amounts are JSON integers up to 2^53 - 1; summing them must not overflow."""
    big = 2**53 - 1
    for item in (
        fact("CaseOpened", "case/p9", {"project_id": "p9", "jurisdiction": "510600", "title": "试点"}),
        fact("SatisfactionSurveyed", "case/p9", {"respondent_group": "public", "respondents": big, "satisfied": big}),
        fact("FundingAllocated", "case/p9", {"project_id": "p9", "amount_fen": big}),
        fact("FundingAllocated", "case/p9", {"project_id": "p9", "amount_fen": big}),
    ):
        async with consumer.pool.acquire() as conn:
            await _in_transaction(conn, item)
    figures = await projections.figures(consumer.pool, "510600")
    assert figures["satisfaction"] == {"public": {"respondents": big, "satisfied": big, "rate_percent": "100.00"}}
    assert figures["funding"] == {"allocated_fen": 2 * big, "disbursed_fen": 0}
    assert figures["cases"]["total"] == 1
