"""Consumers with an inbox: applying an event and recording its id is one transaction.

Kafka delivers at least once (and an embedded broker that restarted delivers
everything again), so each consumer records the ids it has applied in its own
database, in the same transaction as the effect: a redelivered event changes nothing.
Offsets are committed to Kafka only after the database commit. What one fetch returns is
applied in one transaction when none of it needs care (every event new or applied before,
each after its predecessor); otherwise, and whenever that try fails, one record at a time.

A record that is not a well-formed event, that breaks the consumer's contract with its
producer (a source, event type or schema version it does not know, or a payload that does
not match the event's schema), or whose handler keeps failing, is sent to
``chengneng.deadletter`` with the reason in a header, and recorded in the inbox as
dead-lettered: never dropped silently, never blocking the partition forever. A
dead-lettered event that is delivered again is tried again. A database outage is not the
event's failure: the consumer waits for the database and never dead-letters for it.

Each stream is applied in order. After a broker lost its state the relay publishes the
whole history again, but a record it sent in the moment before it noticed is on the new
topic first, ahead of its stream: an event whose predecessor (same source and subject,
version minus one) this consumer has not seen is ``OutOfOrder``: it is held back in the
inbox with its record (outcome ``held_back``) and applied as soon as its predecessor is,
whether that comes with the republished history or not; a copy delivered again meanwhile
is applied in its place. Held-back events are never silently lost: they stay in the inbox,
counted and logged, until their stream catches up; while any is held, the consumer also
applies, before each fetch, those whose predecessor was applied elsewhere (by another
instance during a rebalance), so no stream stays stuck behind a race. A consumer that finds
the offsets it committed gone (the broker restarted empty) reads again from the beginning,
so it neither skips the republished history nor applies it out of order.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import functools
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeVar

import asyncpg
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError
from prometheus_client import Counter, Gauge
from pydantic import ValidationError

from shared import db, kafka, store
from shared.db import Connection
from shared.kafka import IncomingEvent, MalformedMessage
from shared.messages import EventRegistry
from shared.resilience import DatabaseAway, keep_running, wait_out_database

log = structlog.get_logger(__name__)

APPLIED = Counter("chengneng_consumer_applied_total", "Events applied by consumers", ["consumer"])
DUPLICATES = Counter("chengneng_consumer_duplicates_total", "Redelivered events ignored", ["consumer"])
DEADLETTERED = Counter("chengneng_consumer_deadlettered_total", "Records sent to dead letters", ["consumer"])

T = TypeVar("T")

Handler = Callable[[Connection, IncomingEvent], Awaitable[None]]
"""Applies one event's effect using the given connection (inside the inbox transaction)."""

BROKER_RESETS = Counter(
    "chengneng_consumer_broker_resets_total",
    "Times a consumer found its committed offsets gone (a broker that lost its state) and started over",
    ["consumer"],
)
OUT_OF_ORDER = Counter(
    "chengneng_consumer_out_of_order_total",
    "Events ahead of their stream, held back in the inbox until their predecessor is applied",
    ["consumer"],
)
HELD_BACK = Gauge(
    "chengneng_consumer_held_back",
    "Events held back in the inbox now, waiting for their predecessor (alert if it stays above 0)",
    ["consumer"],
)
BATCHES = Counter(
    "chengneng_consumer_batches_total",
    "Fetched batches applied together in one transaction, or one record at a time (something needed care)",
    ["consumer", "how"],
)
RELEASED = Counter(
    "chengneng_consumer_released_total",
    "Held-back events applied right after their predecessor",
    ["consumer"],
)

HELD_COUNT_INTERVAL_S = 1.0
"""How often a consumer holding nothing counts its held-back events anyway: another instance
of it may have held one back before a rebalance handed this one the partition."""

TOGETHER = 50
"""At most this many fetched events are applied in one transaction: enough to spare the
round trips, few enough that a transaction stays short (the sealer waits for it)."""

HANDLER_ATTEMPTS = 5
DATABASE_WAIT_S = 60.0
"""How long one event waits for the database before the consumer starts over (from its
last committed offset: nothing is lost, the applied events are skipped by the inbox)."""

Sources = Mapping[str, EventRegistry]
"""A consumer's contract: for each producing service (CloudEvents source ``/chengneng/<name>``),
the event types and schema versions it publishes."""


