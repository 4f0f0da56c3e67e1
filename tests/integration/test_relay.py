"""Relay and inbox consumer against a real PostgreSQL and a real Kafka-protocol broker."""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from cloudevents.core.bindings.kafka import KafkaMessage, from_binary
from cloudevents.core.formats.json import JSONFormat
from prometheus_client import REGISTRY

from shared import kafka, store
from shared import relay as relay_module
from shared.consumer import InboxConsumer
from shared.embedded import EmbeddedBroker, start_broker
from shared.kafka import IncomingEvent
from shared.messages import Event
from shared.principal import Principal, Role
from shared.relay import Relay
from shared.sealer import Sealer
from tests.conftest import ServiceDb

ACTOR = Principal(subject="clerk", organisation="dept-sci", role=Role.DEPARTMENT, jurisdiction="510600")


class Noted(Event):
    event_type = "Noted"
    text: str


async def append(service_db: ServiceDb, stream: str, expected: int, *texts: str) -> None:
    meta = store.Metadata(
        actor=ACTOR, jurisdiction="510600", occurred_at=datetime.now(UTC), correlation_id=uuid.uuid4()
    )
    async with service_db.pool.acquire() as conn, conn.transaction():
        await store.append(conn, stream, "note", expected, [Noted(text=t) for t in texts], meta)


