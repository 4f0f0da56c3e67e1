"""The deadline processor (faust-streaming): milestones and rectifications past their date.

It is the supervision service's stream processor, a process of its own. Its agent folds
``chengneng.supervision.events`` into a copy of each case (with the supervision decider's
own ``evolve``) and keeps the case's open due items in PostgreSQL (its ``deadlines``
schema: durable state lives in the database, never in faust tables, which the embedded
broker cannot restore). A timer looks for items past their date and emits a
``DeadlinePassed`` CloudEvent to ``chengneng.supervision.deadlines``, once per item; the
supervision service records it on the case (``MilestoneOverdue``/``RectificationOverdue``).

Each case is folded in order: an event that arrives before its predecessor (after a broker
lost its state, a record can reach the new topic ahead of the republished history) is kept
in ``held_events`` and folded right after the predecessor.

Every emitted record has a deterministic id (a UUID 5 of the item and its date), so a
record sent twice is applied once by the supervision service's inbox.

A database outage stops neither the agent nor the timer: the agent waits and folds the
event when the database returns (it is never skipped, or every later event of the case
would be), the timer tries again at its next tick. A record that is not a supervision event
this code knows goes to ``chengneng.deadletter`` with the reason, as with every consumer.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, date, datetime
from typing import Any

import asyncpg
import faust
import structlog

import services.supervision.domain as domain
from shared import db, kafka
from shared.consumer import HeldRecord, read_record
from shared.db import Migration
from shared.envelope import GENESIS_HASH, Envelope, canonical_bytes
from shared.messages import Event, EventRegistry
from shared.policies import system_principal
from shared.resilience import wait_out_database
from shared.settings import Settings

log = structlog.get_logger(__name__)

SERVICE = "deadlines"
TOPIC = "chengneng.supervision.deadlines"
EVENT_TYPE = "DeadlinePassed"
_NAMESPACE = uuid.UUID("6f1c8a52-3f0e-4c55-9a8e-0d7b3c2f6a10")
ACTOR = system_principal(SERVICE)
CONSUMER = "deadlines-supervision"
"""The name the agent signs its dead letters with."""


class DeadlinePassed(Event):
    """A milestone or rectification of a case passed its due date undone (the one event type)."""

    event_type = EVENT_TYPE
    project_id: str
    kind: domain.DueKind
    item_id: str
    due_date: date
    detected_on: date


SOURCES = {"supervision": domain.EVENTS}
"""What the processor consumes: the supervision service's events."""

EVENTS = EventRegistry(DeadlinePassed)
"""What the processor publishes: the supervision service's consumer checks records against it."""

MIGRATIONS = (
    Migration(
        100,
        "deadline processor: case copies and open due items",
        """
        CREATE TABLE {schema}.cases (
            project_id      text PRIMARY KEY,
            jurisdiction    text NOT NULL,
            correlation_id  uuid NOT NULL,
            stream_version  integer NOT NULL,
            state           jsonb NOT NULL
        );
        CREATE TABLE {schema}.due_items (
            project_id   text NOT NULL,
            kind         text NOT NULL,
            item_id      text NOT NULL,
            due_date     date NOT NULL,
            notified_at  timestamptz,
            PRIMARY KEY (project_id, kind, item_id)
        );
        CREATE INDEX due_items_open_idx ON {schema}.due_items (due_date) WHERE notified_at IS NULL;
        GRANT SELECT, INSERT, UPDATE, DELETE ON {schema}.cases, {schema}.due_items TO {role};
        """,
    ),
    Migration(
        101,
        "deadline processor: case events that came before their predecessor, held until it is folded",
        """
        CREATE TABLE {schema}.held_events (
            project_id      text NOT NULL,
            stream_version  integer NOT NULL,
            record          jsonb NOT NULL,
            received_at     timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (project_id, stream_version)
        );
        GRANT SELECT, INSERT, DELETE ON {schema}.held_events TO {role};
        """,
    ),
)


def deadline_message(
    project_id: str, kind: str, item_id: str, due: date, today: date, jurisdiction: str, correlation: uuid.UUID
) -> kafka.OutgoingMessage:
    """The ``DeadlinePassed`` record for one item: a one-event stream with a stable id and hash."""
    stream_id = f"deadline-{project_id}-{kind}-{item_id}-{due.isoformat()}"
    fields: dict[str, Any] = {
        "stream_id": stream_id,
        "stream_type": "deadline",
        "stream_version": 1,
        "event_id": uuid.uuid5(_NAMESPACE, stream_id),
        "event_type": EVENT_TYPE,
        "schema_version": 1,
        "occurred_at": datetime.combine(today, datetime.min.time(), tzinfo=UTC),
        "actor": ACTOR,
        "jurisdiction": jurisdiction,
        "correlation_id": correlation,
        "causation_id": None,
        "payload": DeadlinePassed(
            project_id=project_id, kind=domain.DueKind(kind), item_id=item_id, due_date=due, detected_on=today
        ).model_dump(mode="json"),
        "prev_hash": GENESIS_HASH,
    }
    digest = hashlib.sha256(canonical_bytes(**fields)).digest()
    return kafka.to_message(SERVICE, Envelope(**fields, hash=digest))


