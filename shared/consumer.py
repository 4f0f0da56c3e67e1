"""Consumers with an inbox: applying an event and recording its id is one transaction.

Kafka delivers at least once (and an embedded broker that restarted delivers
everything again), so each consumer records the ids it has applied in its own
database, in the same transaction as the effect: a redelivered event changes nothing.
Offsets are committed to Kafka only after the database commit.

A record that is not a well-formed event, or whose handler keeps failing, is sent to
``chengneng.deadletter`` with the reason, and recorded in the inbox as dead-lettered:
never dropped silently, never blocking the partition forever. A dead-lettered event that
is delivered again is tried again.

A handler raises ``OutOfOrder`` for an event that comes before the events it follows
(after a broker lost its state, the relay publishes the whole history again, and a record
sent in the moment before it noticed is then ahead of its stream). Such an event is not
recorded in the inbox, so its copy in the republished history is applied in order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import asyncpg
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from prometheus_client import Counter

from shared import kafka
from shared.db import Connection
from shared.kafka import IncomingEvent, MalformedMessage
from shared.resilience import keep_running

log = structlog.get_logger(__name__)

APPLIED = Counter("chengneng_consumer_applied_total", "Events applied by consumers", ["consumer"])
DUPLICATES = Counter("chengneng_consumer_duplicates_total", "Redelivered events ignored", ["consumer"])
DEADLETTERED = Counter("chengneng_consumer_deadlettered_total", "Records sent to dead letters", ["consumer"])

Handler = Callable[[Connection, IncomingEvent], Awaitable[None]]
"""Applies one event's effect using the given connection (inside the inbox transaction)."""

OUT_OF_ORDER = Counter(
    "chengneng_consumer_out_of_order_total",
    "Events ahead of their stream, left for their republished copy",
    ["consumer"],
)

HANDLER_ATTEMPTS = 5


class _AppliedConcurrently(Exception):
    """Rolls back an application that another consumer instance committed first."""