def contract_violation(sources: Sources, event: IncomingEvent) -> tuple[str | None, IncomingEvent]:
    """Why ``event`` breaks the contract (None if it keeps it), and the event upcast to the
    current schema version of its type, so that handlers read one shape only."""
    service = event.source.rstrip("/").rsplit("/", 1)[-1]
    events = sources.get(service) if event.source == f"/{kafka.TOPIC_PREFIX}/{service}" else None
    if events is None:
        return f"unknown source {event.source!r}: this consumer reads {', '.join(sorted(sources))}", event
    if event.type != kafka.cloudevent_type(service, event.event_type):
        return f"event type {event.type!r} is not of source {event.source!r}", event
    cls = events.by_type.get(event.event_type)
    if cls is None:
        return f"unknown event type {event.type!r}: {service} publishes no such event", event
    if not 1 <= event.schema_version <= cls.schema_version:
        return (
            f"unknown schema version {event.schema_version} of {event.type!r}: "
            f"this consumer knows versions 1 to {cls.schema_version}",
            event,
        )
    try:
        decoded = events.decode(event.event_type, event.schema_version, event.data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(payload)'}: {e['msg']}" for e in exc.errors()[:5])
        return f"payload of {event.type!r} v{event.schema_version} does not match its schema: {problems}", event
    except KeyError as exc:  # no upcaster for an old version
        return f"schema version {event.schema_version} of {event.type!r} cannot be upcast: {exc}", event
    if event.schema_version < cls.schema_version:
        event = dataclasses.replace(event, data=decoded.model_dump(mode="json"), schema_version=cls.schema_version)
    return None, event


def read_record(record: Any, sources: Sources | None) -> tuple[str | None, IncomingEvent | None]:
    """(None, the record's event upcast) if it is well formed and keeps the contract with
    ``sources`` (None: any well-formed event); else (why not, the event as read if it could
    be read at all, so that the inbox can record a dead letter by its id)."""
    try:
        event = kafka.from_record(record.headers, record.key, record.value)
    except MalformedMessage as exc:
        return str(exc), None
    if sources is None:
        return None, event
    violation, event = contract_violation(sources, event)
    return violation, event


IDLE_OFFSETS_CHECK_S = 5.0
"""How long a consumer that fetches nothing waits before it checks that the broker still has
the offsets it committed (see ``_check_offsets_kept``)."""


class _AppliedConcurrently(Exception):
    """Rolls back an application that another consumer instance committed first."""


class _BatchSpoiled(Exception):
    """Rolls back a batch in which something failed that a handler did not let through."""


class BrokerLostState(Exception):
    """The broker forgot what this consumer committed: rebuild the client, read from the start."""


class OutOfOrder(Exception):
    """The event follows events this consumer has not applied yet: hold it back until they are."""


@dataclasses.dataclass(frozen=True)
class HeldRecord:
    """A consumed record kept in the inbox while its event waits for its predecessor.

    It has the attributes of aiokafka's ``ConsumerRecord`` that the consumer reads, so a
    released record goes the same way as a fetched one (even to the dead letters).
    """

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...]

    @classmethod
    def of(cls, record: Any) -> HeldRecord:
        return cls(record.topic, record.partition, record.offset, record.key, record.value, tuple(record.headers or ()))

    def as_json(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "key": _b64(self.key) if self.key is not None else None,
            "value": _b64(self.value),
            "headers": [[name, _b64(raw)] for name, raw in self.headers],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> HeldRecord:
        return cls(
            data["topic"],
            data["partition"],
            data["offset"],
            base64.b64decode(data["key"]) if data["key"] is not None else None,
            base64.b64decode(data["value"]),
            tuple((name, base64.b64decode(raw)) for name, raw in data["headers"]),
        )


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


class InboxConsumer:
    """Consumes topics in a consumer group and applies each event once."""

    def __init__(
        self,
        name: str,
        topics: list[str],
        pool: asyncpg.Pool,
        bootstrap: str,
        handler: Handler,
        *,
        session_timeout_ms: int = 10_000,
        partitions: int = kafka.DEFAULT_PARTITIONS,
        replication: int = 1,
        sources: Sources | None = None,
        ordered: bool = True,
        together: int = TOGETHER,
    ) -> None:
        self.name = name
        self.topics = topics
        self.pool = pool
        self.bootstrap = bootstrap
        self.handler = handler
        self.sources = sources
        """The contract checked before the handler runs; None accepts every well-formed event."""
        self.ordered = ordered
        """Apply each stream in order: an event whose predecessor was not seen is held back until it is."""
        if together < 1:
            raise ValueError(f"a consumer applies at least one event per transaction, not {together}")
        self.together = together
        """Events per transaction of a plain batch; 1 applies every record on its own."""
        self.session_timeout_ms = session_timeout_ms
        self.topic_options = {"partitions": partitions, "replication": replication}
        self._holding = True
        """Whether the inbox may hold events back for this consumer: while it holds none, it
        neither looks for a successor after every event nor sweeps before every batch."""
        self._counted_at = 0.0

    async def run(self) -> None:
        """Consume until cancelled; rebuild the client after any broker failure."""
        await keep_running(self._consume, "consumer", consumer=self.name)

    async def _consume(self) -> None:
        # The dead-letter topic too: a first poison record should not wait for its creation.
        await kafka.ensure_topics(self.bootstrap, [*self.topics, kafka.DEADLETTER_TOPIC], **self.topic_options)
        consumer = AIOKafkaConsumer(
            *self.topics,
            bootstrap_servers=self.bootstrap,
            group_id=f"chengneng.{self.name}",
            client_id=f"chengneng.{self.name}",
            enable_auto_commit=False,
            # Positions are ours (the inbox); 'latest' is unreliable on the embedded broker.
            auto_offset_reset="earliest",
            session_timeout_ms=self.session_timeout_ms,
            heartbeat_interval_ms=max(self.session_timeout_ms // 3, 500),
            metadata_max_age_ms=5_000,
            # A fetch waits at most this long for records: an event crosses a service within it
            # even on a broker that answers only when the wait ends.
            fetch_max_wait_ms=100,
        )
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all")
        committed: dict[TopicPartition, int] = {}
        try:
            # Inside the try: a consumer that started while the producer failed to (a broker
            # restarting) must be stopped, or its group membership lives on without anyone
            # fetching, holding its partitions until the broker evicts it (max.poll.interval).
            await consumer.start()
            await producer.start()
            log.info("consumer started", consumer=self.name, topics=self.topics)
            checked = time.monotonic()
            while True:
                batches = await consumer.getmany(timeout_ms=500, max_records=200)
                if batches:
                    await self._check_offsets_kept(consumer, committed, list(batches))
                    checked = time.monotonic()
                elif committed and time.monotonic() - checked >= IDLE_OFFSETS_CHECK_S:
                    # A client whose positions lie beyond the end of a topic the broker
                    # recreated empty fetches nothing at all: the check must not wait for a record.
                    # A broker away meanwhile is no news: the fetches wait it out, as before.
                    with contextlib.suppress(KafkaError, TimeoutError):
                        await asyncio.wait_for(
                            self._check_offsets_kept(consumer, committed, list(committed)), IDLE_OFFSETS_CHECK_S
                        )
                    checked = time.monotonic()
                await self._release_ready(producer)
                if batches:
                    # Partitions hold different streams: their records are applied together,
                    # each partition's in its order, and their offsets committed in one request.
                    await self._handle_batch([r for records in batches.values() for r in records], producer)
                    offsets = {tp: records[-1].offset + 1 for tp, records in batches.items()}
                    await consumer.commit(offsets)
                    committed.update(offsets)
                if not consumer.assignment() and not await self._topics_exist():
                    # The broker lost our topics: rebuild the client so it subscribes afresh.
                    raise RuntimeError("subscribed topics disappeared from the broker")
        finally:
            for client in (consumer, producer):
                with contextlib.suppress(Exception):
                    await client.stop()

    async def _check_offsets_kept(
        self, consumer: AIOKafkaConsumer, committed: dict[TopicPartition, int], partitions: list[TopicPartition]
    ) -> None:
        """Start over from the beginning if the broker forgot the offsets this client committed.

        A broker that restarted empty (the embedded one keeps everything in memory) is reached
        again at the same address: the client goes on fetching at its old positions, which on
        the new topic (the relay publishes the whole history again) point into the middle, so
        the events before them would be skipped. The committed offsets are the witness: gone
        means the broker lost its state. Checked after each fetch and before its records are
        applied, so nothing fetched from the new broker is applied out of order; and, when
        nothing comes, every ``IDLE_OFFSETS_CHECK_S``, because positions beyond the end of
        the new topic fetch nothing.
        """
        for tp in partitions:
            if tp in committed and await consumer.committed(tp) is None:
                BROKER_RESETS.labels(self.name).inc()
                log.warning(
                    "the broker lost this group's offsets; consuming again from the beginning",
                    consumer=self.name,
                    topic=tp.topic,
                    partition=tp.partition,
                    was_at=committed[tp],
                )
                raise BrokerLostState(f"{tp.topic}[{tp.partition}]: committed offset {committed[tp]} is gone")

    async def _topics_exist(self) -> bool:
        try:
            return set(self.topics) <= await kafka.existing_topics(self.bootstrap)
        except Exception:
            return False

    async def _handle_batch(self, records: list[ConsumerRecord], producer: AIOKafkaProducer) -> None:  # type: ignore[type-arg]
        """Apply a fetched batch in one transaction per ``together`` events when none of it
        needs care; otherwise record by record, the careful way (a failed try leaves nothing).

        Most batches are plain: well-formed events, new to this consumer (or, after a broker
        restart, applied before), each after its predecessor. One event per transaction cost
        about six round trips to the database even for events a consumer only notes; together
        they cost a handful per batch.
        """
        for start in range(0, len(records), self.together):
            chunk = records[start : start + self.together]
            if len(chunk) > 1 and not self._holding:
                events = [e for reason, e in (read_record(r, self.sources) for r in chunk) if reason is None and e]
                if len(events) == len(chunk) and await self._patiently(functools.partial(self.apply_together, events)):
                    BATCHES.labels(self.name, "together").inc()
                    continue
                BATCHES.labels(self.name, "one_by_one").inc()
            for record in chunk:
                await self._handle(record, producer)

    async def apply_together(self, events: list[IncomingEvent]) -> bool:
        """Apply events in one transaction if each is new or applied before, and follows its
        predecessor (seen before, or earlier among them); True if done. False, with nothing
        applied, when any needs the one-by-one path: one held back or dead-lettered before,
        an event ahead of its stream, a handler that failed, another instance that applied one
        first. A database outage is raised."""
        async with self.pool.acquire() as conn:
            try:
                async with conn.transaction():
                    # Look before writing, as ``apply`` does. Later handlers read streams after
                    # the first append gave the transaction its id, as a retried append does:
                    # a reaction reads only the stream it appends to, and the sealer puts each
                    # stream in version order whatever the transaction ids.
                    applied = await self._applied_before_if_in_order(conn, events)
                    if applied is None:
                        return False
                    fresh = [e for e in events if e.event_id not in applied]
                    with db.batch() as batch:
                        for event in fresh:
                            await self._run_handler(conn, event)
                    if batch.spoiled:  # a handler went on after a failure its writes may share
                        raise _BatchSpoiled("a reaction failed and its handler carried on")
                    if await self._record_applied(conn, fresh) != len(fresh):
                        raise _AppliedConcurrently()
                store.note_committed()
            except _AppliedConcurrently:
                return False
            except Exception as exc:
                if db.unavailable(exc):
                    raise
                log.info("batch applied one by one instead", consumer=self.name, error=repr(exc))
                return False
        APPLIED.labels(self.name).inc(len(fresh))
        DUPLICATES.labels(self.name).inc(len(applied))
        return True

    async def _applied_before_if_in_order(self, conn: Connection, events: list[IncomingEvent]) -> set[uuid.UUID] | None:
        """The ids among ``events`` this consumer applied before (a redelivery, after a broker
        restart the whole history), if every other one is new and each event's predecessor was
        applied or dead-lettered before, or comes earlier among ``events``; else None."""
        ids = [e.event_id for e in events]
        if len(set(ids)) != len(ids):
            return None
        needed: set[tuple[str, str, int]] = set()
        if self.ordered:
            among: set[tuple[str, str, int]] = set()
            for e in events:
                if e.stream_version > 1 and (e.source, e.subject, e.stream_version - 1) not in among:
                    needed.add((e.source, e.subject, e.stream_version - 1))
                among.add((e.source, e.subject, e.stream_version))
        row = await conn.fetchrow(
            """WITH seen AS (SELECT event_id, outcome = 'applied' AND subject IS NOT NULL AS plainly_applied
                             FROM inbox WHERE consumer = $1 AND event_id = ANY($2::uuid[]))
               SELECT (SELECT coalesce(array_agg(event_id), '{}') FROM seen WHERE plainly_applied) AS applied,
                      (SELECT count(*) FROM seen WHERE NOT plainly_applied) AS otherwise,
                      (SELECT count(*) FROM unnest($3::text[], $4::text[], $5::int[]) AS p(source, subject, version)
                        WHERE EXISTS (SELECT 1 FROM inbox i WHERE i.consumer = $1 AND i.source = p.source
                                      AND i.subject = p.subject AND i.stream_version = p.version
                                      AND i.outcome <> 'held_back')) AS predecessors""",
            self.name,
            ids,
            [source for source, _, _ in needed],
            [subject for _, subject, _ in needed],
            [version for _, _, version in needed],
        )
        if row is None or row["otherwise"] or row["predecessors"] != len(needed):
            return None
        return set(row["applied"])

    async def _handle(self, record: ConsumerRecord | HeldRecord, producer: AIOKafkaProducer) -> None:  # type: ignore[type-arg]
        """Apply one record; then any successor of its event that was held back, in stream order."""
        event = await self._accepted(record, producer)
        while event is not None:
            if not await self._apply_or_deadletter(record, producer, event):
                return  # held back: its predecessor has not been seen
            released = (
                await self._patiently(functools.partial(self._held_successor, event), event)
                if self._holding and event.subject
                else None
            )
            if released is None:
                return
            record = released
            event = await self._accepted(record, producer)
            if event is not None:
                RELEASED.labels(self.name).inc()
                log.info(
                    "held-back event released after its predecessor",
                    consumer=self.name,
                    event_id=str(event.event_id),
                    subject=event.subject,
                    stream_version=event.stream_version,
                )

    async def _accepted(
        self,
        record: ConsumerRecord | HeldRecord,  # type: ignore[type-arg]
        producer: AIOKafkaProducer,
    ) -> IncomingEvent | None:
        """The record's event, upcast, if it is well formed and keeps the contract; else dead-letter it."""
        reason, event = read_record(record, self.sources)
        if reason is not None:
            await self._deadletter(record, producer, reason, event)
            return None
        return event

    async def _apply_or_deadletter(
        self,
        record: ConsumerRecord | HeldRecord,  # type: ignore[type-arg]
        producer: AIOKafkaProducer,
        event: IncomingEvent,
    ) -> bool:
        """Apply (or find applied, or dead-letter) the event: True; held back for its predecessor: False."""
        failures = 0
        while True:
            try:
                await self._patiently(functools.partial(self.apply, event), event)
                return True
            except OutOfOrder as exc:
                await self._patiently(functools.partial(self._hold_back, record, event, str(exc)), event)
                return False
            except (asyncio.CancelledError, DatabaseAway):
                raise
            except Exception as exc:
                failures += 1
                if failures >= HANDLER_ATTEMPTS:
                    await self._deadletter(record, producer, f"handler failed {failures} times: {exc!r}", event)
                    return True
                log.warning("handler failed; retrying", consumer=self.name, attempt=failures, error=repr(exc))
                await asyncio.sleep(0.2 * failures)

    async def _patiently(self, call: Callable[[], Awaitable[T]], event: IncomingEvent | None = None) -> T:
        """``call``, waiting out a database outage; after ``DATABASE_WAIT_S`` the consumer
        starts over from its committed offsets (``DatabaseAway``)."""
        event_id = str(event.event_id) if event else None
        return await wait_out_database(
            call, "consumer", max_wait_s=DATABASE_WAIT_S, consumer=self.name, event_id=event_id
        )

    async def _hold_back(
        self,
        record: ConsumerRecord | HeldRecord,  # type: ignore[type-arg]
        event: IncomingEvent,
        reason: str,
    ) -> None:
        """Keep the event, with its record, in the inbox until its predecessor is applied."""
        await self.pool.execute(
            """INSERT INTO inbox (consumer, event_id, source, event_type, outcome, subject, stream_version,
                                  held_record)
               VALUES ($1, $2, $3, $4, 'held_back', $5, $6, $7) ON CONFLICT (consumer, event_id) DO NOTHING""",
            self.name,
            event.event_id,
            event.source,
            event.event_type,
            event.subject,
            event.stream_version,
            HeldRecord.of(record).as_json(),
        )
        self._holding = True
        OUT_OF_ORDER.labels(self.name).inc()
        log.warning(
            "event ahead of its stream; held back until its predecessor is applied",
            consumer=self.name,
            event_id=str(event.event_id),
            subject=event.subject,
            reason=reason,
        )

    async def _release_ready(self, producer: AIOKafkaProducer) -> None:
        """Apply the held-back events whose predecessor has been applied meanwhile without
        releasing them (by another instance of this consumer during a rebalance, say), then
        count what is still held. Runs before each fetch: the sweep while something is held,
        the count then too, and otherwise once every ``HELD_COUNT_INTERVAL_S``, so that no
        stream stays stuck behind a race and a consumer holding nothing pays almost nothing."""
        if self._holding:
            for record in await self._patiently(self._ready_to_release):
                await self._handle(record, producer)
        now = time.monotonic()
        if self._holding or now - self._counted_at >= HELD_COUNT_INTERVAL_S:
            held = await self._patiently(self._held_count)
            HELD_BACK.labels(self.name).set(held)
            self._holding, self._counted_at = held > 0, now

    async def _ready_to_release(self) -> list[HeldRecord]:
        rows = await self.pool.fetch(
            """SELECT h.held_record FROM inbox h WHERE h.consumer = $1 AND h.outcome = 'held_back'
                 AND EXISTS (SELECT 1 FROM inbox p WHERE p.consumer = h.consumer AND p.source = h.source
                             AND p.subject = h.subject AND p.stream_version = h.stream_version - 1
                             AND p.outcome <> 'held_back')
               ORDER BY h.subject, h.stream_version""",
            self.name,
        )
        return [HeldRecord.from_json(row[0]) for row in rows]

    async def _held_count(self) -> int:
        return int(
            await self.pool.fetchval(
                "SELECT count(*) FROM inbox WHERE consumer = $1 AND outcome = 'held_back'", self.name
            )
        )

    async def _held_successor(self, event: IncomingEvent) -> HeldRecord | None:
        """The record of the next event of ``event``'s stream, if it came early and was held back."""
        held = await self.pool.fetchval(
            """SELECT held_record FROM inbox WHERE consumer = $1 AND source = $2 AND subject = $3
                   AND stream_version = $4 AND outcome = 'held_back'""",
            self.name,
            event.source,
            event.subject,
            event.stream_version + 1,
        )
        return HeldRecord.from_json(held) if held is not None else None

    async def apply(self, event: IncomingEvent) -> bool:
        """Apply one event through the inbox; False when it had been applied already."""
        async with self.pool.acquire() as conn:
            try:
                async with conn.transaction():
                    # Look before writing: the transaction takes its id at its first write, and
                    # that should be the handler's append (tails read in transaction-id order, so
                    # an id taken early would put this transaction's events before the events it
                    # read). The inbox row is written last; a concurrent duplicate makes it fail.
                    seen = await conn.fetchrow(
                        "SELECT outcome, subject FROM inbox WHERE consumer = $1 AND event_id = $2",
                        self.name,
                        event.event_id,
                    )
                    if seen is not None and seen["outcome"] == "applied":
                        DUPLICATES.labels(self.name).inc()
                        if seen["subject"] is None:  # recorded before the inbox knew streams
                            await conn.execute(
                                """UPDATE inbox SET subject = $3, stream_version = $4
                                   WHERE consumer = $1 AND event_id = $2""",
                                self.name,
                                event.event_id,
                                event.subject,
                                event.stream_version,
                            )
                        return False
                    if self.ordered and event.stream_version > 1:
                        await self._check_order(conn, event)
                    await self._run_handler(conn, event)
                    if not await self._record_applied(conn, [event]):
                        raise _AppliedConcurrently()
                store.note_committed()
            except _AppliedConcurrently:
                DUPLICATES.labels(self.name).inc()
                return False  # another instance applied it first: our effects were rolled back
        APPLIED.labels(self.name).inc()
        return True

    async def _run_handler(self, conn: Connection, event: IncomingEvent) -> None:
        """The handler, with the event's correlation and id on every log line it writes."""
        structlog.contextvars.bind_contextvars(correlation_id=str(event.correlation_id), event_id=str(event.event_id))
        try:
            await self.handler(conn, event)
        finally:
            structlog.contextvars.unbind_contextvars("correlation_id", "event_id")

    async def _record_applied(self, conn: Connection, events: list[IncomingEvent]) -> int:
        """Record the events as applied (written last, see ``apply``); returns how many were
        recorded: fewer than given when another instance applied some first."""
        return int(
            await conn.fetchval(
                """WITH recorded AS (
                       INSERT INTO inbox (consumer, event_id, source, event_type, subject, stream_version)
                       SELECT $1, * FROM unnest($2::uuid[], $3::text[], $4::text[], $5::text[], $6::int[])
                       ON CONFLICT (consumer, event_id) DO UPDATE SET outcome = 'applied', received_at = now(),
                           subject = excluded.subject, stream_version = excluded.stream_version, held_record = NULL
                           WHERE inbox.outcome <> 'applied'
                       RETURNING 1)
                   SELECT count(*) FROM recorded""",
                self.name,
                [e.event_id for e in events],
                [e.source for e in events],
                [e.event_type for e in events],
                [e.subject for e in events],
                [e.stream_version for e in events],
            )
        )

    async def _check_order(self, conn: Connection, event: IncomingEvent) -> None:
        """Raise ``OutOfOrder`` unless the event's predecessor in its stream was seen (applied or
        dead-lettered). A broker that lost its state gets the whole history again from the relay,
        but records sent in the moment before the relay noticed are on the new topic first."""
        prior = await conn.fetchval(
            """SELECT 1 FROM inbox WHERE consumer = $1 AND source = $2 AND subject = $3 AND stream_version = $4
                   AND outcome <> 'held_back'""",
            self.name,
            event.source,
            event.subject,
            event.stream_version - 1,
        )
        if prior:
            return
        # Rows from before the inbox recorded streams cannot vouch either way: do not hold back.
        if await conn.fetchval("SELECT 1 FROM inbox WHERE consumer = $1 AND subject IS NULL LIMIT 1", self.name):
            return
        raise OutOfOrder(f"version {event.stream_version} of {event.subject} before version {event.stream_version - 1}")

    async def _deadletter(
        self,
        record: ConsumerRecord | HeldRecord,  # type: ignore[type-arg]
        producer: AIOKafkaProducer,
        reason: str,
        event: IncomingEvent | None = None,
    ) -> None:
        await self._send_deadletter(record, producer, reason)
        if event is not None:
            async with self.pool.acquire() as conn:
                await conn.execute(
                    """INSERT INTO inbox (consumer, event_id, source, event_type, outcome, subject, stream_version)
                       VALUES ($1, $2, $3, $4, 'deadlettered', $5, $6)
                       ON CONFLICT (consumer, event_id) DO UPDATE SET outcome = 'deadlettered', held_record = NULL
                           WHERE inbox.outcome = 'held_back'""",
                    self.name,
                    event.event_id,
                    event.source,
                    event.event_type,
                    event.subject,
                    event.stream_version,
                )
        DEADLETTERED.labels(self.name).inc()
        log.error("record dead-lettered", consumer=self.name, reason=reason, topic=record.topic, offset=record.offset)

    async def _send_deadletter(
        self,
        record: ConsumerRecord | HeldRecord,  # type: ignore[type-arg]
        producer: AIOKafkaProducer,
        reason: str,
    ) -> None:
        headers = kafka.deadletter_headers(
            record.headers, reason, self.name, record.topic, record.partition, record.offset
        )
        await kafka.ensure_topics(self.bootstrap, [kafka.DEADLETTER_TOPIC], **self.topic_options)
        await producer.send_and_wait(kafka.DEADLETTER_TOPIC, value=record.value, key=record.key, headers=headers)


__all__ = [
    "Handler",
    "HeldRecord",
    "InboxConsumer",
    "OutOfOrder",
    "Sources",
    "TopicPartition",
    "contract_violation",
    "read_record",
]