async def fold_case(pool: asyncpg.Pool, incoming: kafka.IncomingEvent, record: HeldRecord) -> None:
    """Fold one supervision event into its case copy, then any later events of the case that
    came early and were held back (after a broker lost its state, a record can reach the new
    topic before the republished history; skipping it would leave the copy behind for good)."""
    if not incoming.subject.startswith("case-"):
        return
    while True:
        released = await _fold_one(pool, incoming, record)
        if released is None:
            return
        violation, later = read_record(released, SOURCES)
        if violation is not None or later is None:
            log.error("a held-back case event no longer reads", reason=violation, offset=released.offset)
            return
        incoming, record = later, released
        log.info("folding a held-back case event after its predecessor", subject=incoming.subject)


async def _fold_one(pool: asyncpg.Pool, incoming: kafka.IncomingEvent, record: HeldRecord) -> HeldRecord | None:
    """Fold (or hold back, or skip as a redelivery) one event; the held record of the next, if any."""
    event = domain.EVENTS.decode(incoming.event_type, incoming.schema_version, incoming.data)
    project_id = incoming.subject.removeprefix("case-")
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            "SELECT stream_version, state FROM cases WHERE project_id = $1 FOR UPDATE", project_id
        )
        known = row["stream_version"] if row else 0
        if incoming.stream_version <= known:
            return None  # already folded: a redelivery
        if incoming.stream_version > known + 1:
            await conn.execute(
                """INSERT INTO held_events (project_id, stream_version, record) VALUES ($1, $2, $3)
                   ON CONFLICT DO NOTHING""",
                project_id,
                incoming.stream_version,
                record.as_json(),
            )
            log.warning(
                "case event ahead of its stream; held back until its predecessor is folded",
                project_id=project_id,
                stream_version=incoming.stream_version,
                folded=known,
            )
            return None
        state = domain.CaseState.model_validate(row["state"]) if row else domain.initial_case()
        state = domain.evolve_case(state, event)
        await conn.execute(
            """INSERT INTO cases (project_id, jurisdiction, correlation_id, stream_version, state)
               VALUES ($1, $2, $3, $4, $5)
               ON CONFLICT (project_id) DO UPDATE SET stream_version = $4, state = $5""",
            project_id,
            incoming.jurisdiction,
            incoming.correlation_id,
            incoming.stream_version,
            state.model_dump(mode="json"),
        )
        items = domain.due_items(state)  # the decider says which phases still watch deadlines
        await conn.execute(
            """DELETE FROM due_items WHERE project_id = $1
               AND (kind, item_id) NOT IN (SELECT * FROM unnest($2::text[], $3::text[]))""",
            project_id,
            [str(i.kind) for i in items],
            [i.item_id for i in items],
        )
        for item in items:
            due = item.due_date if isinstance(item.due_date, date) else date.fromisoformat(item.due_date)
            await conn.execute(
                """INSERT INTO due_items (project_id, kind, item_id, due_date) VALUES ($1, $2, $3, $4)
                   ON CONFLICT (project_id, kind, item_id) DO UPDATE SET due_date = $4,
                       notified_at = CASE WHEN due_items.due_date = $4 THEN due_items.notified_at END""",
                project_id,
                str(item.kind),
                item.item_id,
                due,
            )
        await conn.execute(
            "DELETE FROM held_events WHERE project_id = $1 AND stream_version <= $2",
            project_id,
            incoming.stream_version,
        )
        held = await conn.fetchval(
            "SELECT record FROM held_events WHERE project_id = $1 AND stream_version = $2",
            project_id,
            incoming.stream_version + 1,
        )
    return HeldRecord.from_json(held) if held is not None else None


