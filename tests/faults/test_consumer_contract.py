"""The inbox consumer on a real PostgreSQL: a database outage is never the event's failure,
the contract with the producer is checked (and old versions upcast) before the handler,
each stream is applied in order, and what one fetch returns is applied in one transaction
when nothing in it needs the careful way."""

from __future__ import annotations

import contextlib
import json
import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar

import asyncpg
import pytest
from aiokafka import ConsumerRecord
from prometheus_client import REGISTRY

from shared import db, kafka, store
from shared.commands import EventStore
from shared.consumer import HANDLER_ATTEMPTS, TOGETHER, HeldRecord, InboxConsumer, contract_violation
from shared.envelope import Envelope
from shared.kafka import IncomingEvent
from shared.messages import Command, Event, EventRegistry
from shared.principal import Principal, Role
from tests.conftest import ServiceDb, recording_aggregate

ACTOR = Principal(subject="clerk", organisation="dept-sci", role=Role.DEPARTMENT, jurisdiction="510600")


class Noted(Event):
    event_type: ClassVar[str] = "Noted"
    schema_version: ClassVar[int] = 2
    text: str
    language: str


NOTES = EventRegistry(Noted)


@NOTES.upcaster("Noted", 1)
def _v1_to_v2(payload: dict[str, Any]) -> dict[str, Any]:
    return {**payload, "language": "zh"}


def record(  # type: ignore[type-arg]
    payload: dict[str, Any],
    *,
    version: int = 2,
    event_type: str = "Noted",
    stream_version: int = 1,
    stream_id: str = "note-1",
) -> ConsumerRecord:
    envelope = Envelope(
        stream_id=stream_id,
        stream_type="note",
        stream_version=stream_version,
        event_id=uuid.uuid4(),
        event_type=event_type,
        schema_version=version,
        occurred_at=datetime.now(UTC),
        actor=ACTOR,
        jurisdiction="510600",
        correlation_id=uuid.uuid4(),
        causation_id=None,
        payload=payload,
        prev_hash=bytes(32),
        hash=bytes(32),
        position=1,
    )
    message = kafka.to_message("notes", envelope)
    return ConsumerRecord(
        "chengneng.notes.events", 0, 7, 0, 0, message.key, message.value, None, 0, 0, tuple(message.headers)
    )