@contextlib.asynccontextmanager
async def running_relay(service_db: ServiceDb, bootstrap: str) -> AsyncIterator[Relay]:
    relay = Relay(
        service_db.schema,
        service_db.pool,
        service_db.app_url,
        service_db.schema,
        bootstrap,
        poll_interval_s=0.05,
        topic_check_interval_s=0.5,
    )
    # The relay publishes what the sealer has put in the log, so the sealer runs beside it.
    sealer = Sealer(
        service_db.schema,
        service_db.pool,
        service_db.app_url,
        bootstrap,
        Path(tempfile.mkdtemp(prefix="chengneng-keys-")),
        interval_s=60,
    )
    tasks = [asyncio.create_task(relay.run()), asyncio.create_task(sealer.run())]
    try:
        yield relay
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def read_topic(
    bootstrap: str, topic: str, expected: int, *, settle_s: float = 2.0, timeout_s: float = 30.0
) -> list:  # type: ignore[type-arg]
    """Read a topic from the beginning with a plain consumer (no group) until quiet."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    records = []
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        quiet_since = None
        while loop.time() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            got = [r for rs in batch.values() for r in rs]
            records.extend(got)
            if len(records) >= expected:
                quiet_since = quiet_since or loop.time()
                if got:
                    quiet_since = loop.time()
                if loop.time() - quiet_since >= settle_s:
                    break
    finally:
        await consumer.stop()
    return records


async def test_relay_publishes_every_event_once_as_cloudevents(service_db: ServiceDb, broker: EmbeddedBroker) -> None:
    for n in range(5):
        await append(service_db, f"case-{n}", 0, *(f"c{n}-e{i}" for i in range(6)))
    stored = [e for _, e in await store.read_after(service_db.pool, store.START, 1000)]
    async with running_relay(service_db, broker.bootstrap) as relay:
        await asyncio.wait_for(relay.caught_up.wait(), 30)
        records = await read_topic(broker.bootstrap, kafka.events_topic(service_db.schema), len(stored))
        assert await relay.position() == len(stored)  # the next log index to publish
    assert len(records) == len(stored) == 30
    events = [
        from_binary(KafkaMessage(headers=dict(r.headers), key=r.key, value=r.value), JSONFormat()) for r in records
    ]
    by_id = {e.get_id(): (e, r) for e, r in zip(events, records, strict=True)}
    assert set(by_id) == {str(s.event_id) for s in stored}
    for envelope in stored:
        event, record = by_id[str(envelope.event_id)]
        assert record.key == envelope.stream_id.encode()
        assert event.get_specversion() == "1.0"
        assert event.get_type() == f"org.chengneng.{service_db.schema}.Noted"
        assert event.get_source() == f"/chengneng/{service_db.schema}"
        assert event.get_subject() == envelope.stream_id
        assert event.get_time() == envelope.occurred_at
        assert event.get_data() == envelope.payload
        assert event.get_extension("jurisdiction") == "510600"
        assert event.get_extension("correlationid") == str(envelope.correlation_id)
        assert event.get_extension("streamversion") == str(envelope.stream_version)
        assert event.get_extension("eventhash") == envelope.hash.hex()
        assert dict(record.headers)["content-type"] == b"application/json"
    # Per-stream order holds on the topic.
    for n in range(5):
        texts = [e.get_data()["text"] for e in events if e.get_subject() == f"case-{n}"]
        assert texts == [f"c{n}-e{i}" for i in range(6)]


async def test_relay_republishes_from_the_store_when_the_broker_lost_the_topic(
    service_db: ServiceDb, scratch_dir: Path
) -> None:
    own = start_broker(scratch_dir / "broker")
    try:
        await append(service_db, "case", 0, "one", "two", "three")
        topic = kafka.events_topic(service_db.schema)
        async with running_relay(service_db, own.bootstrap) as relay:
            await asyncio.wait_for(relay.caught_up.wait(), 30)
            assert len(await read_topic(own.bootstrap, topic, 3, settle_s=0.5)) == 3
            await asyncio.to_thread(own.restart)  # memory storage: comes back empty
            await append(service_db, "case", 3, "four")
            records = await read_topic(own.bootstrap, topic, 4, settle_s=1.0, timeout_s=60)
        texts = [kafka.from_record(r.headers, r.key, r.value).data["text"] for r in records]
        # At least once: whatever came before, the whole history follows, in order.
        assert texts[-4:] == ["one", "two", "three", "four"], texts
    finally:
        own.stop()


async def test_a_consumer_that_receives_an_event_twice_applies_it_once(
    service_db: ServiceDb, broker: EmbeddedBroker
) -> None:
    admin = await asyncpg_connect(service_db)
    await admin.execute(f"CREATE TABLE {service_db.schema}.applied (text text NOT NULL)")
    await admin.execute(f"GRANT SELECT, INSERT ON {service_db.schema}.applied TO chengneng_{service_db.schema}")
    await admin.close()

    async def handler(conn, event: IncomingEvent) -> None:  # type: ignore[no-untyped-def]
        await conn.execute("INSERT INTO applied (text) VALUES ($1)", event.data["text"])

    await append(service_db, "dup", 0, "once")
    (envelope,) = await store.read_stream(service_db.pool, "dup")
    topic = f"chengneng.test-dup-{uuid.uuid4().hex[:8]}"
    await kafka.ensure_topics(broker.bootstrap, [topic], partitions=1)
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
    await producer.start()
    message = kafka.to_message("registry", envelope)
    for _ in range(2):  # the same event delivered twice, as after a relay retry
        await producer.send_and_wait(topic, value=message.value, key=message.key, headers=message.headers)
    await producer.stop()

    consumer = InboxConsumer(
        f"test-{uuid.uuid4().hex[:6]}", [topic], service_db.pool, broker.bootstrap, handler, session_timeout_ms=6000
    )
    task = asyncio.create_task(consumer.run())
    try:
        for _ in range(200):
            if await service_db.pool.fetchval("SELECT count(*) FROM inbox") >= 1:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.5)  # give the duplicate time to arrive and be ignored
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert await service_db.pool.fetchval("SELECT count(*) FROM applied") == 1
    assert await service_db.pool.fetchval("SELECT count(*) FROM inbox") == 1
    # Applying it directly again is also a no-op.
    assert await consumer.apply(kafka.from_record(message.headers, message.key, message.value)) is False


async def asyncpg_connect(service_db: ServiceDb):  # type: ignore[no-untyped-def]
    from shared import db

    return await db.connect(service_db.admin_url, service_db.schema)


@pytest.mark.parametrize(
    ("headers", "value", "reason"),
    [
        ([("ce_specversion", b"1.0")], b"{not json", "CloudEvent"),
        ([], b"{}", "attribute"),
    ],
)
async def test_a_malformed_record_goes_to_the_dead_letters_with_its_reason(
    service_db: ServiceDb, broker: EmbeddedBroker, headers: list[tuple[str, bytes]], value: bytes, reason: str
) -> None:
    topic = f"chengneng.test-poison-{uuid.uuid4().hex[:8]}"
    await kafka.ensure_topics(broker.bootstrap, [topic, kafka.DEADLETTER_TOPIC], partitions=1)
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
    await producer.start()
    await producer.send_and_wait(topic, value=value, key=b"k", headers=headers)
    await producer.stop()

    async def handler(conn, event):  # type: ignore[no-untyped-def]
        raise AssertionError("a malformed record must not reach the handler")

    consumer = InboxConsumer(
        f"poison-{uuid.uuid4().hex[:6]}", [topic], service_db.pool, broker.bootstrap, handler, session_timeout_ms=6000
    )
    task = asyncio.create_task(consumer.run())
    try:
        dead = await read_until(
            broker.bootstrap,
            kafka.DEADLETTER_TOPIC,
            lambda r: dict(r.headers).get("deadletter_topic") == topic.encode(),
        )
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert reason.encode() in dict(dead.headers)["deadletter_reason"]
    assert dead.value == value


async def read_until(bootstrap: str, topic: str, match, timeout_s: float = 30):  # type: ignore[no-untyped-def]
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while loop.time() < deadline:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                for r in records:
                    if match(r):
                        return r
        raise AssertionError(f"no matching record on {topic}")
    finally:
        await consumer.stop()


async def test_a_consumer_creates_the_dead_letter_topic_before_any_poison_arrives(
    service_db: ServiceDb, scratch_dir: Path
) -> None:
    """On a new broker, the first poison record must not wait for ten consumers to race to
    create the dead-letter topic: each consumer creates it when it starts."""
    broker = start_broker(scratch_dir / "broker")
    try:
        assert kafka.DEADLETTER_TOPIC not in await kafka.existing_topics(broker.bootstrap)

        async def handler(conn, event):  # type: ignore[no-untyped-def]
            raise AssertionError("nothing is sent to this topic")

        topic = f"chengneng.test-quiet-{uuid.uuid4().hex[:8]}"
        consumer = InboxConsumer("quiet", [topic], service_db.pool, broker.bootstrap, handler, session_timeout_ms=6000)
        task = asyncio.create_task(consumer.run())
        try:
            for _ in range(300):
                if kafka.DEADLETTER_TOPIC in await kafka.existing_topics(broker.bootstrap):
                    break
                await asyncio.sleep(0.1)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        assert {topic, kafka.DEADLETTER_TOPIC} <= await kafka.existing_topics(broker.bootstrap)
    finally:
        broker.stop()


async def test_a_marker_commit_after_the_broker_restarted_empty_fails_instead_of_holding_the_relay(
    service_db: ServiceDb, scratch_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """aiokafka retries a commit to a topic the restarted broker no longer knows, forever."""
    monkeypatch.setattr(relay_module, "MARKER_COMMIT_TIMEOUT_S", 2.0)
    own = start_broker(scratch_dir / "broker")
    relay = Relay(service_db.schema, service_db.pool, service_db.app_url, service_db.schema, own.bootstrap)
    marker = AIOKafkaConsumer(
        bootstrap_servers=own.bootstrap, group_id=f"chengneng.relay.{service_db.schema}", enable_auto_commit=False
    )
    try:
        async with kafka.admin_client(own.bootstrap) as admin:
            await kafka.ensure_topics(admin, [relay.topic], partitions=1, replication=1)
        await marker.start()
        marker.assign([TopicPartition(relay.topic, 0)])  # as the relay's broker check does
        await relay._write_marker(marker)
        await asyncio.to_thread(own.restart)  # memory storage: comes back empty
        with pytest.raises(RuntimeError, match=r"marker on \S+ was not committed within 2\.0 s"):
            await asyncio.wait_for(relay._write_marker(marker), 30)
    finally:
        with contextlib.suppress(Exception):
            await marker.stop()
        own.stop()


async def test_a_consumer_past_the_end_of_a_topic_recreated_empty_notices_without_a_record_and_starts_over(
    service_db: ServiceDb, scratch_dir: Path
) -> None:
    """After the broker restarted empty, a client fetching at its old positions gets nothing
    (they lie beyond the end of the new topic), so no fetched record reveals the loss; the
    committed offsets, checked while idle, do, and the events published after are applied."""
    own = start_broker(scratch_dir / "broker")
    topic = f"chengneng.test-gone-{uuid.uuid4().hex[:8]}"
    applied: list[str] = []

    async def handler(conn, event: IncomingEvent) -> None:  # type: ignore[no-untyped-def]
        applied.append(event.data["text"])

    async def publish(*texts: str, stream: str) -> None:
        await append(service_db, stream, 0, *texts)
        producer = AIOKafkaProducer(bootstrap_servers=own.bootstrap, acks="all")
        await producer.start()
        try:
            for envelope in await store.read_stream(service_db.pool, stream):
                message = kafka.to_message("registry", envelope)
                await producer.send_and_wait(topic, value=message.value, key=message.key, headers=message.headers)
        finally:
            await producer.stop()

    async def until(condition: Any, seconds: float) -> None:
        for _ in range(int(seconds * 10)):
            if condition():
                return
            await asyncio.sleep(0.1)
        raise AssertionError(f"not within {seconds} s; applied: {applied}")

    name = f"test-{uuid.uuid4().hex[:6]}"
    consumer = InboxConsumer(name, [topic], service_db.pool, own.bootstrap, handler, session_timeout_ms=6000)
    task = asyncio.create_task(consumer.run())
    try:
        await kafka.ensure_topics(own.bootstrap, [topic], partitions=1)
        await publish("一", "二", "三", "四", stream="before")
        await until(lambda: len(applied) == 4, 60)
        await asyncio.sleep(1.0)  # its offsets committed
        await asyncio.to_thread(own.restart)  # memory storage: comes back empty
        await kafka.ensure_topics(own.bootstrap, [topic], partitions=1)
        await until(
            lambda: (REGISTRY.get_sample_value("chengneng_consumer_broker_resets_total", {"consumer": name}) or 0) >= 1,
            30,
        )
        await publish("五", stream="after")  # offset 0 of the new topic: behind the old position
        await until(lambda: applied[-1:] == ["五"], 60)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        own.stop()
