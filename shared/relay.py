"""The relay: the events table is the outbox; publish it to Kafka, at least once.

One active relay per service, chosen by a PostgreSQL advisory lock held on a dedicated
connection; a standby takes over when the holder's session ends. The relay position
is stored in the service's database and advanced only after the broker acknowledged
(acks=all) every record of a batch. It publishes in the order of the sealer's dense log
(``store.read_log``), so it never needs to reason about late commits itself.

If the broker lost its state (an embedded broker restarted empty), the relay publishes
again from the first event. Two witnesses tell it so: the topic is missing from the
metadata, or the relay's marker (an offset committed for its own consumer group) is
gone. The marker is needed because clients may re-create a lost topic, empty, before
the relay looks (subscribers' metadata requests auto-create topics on the embedded
broker), so "the topic exists" alone does not prove the broker kept it.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable

import asyncpg
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import OffsetAndMetadata
from prometheus_client import Counter, Gauge

from shared import kafka, store
from shared.envelope import Envelope
from shared.resilience import keep_running

log = structlog.get_logger(__name__)

PUBLISHED = Counter("chengneng_relay_published_total", "Events published by the relay", ["service"])
LAG = Gauge("chengneng_relay_lag_events", "Stored events not yet published", ["service"])
HELD = Gauge(
    "chengneng_relay_held_events",
    "Events not yet sealed: pending, or held back by an older transaction below the horizon",
    ["service"],
)
REPUBLISHES = Counter("chengneng_relay_republish_total", "Times the relay restarted from the store", ["service"])

STALL_WARNING_S = 10.0


class Relay:
    """Publishes one service's events to ``chengneng.<service>.events``."""

    def __init__(
        self,
        service: str,
        pool: asyncpg.Pool,
        dsn: str,
        schema: str,
        bootstrap: str,
        *,
        batch_size: int = 500,
        poll_interval_s: float = 0.2,
        topic_check_interval_s: float = 2.0,
        partitions: int = kafka.DEFAULT_PARTITIONS,
        replication: int = 1,
        topic: str | None = None,
        mapper: Callable[[Envelope], kafka.OutgoingMessage] | None = None,
    ) -> None:
        self.service = service
        self.pool = pool
        self.dsn = dsn
        self.schema = schema
        self.bootstrap = bootstrap
        self.topic = topic or kafka.events_topic(service)
        self.mapper = mapper or functools.partial(kafka.to_message, service)
        self.batch_size = batch_size
        self.poll_interval_s = poll_interval_s
        self.topic_check_interval_s = topic_check_interval_s
        self.partitions = partitions
        self.replication = replication
        self.name = f"kafka:{self.topic}"
        self.caught_up = asyncio.Event()

    async def run(self) -> None:
        """Wait for leadership, then publish until cancelled; reconnect on any failure."""
        await keep_running(self._run_as_leader, "relay", service=self.service)

    async def _run_as_leader(self) -> None:
        lock_conn = await asyncpg.connect(self.dsn, server_settings={"search_path": self.schema})
        try:
            while not await lock_conn.fetchval(
                "SELECT pg_try_advisory_lock(hashtext($1))", f"chengneng-relay-{self.service}"
            ):
                await asyncio.sleep(1.0)
            log.info("relay is the active instance", service=self.service, topic=self.topic)
            producer = AIOKafkaProducer(
                bootstrap_servers=self.bootstrap,
                acks="all",
                enable_idempotence=False,  # Tansu has no idempotent producer; consumers dedupe.
                linger_ms=5,
                request_timeout_ms=15_000,
            )
            marker = AIOKafkaConsumer(
                bootstrap_servers=self.bootstrap,
                group_id=f"chengneng.relay.{self.service}",
                enable_auto_commit=False,
            )
            await producer.start()
            await marker.start()
            try:
                async with kafka.admin_client(self.bootstrap) as admin:
                    await self._publish_loop(producer, marker, admin, lock_conn)
            finally:
                await marker.stop()
                await producer.stop()
        finally:
            await lock_conn.close()

    async def _publish_loop(
        self,
        producer: AIOKafkaProducer,
        marker: AIOKafkaConsumer,
        admin: AIOKafkaAdminClient,
        lock_conn: asyncpg.Connection,
    ) -> None:
        await self._check_broker(marker, admin, first=True)
        last_check = time.monotonic()
        held_since: float | None = None
        while True:
            if time.monotonic() - last_check >= self.topic_check_interval_s:
                await self._check_broker(marker, admin)
                await lock_conn.fetchval("SELECT 1")  # the lock lives as long as this session
                last_check = time.monotonic()
            position = await self.position()
            entries = await store.read_log(self.pool, position, self.batch_size)
            if entries:
                # A broker restart can be invisible to the producer (it reconnects and the topic
                # is auto-created), so the broker's memory is checked before every batch.
                if await self._check_broker(marker, admin):
                    continue
                await self._publish(producer, entries)
                continue
            behind, held = await self._lag(position)
            LAG.labels(self.service).set(behind)
            HELD.labels(self.service).set(held)
            if held:
                held_since = held_since or time.monotonic()
                if time.monotonic() - held_since > STALL_WARNING_S:
                    log.warning(
                        "relay held back by a long-running transaction",
                        service=self.service,
                        held_events=held,
                        seconds=round(time.monotonic() - held_since, 1),
                    )
                    held_since = time.monotonic()
            else:
                held_since = None
                self.caught_up.set()
            await asyncio.sleep(self.poll_interval_s)

    async def _publish(self, producer: AIOKafkaProducer, entries: list[tuple[int, Envelope]]) -> None:
        batch = [envelope for _, envelope in entries]
        self.caught_up.clear()
        futures = []
        for envelope in batch:
            message = self.mapper(envelope)
            futures.append(
                await producer.send(
                    self.topic,
                    value=message.value,
                    key=message.key,
                    headers=message.headers,
                    timestamp_ms=int(envelope.occurred_at.timestamp() * 1000),
                )
            )
        await asyncio.gather(*futures)  # every record acknowledged before the position moves
        last = entries[-1][0] + 1  # the relay position is the next log index to publish
        await self.pool.execute(
            """INSERT INTO relay_positions (name, position) VALUES ($1, $2)
               ON CONFLICT (name) DO UPDATE SET position = $2, updated_at = now()""",
            self.name,
            last,
        )
        PUBLISHED.labels(self.service).inc(len(batch))
        log.debug("published", service=self.service, count=len(batch), position=last)

    async def _lag(self, position: int) -> tuple[int, int]:
        """(events not yet published, of which not yet sealed or held back by the horizon)."""
        sealed = int(await self.pool.fetchval("SELECT count(*) FROM log_entries"))
        total = int(await self.pool.fetchval("SELECT count(*) FROM events"))
        return total - position, total - sealed

    async def position(self) -> int:
        value = await self.pool.fetchval("SELECT position FROM relay_positions WHERE name = $1", self.name)
        return int(value or 0)

    async def _check_broker(self, marker: AIOKafkaConsumer, admin: AIOKafkaAdminClient, *, first: bool = False) -> bool:
        """Start over from the first event if the broker lost the topic or the relay's marker.

        Returns True when it did. Records published in the moment between a broker restart
        and this check come before the republished history on the topic: consumers treat
        such an early event as not yet applicable (``OutOfOrder``) and apply its copy later.
        """
        created = await kafka.ensure_topics(
            admin, [self.topic], partitions=self.partitions, replication=self.replication
        )
        marker_tp = TopicPartition(self.topic, 0)
        if not marker.assignment():
            marker.assign([marker_tp])
        marked = await marker.committed(marker_tp)
        position = await self.position()
        if position > 0 and (created or marked is None):
            REPUBLISHES.labels(self.service).inc()
            log.warning(
                "the broker lost the topic; republishing every event from the store",
                service=self.service,
                topic=self.topic,
                was_at=position,
                topic_missing=bool(created),
                marker_missing=marked is None,
            )
            await self.pool.execute(
                "UPDATE relay_positions SET position = 0, updated_at = now() WHERE name = $1", self.name
            )
            restart = True
        else:
            restart = False
            if created and first:
                log.info("topic created", topic=self.topic)
        # Re-committed on every check so that a broker's offset retention never expires it.
        await marker.commit({marker_tp: OffsetAndMetadata(0, "chengneng relay marker")})
        return restart