def build_app(settings: Settings, port: int) -> faust.App:
    """The faust application: one agent folding case events, one timer emitting deadlines."""
    if not settings.database_url or not settings.kafka_bootstrap_servers:
        raise SystemExit("DATABASE_URL and KAFKA_BOOTSTRAP_SERVERS must be set")
    admin_url, bootstrap = settings.database_url, settings.kafka_bootstrap_servers
    dsn = db.app_url(admin_url, SERVICE, settings.db_app_password)
    datadir = settings.home / "faust"
    datadir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        "chengneng-deadlines",
        broker=f"kafka://{bootstrap}",
        store="memory://",
        datadir=str(datadir),
        web_enabled=True,
        web_bind=settings.http_host,
        web_port=port,
        web_host=settings.http_host,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=settings.kafka_session_timeout_ms / 1000,
        producer_acks=-1,
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=settings.topic_replication,
    )
    events = app.topic(kafka.events_topic("supervision"), value_serializer="raw", key_serializer="raw")
    out = app.topic(TOPIC, value_serializer="raw", key_serializer="raw")
    pools: dict[str, asyncpg.Pool] = {}

    async def pool() -> asyncpg.Pool:
        if "pool" not in pools:
            await db.migrate(admin_url, SERVICE, MIGRATIONS, app_password=settings.db_app_password)
            pools["pool"] = await db.create_pool(dsn, SERVICE, max_size=4)
        return pools["pool"]

    deadletters = app.topic(kafka.DEADLETTER_TOPIC, value_serializer="raw", key_serializer="raw")

    async def deadletter(record: Any, headers: list[tuple[str, bytes]], reason: str) -> None:
        message = record.message
        await deadletters.send(
            key=record.key,
            value=record.value,
            headers=kafka.deadletter_headers(
                headers, reason, CONSUMER, message.topic, message.partition, message.offset
            ),
        )
        log.error("record dead-lettered", consumer=CONSUMER, reason=reason, topic=message.topic, offset=message.offset)

    @app.agent(events)
    async def fold(stream: Any) -> None:
        async for record in stream.events():
            message = record.message
            raw = message.headers
            headers = list(raw.items()) if isinstance(raw, dict) else list(raw or [])
            held = HeldRecord(
                message.topic, message.partition, message.offset, record.key, record.value, tuple(headers)
            )
            violation, incoming = read_record(held, SOURCES)
            if violation is not None or incoming is None:
                await deadletter(record, headers, violation or "unreadable")
                continue

            async def fold_it(incoming: kafka.IncomingEvent = incoming, held: HeldRecord = held) -> None:
                await fold_case(await pool(), incoming, held)

            try:
                # Skipping it would leave the case's copy behind for good: wait for the database.
                await wait_out_database(fold_it, "deadline processor", event_id=str(incoming.event_id))
            except Exception as exc:
                await deadletter(record, headers, f"the deadline processor failed on it: {exc!r}")

    @app.timer(interval=settings.deadline_check_interval_s)
    async def look_for_passed_deadlines() -> None:
        try:
            await _emit_passed_deadlines(await pool(), out)
        except Exception as exc:
            # An exception would end the timer (and crash the worker): try again at the next tick.
            if db.unavailable(exc):
                log.warning("deadline check skipped: database unavailable", error=repr(exc))
            else:
                log.exception("deadline check failed; trying again at the next tick")

    @app.page("/health")
    async def health(web: Any, request: Any) -> Any:
        try:
            await (await pool()).fetchval("SELECT 1")
        except Exception as exc:  # report, never raise: the process itself is alive
            body = {
                "type": "urn:chengneng:problem:database_unavailable",
                "title": "Service unavailable",
                "status": 503,
                "detail": repr(exc),
                "code": "database_unavailable",
            }
            return web.json(body, status=503, headers={"Retry-After": "5"}, content_type="application/problem+json")
        return web.json({"status": "ok", "service": SERVICE})

    return app


async def _emit_passed_deadlines(p: asyncpg.Pool, out: Any) -> None:
    """Send ``DeadlinePassed`` for every open item past its date, and mark it notified."""
    today = datetime.now(UTC).date()
    rows = await p.fetch(
        """SELECT d.project_id, d.kind, d.item_id, d.due_date, c.jurisdiction, c.correlation_id
           FROM due_items d JOIN cases c USING (project_id)
           WHERE d.notified_at IS NULL AND d.due_date < $1 ORDER BY d.due_date LIMIT 500""",
        today,
    )
    for r in rows:
        message = deadline_message(
            r["project_id"], r["kind"], r["item_id"], r["due_date"], today, r["jurisdiction"], r["correlation_id"]
        )
        await out.send(key=message.key, value=message.value, headers=message.headers)
        await p.execute(
            "UPDATE due_items SET notified_at = now() WHERE project_id = $1 AND kind = $2 AND item_id = $3",
            r["project_id"],
            r["kind"],
            r["item_id"],
        )
        log.info("deadline passed", project_id=r["project_id"], kind=r["kind"], item_id=r["item_id"])


def run(settings: Settings, port: int) -> None:
    """Run the processor in the foreground until SIGINT/SIGTERM (`chengneng serve deadlines`)."""
    app = build_app(settings, port)
    faust.Worker(app, loglevel=settings.log_level.upper(), quiet=True).execute_from_commandline()
