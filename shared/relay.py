"""The relay: the events table is the outbox; publish it to Kafka, at least once.

One active relay per service, chosen by a PostgreSQL advisory lock held on a dedicated
connection; a standby takes over when the holder's session ends. The relay position
is stored in the service's database and advanced only after the broker acknowledged
(acks=all) every record of a batch. It publishes in the order of the sealer's dense log
(``store.read_log``), so it never needs to reason about late commits itself.

If the broker lost its state (an embedded broker restarted empty), the relay publishes
again from the first event. Three witnesses tell it so: the topic is missing from the
metadata; the relay's marker (an offset committed for its own consumer group) is gone;
or the broker acknowledges a record at an offset no higher than one it acknowledged
before on the same partition (its log started over). The marker is needed because
clients may re-create a lost topic, empty, before the relay looks (subscribers' metadata
requests auto-create topics on the embedded broker), so "the topic exists" alone does
not prove the broker kept it. The marker is written only when the relay starts a topic
afresh (and refreshed hourly against offset retention), never after merely reading it: a
write sent while the broker restarts is retried onto the new broker, where it would
vouch for a history that broker never had. The acknowledged offsets catch a restart
while the relay publishes, before the next check.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import Callable

import asyncpg
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import OffsetAndMetadata
from prometheus_client import Counter, Gauge

from shared import db, kafka, store
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
MARKER_COMMIT_TIMEOUT_S = 15.0
"""How long the marker's commit may take before the relay starts afresh (see ``_write_marker``)."""
MARKER_REFRESH_S = 3600.0
"""How often an intact marker is written again, so that the broker's offset retention (days,
for a group without members) never expires it."""