class OutOfOrder(Exception):
    """The event follows events this consumer has not applied yet: apply it when it comes again."""


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
    ) -> None:
        self.name = name
        self.topics = topics
        self.pool = pool
        self.bootstrap = bootstrap
        self.handler = handler
        self.session_timeout_ms = session_timeout_ms
        self.topic_options = {"partitions": partitions, "replication": replication}

    async def run(self) -> None:
        """Consume until cancelled; rebuild the client after any broker failure."""
        await keep_running(self._consume, "consumer", consumer=self.name)

    async def _consume(self) -> None:
        await kafka.ensure_topics(self.bootstrap, self.topics, **self.topic_options)
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
        )
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all")
        await consumer.start()
        await producer.start()
        log.info("consumer started", consumer=self.name, topics=self.topics)
        try:
            while True:
                batches = await consumer.getmany(timeout_ms=500, max_records=200)
                for tp, records in batches.items():
                    for record in records:
                        await self._handle(record, producer)
                    await consumer.commit({tp: records[-1].offset + 1})
                if not consumer.assignment() and not await self._topics_exist():
                    # The broker lost our topics: rebuild the client so it subscribes afresh.
                    raise RuntimeError("subscribed topics disappeared from the broker")
        finally:
            await consumer.stop()
            await producer.stop()

    async def _topics_exist(self) -> bool:
        try:
            return set(self.topics) <= await kafka.existing_topics(self.bootstrap)
        except Exception:
            return False

    async def _handle(self, record: ConsumerRecord, producer: AIOKafkaProducer) -> None:  # type: ignore[type-arg]
        try:
            event = kafka.from_record(record.headers, record.key, record.value)
        except MalformedMessage as exc:
            await self._deadletter(record, producer, str(exc))
            return
        for attempt in range(1, HANDLER_ATTEMPTS + 1):
            try:
                await self.apply(event)
                return
            except OutOfOrder as exc:
                OUT_OF_ORDER.labels(self.name).inc()
                log.warning(
                    "event ahead of its stream; waiting for its republished copy",
                    consumer=self.name,
                    event_id=str(event.event_id),
                    subject=event.subject,
                    reason=str(exc),
                )
                return
            except asyncio.CancelledError:
                raise
            except (OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError):
                # The database is away: wait for it rather than dead-letter a good event.
                log.warning("database unavailable; retrying event", consumer=self.name, event_id=str(event.event_id))
                await asyncio.sleep(min(2.0 * attempt, 10.0))
                continue
            except Exception as exc:
                if attempt == HANDLER_ATTEMPTS:
                    await self._deadletter(record, producer, f"handler failed {attempt} times: {exc!r}", event)
                    return
                log.warning("handler failed; retrying", consumer=self.name, attempt=attempt, error=repr(exc))
                await asyncio.sleep(0.2 * attempt)
        raise RuntimeError(f"database still unavailable after {HANDLER_ATTEMPTS} attempts")

    async def apply(self, event: IncomingEvent) -> bool:
        """Apply one event through the inbox; False when it had been applied already."""
        async with self.pool.acquire() as conn:
            try:
                async with conn.transaction():
                    # Look before writing: the transaction takes its id at its first write, and
                    # that should be the handler's append (tails read in transaction-id order, so
                    # an id taken early would put this transaction's events before the events it
                    # read). The inbox row is written last; a concurrent duplicate makes it fail.
                    done = await conn.fetchval(
                        "SELECT 1 FROM inbox WHERE consumer = $1 AND event_id = $2 AND outcome = 'applied'",
                        self.name,
                        event.event_id,
                    )
                    if done:
                        DUPLICATES.labels(self.name).inc()
                        return False
                    structlog.contextvars.bind_contextvars(
                        correlation_id=str(event.correlation_id), event_id=str(event.event_id)
                    )
                    try:
                        await self.handler(conn, event)
                    finally:
                        structlog.contextvars.unbind_contextvars("correlation_id", "event_id")
                    recorded = await conn.fetchval(
                        """INSERT INTO inbox (consumer, event_id, source, event_type) VALUES ($1, $2, $3, $4)
                           ON CONFLICT (consumer, event_id) DO UPDATE SET outcome = 'applied', received_at = now()
                               WHERE inbox.outcome <> 'applied'
                           RETURNING 1""",
                        self.name,
                        event.event_id,
                        event.source,
                        event.event_type,
                    )
                    if not recorded:
                        raise _AppliedConcurrently()
            except _AppliedConcurrently:
                DUPLICATES.labels(self.name).inc()
                return False  # another instance applied it first: our effects were rolled back
        APPLIED.labels(self.name).inc()
        return True

    async def _deadletter(
        self,
        record: ConsumerRecord,  # type: ignore[type-arg]
        producer: AIOKafkaProducer,
        reason: str,
        event: IncomingEvent | None = None,
    ) -> None:
        headers = [
            *record.headers,
            ("deadletter_reason", reason.encode()),
            ("deadletter_consumer", self.name.encode()),
            ("deadletter_topic", record.topic.encode()),
            ("deadletter_partition", str(record.partition).encode()),
            ("deadletter_offset", str(record.offset).encode()),
        ]
        await kafka.ensure_topics(self.bootstrap, [kafka.DEADLETTER_TOPIC], **self.topic_options)
        await producer.send_and_wait(kafka.DEADLETTER_TOPIC, value=record.value, key=record.key, headers=headers)
        if event is not None:
            async with self.pool.acquire() as conn:
                await conn.execute(
                    """INSERT INTO inbox (consumer, event_id, source, event_type, outcome)
                       VALUES ($1, $2, $3, $4, 'deadlettered') ON CONFLICT DO NOTHING""",
                    self.name,
                    event.event_id,
                    event.source,
                    event.event_type,
                )
        DEADLETTERED.labels(self.name).inc()
        log.error("record dead-lettered", consumer=self.name, reason=reason, topic=record.topic, offset=record.offset)


__all__ = ["Handler", "InboxConsumer", "OutOfOrder", "TopicPartition"]