class Recorder:
    """A consumer whose dead letters are noted instead of sent (the inbox records them as usual)."""

    def __init__(self, service_db: ServiceDb, handler: Any, *, together: int = TOGETHER) -> None:
        self.consumer = InboxConsumer(
            f"c-{uuid.uuid4().hex[:6]}",
            ["chengneng.notes.events"],
            service_db.pool,
            "unused:9092",
            handler,
            sources={"notes": NOTES},
            together=together,
        )
        self.dead: list[str] = []

        async def send(record: Any, producer: Any, reason: str) -> None:
            self.dead.append(reason)

        self.consumer._send_deadletter = send  # type: ignore[method-assign]

    async def handle(self, r: ConsumerRecord) -> None:  # type: ignore[type-arg]
        await self.consumer._handle(r, producer=None)  # type: ignore[arg-type]

    async def handle_batch(self, records: list[ConsumerRecord]) -> None:  # type: ignore[type-arg]
        """As the consumer handles what one fetch returned: held-back events first."""
        await self.consumer._release_ready(producer=None)  # type: ignore[arg-type]
        await self.consumer._handle_batch(records, producer=None)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "outage",
    [
        asyncpg.CannotConnectNowError("the database system is starting up"),
        asyncpg.exceptions.AdminShutdownError("terminating connection due to administrator command"),
        asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
        ConnectionRefusedError(111, "Connection refused"),
    ],
    ids=lambda e: type(e).__name__,
)
async def test_a_database_outage_is_waited_out_and_never_dead_letters_a_good_event(
    service_db: ServiceDb, outage: Exception, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("shared.consumer.asyncio.sleep", _no_sleep)
    calls: list[IncomingEvent] = []

    async def handler(conn: Any, event: IncomingEvent) -> None:
        calls.append(event)
        if len(calls) <= 8:  # more failures than a failing handler is allowed
            raise outage

    recorder = Recorder(service_db, handler)
    r = record({"text": "once", "language": "en"})
    await recorder.handle(r)
    assert recorder.dead == []
    assert len(calls) == 9
    outcome = await service_db.pool.fetchval("SELECT outcome FROM inbox WHERE event_id = $1", calls[0].event_id)
    assert outcome == "applied"


async def test_a_handler_that_keeps_failing_is_dead_lettered_with_its_reason(
    service_db: ServiceDb, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("shared.consumer.asyncio.sleep", _no_sleep)

    async def handler(conn: Any, event: IncomingEvent) -> None:
        raise ValueError("no such function")

    recorder = Recorder(service_db, handler)
    await recorder.handle(record({"text": "x", "language": "en"}))
    assert len(recorder.dead) == 1 and "no such function" in recorder.dead[0]


async def test_an_older_version_reaches_the_handler_upcast(service_db: ServiceDb) -> None:
    seen: list[IncomingEvent] = []

    async def handler(conn: Any, event: IncomingEvent) -> None:
        seen.append(event)

    recorder = Recorder(service_db, handler)
    await recorder.handle(record({"text": "旧"}, version=1))
    assert recorder.dead == []
    assert seen[0].data == {"text": "旧", "language": "zh"} and seen[0].schema_version == 2


def test_the_contract_names_what_is_wrong() -> None:
    def check(r: ConsumerRecord) -> str | None:  # type: ignore[type-arg]
        return contract_violation({"notes": NOTES}, kafka.from_record(r.headers, r.key, r.value))[0]

    assert check(record({"text": "a", "language": "en"})) is None
    assert "unknown event type" in (check(record({}, event_type="Erased")) or "")
    assert "unknown schema version 3" in (check(record({"text": "a", "language": "en"}, version=3)) or "")
    assert "does not match its schema" in (check(record({"text": "a"})) or "")
    assert "does not match its schema" in (check(record({"text": "a", "language": "en", "extra": 1})) or "")
    assert "unknown source" in (contract_violation({"other": NOTES}, _incoming())[0] or "")


def _incoming() -> IncomingEvent:
    r = record({"text": "a", "language": "en"})
    return kafka.from_record(r.headers, r.key, r.value)


async def _no_sleep(seconds: float) -> None:
    return None


def stream(*texts: str, stream_id: str = "note-1") -> list[ConsumerRecord]:  # type: ignore[type-arg]
    """One record per text, versions 1, 2, ... of the same stream."""
    return [
        record({"text": t, "language": "zh"}, stream_version=v, stream_id=stream_id)
        for v, t in enumerate(texts, start=1)
    ]


def noting() -> tuple[list[str], Any]:
    """A handler that notes the text of each event it is given, and the list it notes them in."""
    seen: list[str] = []

    async def handler(conn: Any, event: IncomingEvent) -> None:
        seen.append(event.data["text"])

    return seen, handler


async def inbox_rows(service_db: ServiceDb) -> list[tuple[Any, ...]]:
    rows = await service_db.pool.fetch(
        "SELECT stream_version, outcome, held_record IS NOT NULL FROM inbox ORDER BY stream_version"
    )
    return [tuple(r) for r in rows]


async def test_an_early_event_is_held_back_and_applied_right_after_its_predecessor(service_db: ServiceDb) -> None:
    """After a broker lost its state, a record can reach the new topic before the republished
    history: it is held back (in the inbox, with its record), not applied ahead of its stream,
    and applied as soon as its predecessor is, whether or not its copy comes again."""
    seen, handler = noting()
    recorder = Recorder(service_db, handler)
    first, second, third = stream("一", "二", "三")
    await recorder.handle(third)  # early: versions 1 and 2 have not been seen
    await recorder.handle(second)
    assert seen == []
    assert await inbox_rows(service_db) == [(2, "held_back", True), (3, "held_back", True)]
    await recorder.handle(first)  # the predecessor releases the whole chain, in order
    assert seen == ["一", "二", "三"] and recorder.dead == []
    assert await inbox_rows(service_db) == [(1, "applied", False), (2, "applied", False), (3, "applied", False)]
    for r in (first, second, third):  # the republished history changes nothing
        await recorder.handle(r)
    assert seen == ["一", "二", "三"]


async def test_a_held_back_event_delivered_again_after_its_predecessor_is_applied_once(
    service_db: ServiceDb,
) -> None:
    seen, handler = noting()
    recorder = Recorder(service_db, handler)
    first, second = stream("一", "二")
    await recorder.handle(second)
    for r in (first, second, first, second):
        await recorder.handle(r)
    assert seen == ["一", "二"] and recorder.dead == []
    assert await inbox_rows(service_db) == [(1, "applied", False), (2, "applied", False)]


async def test_a_held_back_event_whose_handler_fails_is_dead_lettered_when_released(
    service_db: ServiceDb, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Released events go the way fetched ones do: a handler that keeps failing dead-letters it."""
    monkeypatch.setattr("shared.consumer.asyncio.sleep", _no_sleep)

    async def handler(conn: Any, event: IncomingEvent) -> None:
        if event.data["text"] == "坏":
            raise RuntimeError("cannot apply")

    recorder = Recorder(service_db, handler)
    first, second = stream("好", "坏")
    await recorder.handle(second)
    await recorder.handle(first)
    assert len(recorder.dead) == 1 and "cannot apply" in recorder.dead[0]
    assert await inbox_rows(service_db) == [(1, "applied", False), (2, "deadlettered", False)]


async def test_held_record_keeps_every_part_of_the_kafka_record() -> None:
    original = stream("一")[0]
    held = HeldRecord.from_json(json.loads(json.dumps(HeldRecord.of(original).as_json())))
    assert (held.topic, held.partition, held.offset, held.key, held.value) == (
        original.topic,
        original.partition,
        original.offset,
        original.key,
        original.value,
    )
    assert held.headers == tuple(original.headers)
    assert kafka.from_record(held.headers, held.key, held.value) == kafka.from_record(
        original.headers, original.key, original.value
    )


async def test_holding_back_and_releasing_wait_out_a_database_outage(
    service_db: ServiceDb, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The inbox's own reads and writes around an event (held back? a successor?) wait for the
    database like the event itself: an outage never restarts the consumer or loses a record."""
    monkeypatch.setattr("shared.consumer.asyncio.sleep", _no_sleep)
    seen, handler = noting()
    recorder = Recorder(service_db, handler)
    consumer = recorder.consumer
    outages = {"_hold_back": 1, "_held_successor": 2}
    for name in list(outages):
        real = getattr(consumer, name)

        async def flaky(*args: Any, _real: Any = real, _name: str = name) -> Any:
            if outages[_name]:
                outages[_name] -= 1
                raise ConnectionRefusedError(111, "Connection refused")
            return await _real(*args)

        monkeypatch.setattr(consumer, name, flaky)
    first, second = stream("一", "二")
    await recorder.handle(second)  # held back after one refused connection
    await recorder.handle(first)  # its successor found after two
    assert seen == ["一", "二"] and recorder.dead == []
    assert outages == {"_hold_back": 0, "_held_successor": 0}
    assert await inbox_rows(service_db) == [(1, "applied", False), (2, "applied", False)]


async def test_a_held_back_event_whose_predecessor_was_applied_elsewhere_is_released_before_the_next_batch(
    service_db: ServiceDb,
) -> None:
    """In a rebalance, another instance can apply the predecessor after this one held the event
    back, and release nothing: the sweep before each batch applies such an event."""
    seen, handler = noting()
    recorder = Recorder(service_db, handler)
    first, second, third = stream("一", "二", "三")
    await recorder.handle(second)  # held back here ...
    await recorder.handle(third)
    await recorder.consumer._release_ready(producer=None)  # type: ignore[arg-type]
    held_now = {"consumer": recorder.consumer.name}
    assert REGISTRY.get_sample_value("chengneng_consumer_held_back", held_now) == 2
    other = Recorder(service_db, handler)
    other.consumer.name = recorder.consumer.name  # ... while another instance of the consumer
    await other.consumer.apply(kafka.from_record(first.headers, first.key, first.value))  # applies version 1
    assert seen == ["一"]
    await recorder.consumer._release_ready(producer=None)  # type: ignore[arg-type]
    assert seen == ["一", "二", "三"] and recorder.dead == []
    assert recorder.consumer._holding is False
    assert REGISTRY.get_sample_value("chengneng_consumer_held_back", held_now) == 0
    assert await inbox_rows(service_db) == [(1, "applied", False), (2, "applied", False), (3, "applied", False)]


# --- a fetched batch, applied together ---------------------------------------------------


async def noted_table(service_db: ServiceDb) -> None:
    """A table for handlers to write to, so a test sees what a transaction kept."""
    conn = await asyncpg.connect(service_db.admin_url)
    try:
        await conn.execute(
            f"""CREATE TABLE {service_db.schema}.noted (text text PRIMARY KEY);
                GRANT SELECT, INSERT ON {service_db.schema}.noted TO {db.role_name(service_db.schema)}"""
        )
    finally:
        await conn.close()


async def note(conn: Any, event: IncomingEvent) -> None:
    await conn.execute("INSERT INTO noted (text) VALUES ($1)", event.data["text"])


async def noted(service_db: ServiceDb) -> set[str]:
    return {r[0] for r in await service_db.pool.fetch("SELECT text FROM noted")}


async def transactions(service_db: ServiceDb) -> int:
    """How many transactions wrote the inbox rows of applied events."""
    return int(await service_db.pool.fetchval("SELECT count(DISTINCT xmin::text) FROM inbox WHERE outcome = 'applied'"))


def duplicates(recorder: Recorder) -> float:
    return REGISTRY.get_sample_value("chengneng_consumer_duplicates_total", {"consumer": recorder.consumer.name}) or 0


def batches(recorder: Recorder, how: str) -> float:
    return (
        REGISTRY.get_sample_value("chengneng_consumer_batches_total", {"consumer": recorder.consumer.name, "how": how})
        or 0
    )


def interleaved() -> list[ConsumerRecord]:  # type: ignore[type-arg]
    """Three versions each of two streams, as two partitions' records come in one fetch."""
    a, b = stream("甲1", "甲2", "甲3", stream_id="note-a"), stream("乙1", "乙2", "乙3", stream_id="note-b")
    return [a[0], a[1], b[0], a[2], b[1], b[2]]


async def test_a_plain_batch_is_applied_in_one_transaction_and_each_stream_in_order(service_db: ServiceDb) -> None:
    seen: list[str] = []

    async def handler(conn: Any, event: IncomingEvent) -> None:
        seen.append(event.data["text"])
        await note(conn, event)

    await noted_table(service_db)
    recorder = Recorder(service_db, handler)
    records = interleaved()
    await recorder.handle_batch(records)
    assert seen == ["甲1", "甲2", "乙1", "甲3", "乙2", "乙3"] and recorder.dead == []
    assert await transactions(service_db) == 1
    assert (batches(recorder, "together"), batches(recorder, "one_by_one")) == (1, 0)
    await recorder.handle_batch(records)  # delivered again (a republished history): nothing changes
    assert len(seen) == 6 and await transactions(service_db) == 1
    assert (batches(recorder, "together"), batches(recorder, "one_by_one")) == (2, 0)
    assert duplicates(recorder) == 6


async def test_a_batch_of_redeliveries_and_new_events_applies_only_the_new_ones_together(
    service_db: ServiceDb,
) -> None:
    seen, handler = noting()
    recorder = Recorder(service_db, handler)
    records = interleaved()
    await recorder.handle_batch(records[:3])
    await recorder.handle_batch(records)  # the first three again, then three new
    assert seen == ["甲1", "甲2", "乙1", "甲3", "乙2", "乙3"]
    assert (batches(recorder, "together"), batches(recorder, "one_by_one")) == (2, 0)
    assert duplicates(recorder) == 3 and await transactions(service_db) == 2


async def test_a_batch_continuing_streams_applied_before_is_applied_together(service_db: ServiceDb) -> None:
    seen, handler = noting()
    recorder = Recorder(service_db, handler)
    first = interleaved()
    await recorder.handle_batch(first[:3])  # 甲1 甲2 乙1
    await recorder.handle_batch(first[3:])  # 甲3 乙2 乙3: their predecessors are in the inbox
    assert seen == ["甲1", "甲2", "乙1", "甲3", "乙2", "乙3"]
    assert (batches(recorder, "together"), batches(recorder, "one_by_one")) == (2, 0)
    assert await transactions(service_db) == 2


async def test_a_long_fetch_is_applied_in_transactions_of_at_most_together_events(service_db: ServiceDb) -> None:
    seen, handler = noting()
    recorder = Recorder(service_db, handler)
    count = 2 * TOGETHER + 3
    await recorder.handle_batch(stream(*(str(n) for n in range(count))))
    assert seen == [str(n) for n in range(count)]
    assert await transactions(service_db) == 3


async def test_a_consumer_told_to_apply_one_at_a_time_gives_each_event_its_own_transaction(
    service_db: ServiceDb,
) -> None:
    seen, handler = noting()
    recorder = Recorder(service_db, handler, together=1)  # as the catch-up bench compares
    await recorder.handle_batch(interleaved())
    assert seen == ["甲1", "甲2", "乙1", "甲3", "乙2", "乙3"] and recorder.dead == []
    assert await transactions(service_db) == 6
    assert (batches(recorder, "together"), batches(recorder, "one_by_one")) == (0, 0)


async def test_an_event_ahead_of_its_stream_in_a_batch_is_held_back_then_applied_in_order(
    service_db: ServiceDb,
) -> None:
    seen, handler = noting()
    recorder = Recorder(service_db, handler)
    first, second = stream("一", "二")
    other = stream("三", stream_id="note-c")[0]
    await recorder.handle_batch([second, other, first])
    assert seen == ["三", "一", "二"] and recorder.dead == []
    assert batches(recorder, "one_by_one") == 1 and batches(recorder, "together") == 0
    assert await inbox_rows(service_db) == [(1, "applied", False), (1, "applied", False), (2, "applied", False)]


async def test_a_handler_failure_in_a_batch_rolls_the_batch_back_and_dead_letters_only_its_event(
    service_db: ServiceDb, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("shared.consumer.asyncio.sleep", _no_sleep)
    calls: list[str] = []

    async def handler(conn: Any, event: IncomingEvent) -> None:
        calls.append(event.data["text"])
        await note(conn, event)
        if event.data["text"] == "坏":
            raise RuntimeError("cannot apply")

    await noted_table(service_db)
    recorder = Recorder(service_db, handler)
    good, bad, after = stream("好", "坏", "后")
    await recorder.handle_batch([good, bad, after])
    # The batch ran 好 and 坏 and was rolled back; then one by one: 好 once, 坏 until it is
    # dead-lettered (its writes rolled back each time), and 后, whose predecessor was dead-lettered.
    assert calls == ["好", "坏", "好", *["坏"] * HANDLER_ATTEMPTS, "后"]
    assert len(recorder.dead) == 1 and "cannot apply" in recorder.dead[0]
    assert await noted(service_db) == {"好", "后"}
    assert await inbox_rows(service_db) == [(1, "applied", False), (2, "deadlettered", False), (3, "applied", False)]
    calls.clear()
    await recorder.handle_batch([good, bad, after])  # a dead-lettered event delivered again is tried again
    assert calls == ["坏"] * HANDLER_ATTEMPTS and len(recorder.dead) == 2
    assert batches(recorder, "one_by_one") == 2


async def test_a_malformed_record_in_a_batch_is_dead_lettered_and_the_rest_applied(service_db: ServiceDb) -> None:
    seen, handler = noting()
    recorder = Recorder(service_db, handler)
    first, second = stream("一", "二")
    broken = record({"text": "x"})  # no language: breaks the schema
    await recorder.handle_batch([first, broken, second])
    assert seen == ["一", "二"]
    assert len(recorder.dead) == 1 and "does not match its schema" in recorder.dead[0]
    assert batches(recorder, "one_by_one") == 1


async def test_a_record_fetched_twice_in_one_batch_is_applied_once(service_db: ServiceDb) -> None:
    seen, handler = noting()
    recorder = Recorder(service_db, handler)
    first, second = stream("一", "二")
    await recorder.handle_batch([first, second, second])
    assert seen == ["一", "二"] and recorder.dead == []


async def test_a_batch_another_instance_applied_part_of_meanwhile_keeps_nothing_twice(service_db: ServiceDb) -> None:
    """Two instances of a consumer during a rebalance: the other one commits events of this
    batch while this batch runs. The batch is rolled back and the rest applied one by one."""
    await noted_table(service_db)
    first, second, third = stream("一", "二", "三")
    elsewhere: list[str] = []

    async def note_elsewhere(conn: Any, event: IncomingEvent) -> None:
        elsewhere.append(event.data["text"])

    other = Recorder(service_db, note_elsewhere)
    calls: list[str] = []

    async def racing(conn: Any, event: IncomingEvent) -> None:
        calls.append(event.data["text"])
        if event.data["text"] == "二" and not elsewhere:  # the other instance gets there first
            await other.handle(first)
            await other.handle(second)
        await note(conn, event)

    recorder = Recorder(service_db, racing)
    other.consumer.name = recorder.consumer.name
    await recorder.handle_batch([first, second, third])
    assert calls == ["一", "二", "三", "三"]  # the batch, then one by one only 三 was new
    assert elsewhere == ["一", "二"]
    assert await noted(service_db) == {"三"}  # the batch's own writes were rolled back
    assert await inbox_rows(service_db) == [(1, "applied", False), (2, "applied", False), (3, "applied", False)]
    assert batches(recorder, "one_by_one") == 1


async def test_a_database_outage_during_a_batch_is_waited_out_and_the_batch_applied_together(
    service_db: ServiceDb, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("shared.consumer.asyncio.sleep", _no_sleep)
    monkeypatch.setattr("shared.resilience.asyncio.sleep", _no_sleep)
    calls: list[str] = []

    async def handler(conn: Any, event: IncomingEvent) -> None:
        calls.append(event.data["text"])
        if len(calls) == 2:
            raise ConnectionRefusedError(111, "Connection refused")

    recorder = Recorder(service_db, handler)
    await recorder.handle_batch(stream("一", "二", "三"))
    assert calls == ["一", "二", "一", "二", "三"] and recorder.dead == []
    assert batches(recorder, "together") == 1 and await transactions(service_db) == 1


# --- reactions in a batch: no savepoint of their own ------------------------------------------


class Echoed(Event):
    event_type: ClassVar[str] = "Echoed"
    text: str


class Echo(Command):
    text: str


ECHOES = recording_aggregate("echo", lambda command: [Echoed(text=command.text)])


def echoing(service_db: ServiceDb, *, refuse: str = "") -> Any:
    """A handler that reacts to each note by appending an echo of it to a stream of its own,
    as a policy does; the projection refuses the echo of ``refuse`` after it was appended, and
    the handler carries on as if nothing happened."""

    async def project(conn: Any, envelope: Envelope, event: Event) -> None:
        if isinstance(event, Echoed) and event.text == refuse:
            raise RuntimeError("the projection refuses it")

    events = EventStore(service_db.pool, EventRegistry(Echoed), project)

    async def handler(conn: Any, event: IncomingEvent) -> None:
        text = event.data["text"]
        command = Echo(issued_by=ACTOR, issued_at=datetime.now(UTC), text=text)
        with contextlib.suppress(RuntimeError):
            await events.execute_within(
                conn, ECHOES, f"echo-{text}", command, correlation_id=event.correlation_id, causation_id=event.event_id
            )

    return handler


async def test_reactions_in_a_batch_write_in_the_batch_transaction_itself(service_db: ServiceDb) -> None:
    """A savepoint per reaction costs two round trips; in a batch the batch's rollback does its job.
    Rows written in a savepoint carry its own transaction id (xmin), so the ids tell."""
    recorder = Recorder(service_db, echoing(service_db))
    await recorder.handle_batch(stream("一", "二", "三"))
    assert batches(recorder, "together") == 1
    rows = await service_db.pool.fetch("SELECT xmin::text FROM events UNION ALL SELECT xmin::text FROM inbox")
    assert len(rows) == 6 and len({r[0] for r in rows}) == 1

    one_by_one = Recorder(service_db, echoing(service_db), together=1)
    await one_by_one.handle_batch(stream("四", "五", stream_id="note-2"))
    [(inbox_xids, event_xids)] = await service_db.pool.fetch(
        """SELECT (SELECT array_agg(xmin::text) FROM inbox WHERE consumer = $1),
                  (SELECT array_agg(xmin::text) FROM events WHERE stream_id IN ('echo-四', 'echo-五'))""",
        one_by_one.consumer.name,
    )
    assert len(event_xids) == 2 and not set(event_xids) & set(inbox_xids)  # each echo in its savepoint


async def test_a_failed_reaction_its_handler_carries_on_from_rolls_the_batch_back(service_db: ServiceDb) -> None:
    """Without a savepoint a failed reaction's append would stay in the batch; the batch is
    rolled back and applied one by one, where the savepoint takes the refused echo away."""
    recorder = Recorder(service_db, echoing(service_db, refuse="坏"))
    await recorder.handle_batch(stream("好", "坏", "后"))
    assert (batches(recorder, "together"), batches(recorder, "one_by_one")) == (0, 1)
    echoes = {r[0] for r in await service_db.pool.fetch("SELECT stream_id FROM events")}
    assert echoes == {"echo-好", "echo-后"} and recorder.dead == []
    assert await inbox_rows(service_db) == [(1, "applied", False), (2, "applied", False), (3, "applied", False)]


async def test_each_commit_of_a_consumer_wakes_the_sealers_of_its_process(service_db: ServiceDb) -> None:
    """A policy's reaction is an event on its way out; the sealer need not wait for its poll."""
    recorder = Recorder(service_db, echoing(service_db))
    wakeup = db.Wakeup()
    with store.woken_by_commits(wakeup):
        await recorder.handle_batch(stream("一", "二"))  # together
        assert wakeup.pending()
        await wakeup.wait(0)
        alone = stream("三", stream_id="note-2")[0]
        await recorder.handle(alone)
        assert wakeup.pending()
        await wakeup.wait(0)
        await recorder.handle(alone)  # applied before: nothing new to seal
        assert not wakeup.pending()