class BrokerLostLog(Exception):
    """The broker acknowledged a record at an offset it had given before: its log started over."""


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
        self._acked: dict[int, int] = {}
        """The highest offset the broker acknowledged per partition, in this session."""
        self._marker_written_at: float | None = None

    async def run(self) -> None:
        """Wait for leadership, then publish until cancelled; reconnect on any failure."""
        await keep_running(self._run_as_leader, "relay", service=self.service)

    async def _run_as_leader(self) -> None:
        self._acked = {}
        self._marker_written_at = None
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
            try:
                # Started inside the try, so that one that started is stopped when the other fails.
                await producer.start()
                await marker.start()
                async with kafka.admin_client(self.bootstrap) as admin:
                    await self._publish_loop(producer, marker, admin, lock_conn)
            finally:
                for client in (marker, producer):
                    with contextlib.suppress(Exception):
                        await client.stop()
        finally:
            await lock_conn.close()

    async def _publish_loop(
        self,
        producer: AIOKafkaProducer,
        marker: AIOKafkaConsumer,
        admin: AIOKafkaAdminClient,
        lock_conn: asyncpg.Connection,
    ) -> None:
        await self._check_broker(producer, marker, admin, first=True)
        wakeup = db.Wakeup()
        await wakeup.listen(lock_conn, db.channel(self.schema, "sealed"))
        last_check = time.monotonic()
        held_since: float | None = None
        while True:
            if time.monotonic() - last_check >= self.topic_check_interval_s:
                await self._check_broker(producer, marker, admin)
                await lock_conn.fetchval("SELECT 1")  # the lock lives as long as this session
                last_check = time.monotonic()
            position = await self.position()
            entries = await store.read_log(self.pool, position, self.batch_size)
            if entries:
                # A broker restart can be invisible to the producer (it reconnects and the topic
                # is auto-created), so the broker's memory is checked before every batch. Checking
                # only at the interval above was tried (issue 9): under load, records sent to the
                # new broker before the next check were acknowledged, then missing from the topic.
                if await self._check_broker(producer, marker, admin):
                    continue
                try:
                    await self._publish(producer, entries)
                except BrokerLostLog as exc:
                    await self._start_over(marker, reason=str(exc))
                continue
            behind, held = await store.log_lag(self.pool, position)
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
            await wakeup.wait(self.poll_interval_s)

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
        acks = await asyncio.gather(*futures)  # every record acknowledged before the position moves
        for ack in acks:
            before = self._acked.get(ack.partition)
            if before is not None and ack.offset <= before:
                self._acked = {}
                raise BrokerLostLog(f"partition {ack.partition} acknowledged offset {ack.offset} after offset {before}")
            self._acked[ack.partition] = ack.offset
        last = entries[-1][0] + 1  # the relay position is the next log index to publish
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

    async def _check_broker(
        self,
        producer: AIOKafkaProducer,
        marker: AIOKafkaConsumer,
        admin: AIOKafkaAdminClient,
        *,
        first: bool = False,
    ) -> bool:
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
            await self._start_over(
                marker, reason="topic missing" if created else "marker missing", topic_missing=bool(created)
            )
            return True
        await self._sync_partitions(producer, admin)
        if created and first:
            log.info("topic created", topic=self.topic)
        if marked is None:  # nothing published yet: the broker holds the (empty) history
            await self._write_marker(marker)
        elif self._marker_written_at is None:
            self._marker_written_at = time.monotonic()  # seen intact: as good as written now
        elif time.monotonic() - self._marker_written_at > MARKER_REFRESH_S:
            # Refreshed only now and then: each write could land on a broker that just restarted.
            await self._write_marker(marker)
        return False

    async def _sync_partitions(self, producer: AIOKafkaProducer, admin: AIOKafkaAdminClient) -> None:
        """Make the producer spread records over the partitions the topic has now.

        A broker that lost the topic may get it back with another partition count (created by
        a client's metadata request before the relay creates it); a producer still using the
        old count sends records to partitions the topic no longer has, which the embedded
        broker acknowledges and nobody can read.
        """
        described = await admin.describe_topics([self.topic])
        actual = {int(p["partition"]) for p in described[0]["partitions"]}
        known = set(await producer.partitions_for(self.topic))
        if known == actual:
            return
        await producer.client.force_metadata_update()
        known = set(await producer.partitions_for(self.topic))
        if known != actual:
            raise RuntimeError(
                f"the producer sees partitions {sorted(known)} of {self.topic}, the broker {sorted(actual)}"
            )
        log.warning("the topic's partitions changed; the producer follows", topic=self.topic, partitions=sorted(actual))

    async def _start_over(self, marker: AIOKafkaConsumer, *, reason: str, topic_missing: bool = False) -> None:
        """Publish everything again from the first event, and mark the broker as holding it."""
        REPUBLISHES.labels(self.service).inc()
        position = await self.position()
        log.warning(
            "the broker lost the topic; republishing every event from the store",
            service=self.service,
            topic=self.topic,
            was_at=position,
            reason=reason,
            topic_missing=topic_missing,
        )
        await self.pool.execute(
            "UPDATE relay_positions SET position = 0, updated_at = now() WHERE name = $1", self.name
        )
        self._acked = {}
        await self._write_marker(marker)

    async def _write_marker(self, marker: AIOKafkaConsumer) -> None:
        """Commit the marker, or fail within ``MARKER_COMMIT_TIMEOUT_S``.

        After the broker restarted empty, aiokafka retries a commit to the topic it no longer
        knows for as long as it takes, and only the relay's own check would create the topic
        again: the relay would stop here for good. Failing hands it back to ``keep_running``,
        which starts it afresh.
        """
        commit = marker.commit({TopicPartition(self.topic, 0): OffsetAndMetadata(0, "chengneng relay marker")})
        try:
            await asyncio.wait_for(commit, MARKER_COMMIT_TIMEOUT_S)
        except TimeoutError as exc:
            raise RuntimeError(
                f"the relay's marker on {self.topic} was not committed within {MARKER_COMMIT_TIMEOUT_S} s"
            ) from exc
        self._marker_written_at = time.monotonic()
