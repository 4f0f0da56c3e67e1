"""The relay: the events table is the outbox; publish it to Kafka, at least once.

One active relay per service, chosen by a PostgreSQL advisory lock held on a dedicated
connection; a standby takes over when the holder's session ends. The relay position
is stored in the service's database and advanced only after the broker acknowledged
(acks=all) every record of a batch. If the broker lost the topic (an embedded broker
restarted empty), the relay recreates it and publishes again from the first event.
"""

from __future__ import annotations

import asyncio
import time

import asyncpg
import structlog
from aiokafka import AIOKafkaProducer
from prometheus_client import Counter, Gauge

from shared import kafka, store

log = structlog.get_logger(__name__)

PUBLISHED = Counter("chengneng_relay_published_total", "Events published by the relay", ["service"])
LAG = Gauge("chengneng_relay_lag_events", "Stored events not yet published", ["service"])
HELD = Gauge(
    "chengneng_relay_held_events",
    "Events committed or pending above the transaction horizon (held back by an older transaction)",
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
    ) -> None:
        self.service = service
        self.pool = pool
        self.dsn = dsn
        self.schema = schema
        self.bootstrap = bootstrap
        self.topic = kafka.events_topic(service)
        self.batch_size = batch_size
        self.poll_interval_s = poll_interval_s
        self.topic_check_interval_s = topic_check_interval_s
        self.partitions = partitions
        self.name = f"kafka:{self.topic}"
        self.caught_up = asyncio.Event()

    async def run(self) -> None:
        """Wait for leadership, then publish until cancelled; reconnect on any failure."""
        while True:
            try:
                await self._run_as_leader()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("relay failed; retrying", service=self.service)
                await asyncio.sleep(1.0)

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
            await producer.start()
            try:
                await self._publish_loop(producer, lock_conn)
            finally:
                await producer.stop()
        finally:
            await lock_conn.close()

    async def _publish_loop(self, producer: AIOKafkaProducer, lock_conn: asyncpg.Connection) -> None:
        await self._check_topic(first=True)
        last_check = time.monotonic()
        held_since: float | None = None
        while True:
            if time.monotonic() - last_check >= self.topic_check_interval_s:
                await self._check_topic()
                await lock_conn.fetchval("SELECT 1")  # the lock lives as long as this session
                last_check = time.monotonic()
            position = await self.position()
            batch = await store.read_after(self.pool, position, self.batch_size)
            if batch:
                await self._publish(producer, batch)
                continue
            behind, held = await store.tail_lag(self.pool, position)
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

    async def _publish(self, producer: AIOKafkaProducer, batch: list) -> None:  # type: ignore[type-arg]
        self.caught_up.clear()
        futures = []
        for envelope in batch:
            message = kafka.to_message(self.service, envelope)
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
        last = batch[-1].position
        await self.pool.execute(
            """INSERT INTO relay_positions (name, position) VALUES ($1, $2)
               ON CONFLICT (name) DO UPDATE SET position = $2, updated_at = now()""",
            self.name,
            last,
        )
        PUBLISHED.labels(self.service).inc(len(batch))
        log.debug("published", service=self.service, count=len(batch), position=last)

    async def position(self) -> int:
        value = await self.pool.fetchval("SELECT position FROM relay_positions WHERE name = $1", self.name)
        return int(value or 0)

    async def _check_topic(self, *, first: bool = False) -> None:
        """Create the topic if missing; if it vanished after publishing, start over from 0."""
        created = await kafka.ensure_topics(self.bootstrap, [self.topic], partitions=self.partitions)
        if not created:
            return
        position = await self.position()
        if position > 0:
            REPUBLISHES.labels(self.service).inc()
            log.warning(
                "the broker lost the topic; republishing every event from the store",
                service=self.service,
                topic=self.topic,
                was_at=position,
            )
            await self.pool.execute(
                "UPDATE relay_positions SET position = 0, updated_at = now() WHERE name = $1", self.name
            )
        elif first:
            log.info("topic created", topic=self.topic)
