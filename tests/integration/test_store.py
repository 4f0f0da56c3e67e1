"""The event store on a real PostgreSQL: concurrency, append-only, tailing, hash chains."""

from __future__ import annotations

import asyncio
import gc
import hashlib
import itertools
import json
import uuid
import weakref
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import asyncpg
import pytest

from shared import db, store
from shared.commands import EventStore, Idempotency
from shared.envelope import GENESIS_HASH, Recorded
from shared.errors import ConcurrencyConflict, InvalidInput
from shared.messages import Command, Event, EventRegistry
from shared.principal import Principal, Role
from tests.conftest import ServiceDb, recording_aggregate

ACTOR = Principal(subject="clerk", organisation="deyang-cast", role=Role.ASSOCIATION, jurisdiction="510600")


class Noted(Event):
    event_type = "Noted"
    text: str


class Note(Command):
    text: str


def meta() -> store.Metadata:
    return store.Metadata(
        actor=ACTOR, jurisdiction="510600", occurred_at=datetime.now(UTC), correlation_id=uuid.uuid4()
    )


async def append_in_tx(pool: asyncpg.Pool, stream: str, expected: int, *texts: str) -> list[int | None]:
    async with pool.acquire() as conn, conn.transaction():
        envelopes = await store.append(conn, stream, "note", expected, [Noted(text=t) for t in texts], meta())
    return [e.position for e in envelopes]


async def test_two_concurrent_appends_at_the_same_version_exactly_one_succeeds(service_db: ServiceDb) -> None:
    for round_ in range(10):
        stream = f"race-{round_}"
        await append_in_tx(service_db.pool, stream, 0, "first")
        results = await asyncio.gather(
            append_in_tx(service_db.pool, stream, 1, "a"),
            append_in_tx(service_db.pool, stream, 1, "b"),
            return_exceptions=True,
        )
        winners = [r for r in results if not isinstance(r, BaseException)]
        losers = [r for r in results if isinstance(r, BaseException)]
        assert len(winners) == 1, results
        assert len(losers) == 1 and isinstance(losers[0], ConcurrencyConflict), results
        assert losers[0].code == "wrong_expected_version"
        events = await store.read_stream(service_db.pool, stream)
        assert [e.stream_version for e in events] == [1, 2]


async def test_append_at_a_stale_version_is_refused_and_writes_nothing(service_db: ServiceDb) -> None:
    await append_in_tx(service_db.pool, "s", 0, "one", "two")
    with pytest.raises(ConcurrencyConflict):
        await append_in_tx(service_db.pool, "s", 1, "late")
    assert [e.payload["text"] for e in await store.read_stream(service_db.pool, "s")] == ["one", "two"]


async def test_an_append_larger_than_a_chunk_is_one_chain_with_every_position(service_db: ServiceDb) -> None:
    """A large append goes in several INSERTs, hashed while the previous one is inserted: one chain all the same."""
    count = 2 * store.APPEND_CHUNK + 17
    await append_in_tx(service_db.pool, "big", 0, "before")
    async with service_db.pool.acquire() as conn, conn.transaction():
        head = await store.stream_head(conn, "big")
        returned = await store.append(conn, "big", "note", 1, [Noted(text=f"n{i}") for i in range(count)], meta())
    stored = await store.read_stream(service_db.pool, "big")
    assert [e.stream_version for e in stored] == list(range(1, count + 2))
    assert returned == stored[1:]  # positions and times as the database gave them, in order
    assert returned[0].prev_hash == head[1]
    assert all(later.prev_hash == earlier.hash for earlier, later in itertools.pairwise(stored))
    assert all(e.hash_is_valid() for e in stored)
    assert [e.payload["text"] for e in stored[1:]] == [f"n{i}" for i in range(count)]


@pytest.mark.parametrize("count", [1, 3], ids=["one event (a row of values)", "several (arrays)"])
async def test_what_an_append_returns_is_what_the_store_holds(service_db: ServiceDb, count: int) -> None:
    """One event goes in as a row of values, several as arrays: every field lands where it belongs either way."""
    cause = uuid.uuid4()
    written = store.Metadata(
        actor=Principal(subject="s-1", organisation="org-2", role=Role.DEPARTMENT, jurisdiction="510681"),
        jurisdiction="510600",
        occurred_at=datetime(2026, 3, 4, 5, 6, 7, 890123, tzinfo=UTC),
        correlation_id=uuid.uuid4(),
        causation_id=cause,
    )
    ids = [uuid.uuid4() for _ in range(count)]
    async with service_db.pool.acquire() as conn, conn.transaction():
        returned = await store.append(
            conn, "fields", "note", 0, [Noted(text=f"第{i}") for i in range(count)], written, event_ids=ids
        )
    stored = await store.read_stream(service_db.pool, "fields")
    assert returned == stored
    for version, (envelope, event_id) in enumerate(zip(stored, ids, strict=True), start=1):
        assert (envelope.stream_id, envelope.stream_type, envelope.stream_version) == ("fields", "note", version)
        assert (envelope.event_id, envelope.event_type, envelope.schema_version) == (event_id, "Noted", 1)
        assert envelope.occurred_at == written.occurred_at and envelope.actor == written.actor
        assert (envelope.jurisdiction, envelope.correlation_id, envelope.causation_id) == (
            "510600",
            written.correlation_id,
            cause,
        )
        assert envelope.payload == {"text": f"第{version - 1}"} and envelope.hash_is_valid()
    assert stored[0].prev_hash == GENESIS_HASH


async def test_a_later_chunk_that_fails_leaves_nothing_of_the_append(service_db: ServiceDb) -> None:
    [taken] = await append_in_tx(service_db.pool, "other", 0, "holds an event id")
    taken_id = (await store.read_stream(service_db.pool, "other"))[0].event_id
    ids = [uuid.uuid4() for _ in range(store.APPEND_CHUNK + 10)]
    ids[store.APPEND_CHUNK + 3] = taken_id  # in the second INSERT
    with pytest.raises(asyncpg.UniqueViolationError):
        async with service_db.pool.acquire() as conn, conn.transaction():
            await store.append(
                conn, "partial", "note", 0, [Noted(text=str(i)) for i in range(len(ids))], meta(), event_ids=ids
            )
    assert await store.read_stream(service_db.pool, "partial") == []
    async with service_db.pool.acquire() as conn, conn.transaction():  # the connections are fine
        [one] = await store.append(conn, "partial", "note", 0, [Noted(text="after")], meta())
    assert one.stream_version == 1 and taken is not None


async def test_update_delete_and_truncate_are_refused_to_the_service_role(service_db: ServiceDb) -> None:
    await append_in_tx(service_db.pool, "s", 0, "kept")
    async with service_db.pool.acquire() as conn:
        assert await conn.fetchval("SELECT current_user") == db.role_name(service_db.schema)
        for sql in ("UPDATE events SET payload = '{}'", "DELETE FROM events", "TRUNCATE events"):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute(sql)
    assert len(await store.read_stream(service_db.pool, "s")) == 1


async def test_update_delete_and_truncate_are_refused_even_to_the_owner(service_db: ServiceDb) -> None:
    await append_in_tx(service_db.pool, "s", 0, "kept")
    conn = await db.connect(service_db.admin_url, service_db.schema)
    try:
        for sql in ("UPDATE events SET payload = '{}'", "DELETE FROM events", "TRUNCATE events"):
            with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
                await conn.execute(sql)
    finally:
        await conn.close()
    assert len(await store.read_stream(service_db.pool, "s")) == 1


async def test_tail_delivers_an_event_that_commits_after_a_later_position(service_db: ServiceDb) -> None:
    early = await service_db.pool.acquire()
    late = await service_db.pool.acquire()
    try:
        tx_early = early.transaction()
        await tx_early.start()
        first = await store.append(early, "early", "note", 0, [Noted(text="took position first")], meta())
        tx_late = late.transaction()
        await tx_late.start()
        second = await store.append(late, "late", "note", 0, [Noted(text="took position second")], meta())
        assert first[0].position is not None and second[0].position is not None
        assert first[0].position < second[0].position
        await tx_late.commit()
        # The later position is committed, the earlier is not: a naive tail would skip it.
        assert await store.read_after(service_db.pool, store.START, 100) == []
        await tx_early.commit()
        delivered = await store.read_after(service_db.pool, store.START, 100)
        assert [e.stream_id for _, e in delivered] == ["early", "late"]
    finally:
        await service_db.pool.release(early)
        await service_db.pool.release(late)


async def test_tail_never_skips_under_concurrent_writers(service_db: ServiceDb) -> None:
    seen: list[int] = []
    done = asyncio.Event()

    async def reader() -> None:
        cursor = store.START
        while True:
            batch = await store.read_after(service_db.pool, cursor, 50)
            for next_cursor, e in batch:
                assert next_cursor > cursor and e.position is not None
                seen.append(e.position)
                cursor = next_cursor
            if not batch:
                if done.is_set() and len(seen) == await service_db.pool.fetchval("SELECT count(*) FROM events"):
                    return
                await asyncio.sleep(0.005)

    async def writer(n: int) -> None:
        for i in range(25):
            await append_in_tx(service_db.pool, f"w{n}-{i}", 0, "x")

    read_task = asyncio.create_task(reader())
    await asyncio.gather(*(writer(n) for n in range(6)))
    done.set()
    await asyncio.wait_for(read_task, 30)
    committed = [r["position"] for r in await service_db.pool.fetch("SELECT position FROM events ORDER BY position")]
    assert sorted(seen) == committed and len(seen) == len(set(seen)) == 150


async def test_tail_delivers_an_event_whose_transaction_started_late_but_took_an_earlier_position(
    service_db: ServiceDb,
) -> None:
    """The order a consumer creates: inbox row first (an early transaction id), event later."""
    consumer = await service_db.pool.acquire()
    command = await service_db.pool.acquire()
    try:
        consumer_tx = consumer.transaction()
        await consumer_tx.start()
        await consumer.execute(
            "INSERT INTO inbox (consumer, event_id, source, event_type) VALUES ('c', $1, 's', 't')", uuid.uuid4()
        )  # takes the older transaction id
        command_tx = command.transaction()
        await command_tx.start()
        (from_command,) = await store.append(command, "command", "note", 0, [Noted(text="lower position")], meta())
        (from_consumer,) = await store.append(consumer, "consumer", "note", 0, [Noted(text="higher")], meta())
        assert from_command.position is not None and from_consumer.position is not None
        assert from_command.position < from_consumer.position
        await consumer_tx.commit()  # the higher position commits first ...
        first = await store.read_after(service_db.pool, store.START, 100)
        assert [e.stream_id for _, e in first] == ["consumer"]
        await command_tx.commit()  # ... the lower one later: a reader by position would have passed it
        rest = await store.read_after(service_db.pool, first[-1][0], 100)
        assert [e.stream_id for _, e in rest] == ["command"]
    finally:
        await service_db.pool.release(consumer)
        await service_db.pool.release(command)


async def test_every_stream_is_a_sha256_hash_chain(service_db: ServiceDb) -> None:
    await append_in_tx(service_db.pool, "chain", 0, "a", "b")
    await append_in_tx(service_db.pool, "chain", 2, "c")
    events = await store.read_stream(service_db.pool, "chain")
    assert events[0].prev_hash == GENESIS_HASH
    for before, after in itertools.pairwise(events):
        assert after.prev_hash == before.hash
    for e in events:
        assert e.hash == hashlib.sha256(e.canonical()).digest()
        assert e.hash_is_valid()


async def test_an_edited_payload_breaks_the_chain(service_db: ServiceDb) -> None:
    await append_in_tx(service_db.pool, "chain", 0, "original")
    conn = await db.connect(service_db.admin_url, service_db.schema)
    try:
        # Replication mode does not bypass the triggers ...
        await conn.execute("SET session_replication_role = replica")
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
            await conn.execute("""UPDATE events SET payload = '{"text": "forged"}'""")
        await conn.execute("RESET session_replication_role")
        # ... but a superuser who drops the guard on purpose can edit a row: the hash still tells.
        async with conn.transaction():
            await conn.execute("ALTER TABLE events DISABLE TRIGGER events_append_only_rows")
            await conn.execute("""UPDATE events SET payload = '{"text": "forged"}'""")
            await conn.execute("ALTER TABLE events ENABLE ALWAYS TRIGGER events_append_only_rows")
    finally:
        await conn.close()
    (event,) = await store.read_stream(service_db.pool, "chain")
    assert event.payload == {"text": "forged"}
    assert not event.hash_is_valid()


NOTES = recording_aggregate("note", lambda command: [] if command.text == "noop" else [Noted(text=command.text)])


async def test_a_retried_command_with_the_same_idempotency_key_appends_once(service_db: ServiceDb) -> None:
    es = EventStore(service_db.pool, EventRegistry(Noted))
    key = Idempotency.for_request("deyang-cast/clerk", "k-1", "POST", "/notes", b'{"text":"hello"}')
    command = Note(issued_by=ACTOR, issued_at=datetime.now(UTC), text="hello")
    results = await asyncio.gather(
        *(es.execute(NOTES, "notes", command, correlation_id=uuid.uuid4(), idempotency=key) for _ in range(5))
    )
    assert len(await store.read_stream(service_db.pool, "notes")) == 1
    assert {r.as_json()["version"] for r in results} == {1}
    other = Idempotency.for_request("deyang-cast/clerk", "k-1", "POST", "/notes", b'{"text":"other"}')
    with pytest.raises(InvalidInput) as refused:
        await es.execute(NOTES, "notes", command, correlation_id=uuid.uuid4(), idempotency=other)
    assert refused.value.code == "idempotency_key_reused"


async def test_concurrent_commands_on_one_stream_all_land_by_deciding_again(service_db: ServiceDb) -> None:
    es = EventStore(service_db.pool, EventRegistry(Noted))
    commands = [Note(issued_by=ACTOR, issued_at=datetime.now(UTC), text=f"n{i}") for i in range(8)]
    await asyncio.gather(*(es.execute(NOTES, "busy", c, correlation_id=uuid.uuid4()) for c in commands))
    events = await store.read_stream(service_db.pool, "busy")
    assert sorted(e.payload["text"] for e in events) == sorted(c.text for c in commands)
    assert [e.stream_version for e in events] == list(range(1, 9))


async def test_migrations_run_once(service_db: ServiceDb) -> None:
    assert await db.migrate(service_db.admin_url, service_db.schema, []) == []


async def test_a_connection_goes_back_to_the_pool_without_its_transaction_or_transaction_state(
    service_db: ServiceDb,
) -> None:
    """The pool skips asyncpg's reset query: what a borrower left open must still not leak."""
    pool = await db.create_pool(
        db.app_url(service_db.admin_url, service_db.schema, None), service_db.schema, max_size=1
    )
    try:
        async with pool.acquire() as conn:
            await conn.execute("BEGIN")  # left open by a careless borrower
            await conn.execute("SET LOCAL statement_timeout = '1s'")
            await conn.execute("SELECT pg_advisory_xact_lock(42)")
            await store.append(conn, "leak", "note", 0, [Noted(text="never committed")], meta())
        async with pool.acquire() as conn:  # the same, single connection
            assert not conn.is_in_transaction()
            assert await conn.fetchval("SHOW statement_timeout") == "0"
            assert await conn.fetchval("SELECT count(*) FROM events WHERE stream_id = 'leak'") == 0
            assert await conn.fetchval("SELECT pg_try_advisory_xact_lock(42)")
    finally:
        await pool.close()


async def test_replay_yields_every_event_in_batches_and_leaves_the_collector_as_it_was(
    service_db: ServiceDb,
) -> None:
    """The collector pauses while a batch is read and decoded and leaves the batch alone while
    the caller applies it; the caller's own cyclic garbage is collected within
    ``FULL_COLLECTION_EVERY`` batches, and nothing stays frozen after a replay, finished or
    abandoned."""
    every = store.FULL_COLLECTION_EVERY
    for n in range(5):
        await append_in_tx(service_db.pool, f"r-{n}", 0, *(f"{n}.{i}" for i in range(2 * every // 5 + 1)))
    registry = EventRegistry(Noted)
    texts: list[str] = []
    garbage: list[weakref.ref[Any]] = []
    async for batch in store.replay(service_db.pool, registry, batch_size=1):
        assert gc.isenabled()
        assert len(batch) == 1
        texts += [event.text for _, event in batch]  # type: ignore[attr-defined]
        cycle: list[Any] = []
        garbage.append(weakref.ref(_Cycle(cycle)))
        del cycle
        if len(garbage) > every:
            assert garbage[-every - 1]() is None, f"cyclic garbage lived more than {every} batches"
    assert len(texts) == 5 * (2 * every // 5 + 1) > every
    assert gc.isenabled() and gc.get_freeze_count() == 0

    async with service_db.pool.acquire() as conn:
        replaying = store.replay(conn, registry, batch_size=10)
        async for _ in replaying:
            break  # a caller that stops early
        await replaying.aclose()
    assert gc.isenabled() and gc.get_freeze_count() == 0


async def test_a_replay_gives_projections_each_event_as_the_store_holds_it(service_db: ServiceDb) -> None:
    """A replay reads only the columns a projection may use (``Recorded``); each must be the stored one."""
    await append_in_tx(service_db.pool, "first", 0, "一", "二")
    await append_in_tx(service_db.pool, "second", 0, "三")
    await append_in_tx(service_db.pool, "first", 2, "四")
    stored = {e.event_id: e for s in ("first", "second") for e in await store.read_stream(service_db.pool, s)}
    registry = EventRegistry(Noted)
    replayed = [pair async for batch in store.replay(service_db.pool, registry, batch_size=3) for pair in batch]
    assert [r.event_id for r, _ in replayed] == sorted(stored, key=lambda i: stored[i].position or 0)
    fields = [name for name in dir(Recorded) if not name.startswith("_")]
    assert len(fields) == 8
    for replayed_event, event in replayed:
        envelope = stored[replayed_event.event_id]
        assert {f: getattr(replayed_event, f) for f in fields} == {f: getattr(envelope, f) for f in fields}
        assert event == registry.decode(envelope.event_type, envelope.schema_version, envelope.payload)


class NotedV2(Event):
    """``Noted`` as a later version of the code has it: the text split by language."""

    event_type = "Noted"
    schema_version = 2
    zh: str
    en: str


async def test_a_replay_decodes_stored_json_text_and_upcasts_what_an_older_version_wrote(
    service_db: ServiceDb,
) -> None:
    """A replay validates a current payload straight from its stored JSON text and upcasts an
    older one: events written by version 1 of the code, replayed by version 2."""
    text = '引号" 反斜杠\\ 换行\n \u2028 😀'
    await append_in_tx(service_db.pool, "old", 0, text, "二")
    async with service_db.pool.acquire() as conn, conn.transaction():
        await store.append(conn, "new", "note", 0, [NotedV2(zh="三", en="three")], meta())
    registry = EventRegistry(NotedV2)

    @registry.upcaster("Noted", 1)
    def split(payload: dict[str, Any]) -> dict[str, Any]:
        return {"zh": payload["text"], "en": ""}

    replayed = [event async for batch in store.replay(service_db.pool, registry) for _, event in batch]
    assert replayed == [NotedV2(zh=text, en=""), NotedV2(zh="二", en=""), NotedV2(zh="三", en="three")]


async def test_a_replay_abandoned_with_its_pool_closed_leaves_no_stray_error(service_db: ServiceDb) -> None:
    """A caller that breaks out and closes its pool at once: the batch read ahead fails, and nobody hears."""
    await append_in_tx(service_db.pool, "ahead", 0, *(str(i) for i in range(10)))
    unheard: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _, context: unheard.append(context))
    try:
        pool = await db.create_pool(service_db.app_url, service_db.schema)
        async for _ in store.replay(pool, EventRegistry(Noted), batch_size=2):
            break  # no aclose(): the generator is finalised later, by the event loop
        await pool.close()
        for _ in range(5):
            await asyncio.sleep(0.05)
            gc.collect()
    finally:
        loop.set_exception_handler(previous)
    assert unheard == [], unheard


class _Cycle:
    """An object in a reference cycle, weakly referenceable."""

    def __init__(self, other: Any) -> None:
        self.other = other
        other.append(self)


JSON_VALUES: list[tuple[Any, str]] = [
    ({"title": "德阳市科协 承接职能", "nested": {"list": [1, 2.5, None, True, "é"]}, "empty": {}}, "object"),
    ([], "array"),
    ("plain text", "string"),
    (-(2**53 - 1), "number"),
]


@pytest.mark.parametrize(("value", "json_type"), JSON_VALUES, ids=["document", "empty-list", "string", "min-int"])
async def test_jsonb_and_json_values_come_back_as_they_went_in(
    service_db: ServiceDb, value: Any, json_type: str
) -> None:
    """jsonb travels in its binary wire form (a version byte, then UTF-8 text), json as text."""
    async with service_db.pool.acquire() as conn:
        assert await conn.fetchval("SELECT $1::jsonb", value) == value
        assert await conn.fetchval("SELECT $1::json", value) == value
        # The server stored the document itself, not the version byte or an escaped string.
        assert await conn.fetchval("SELECT jsonb_typeof($1::jsonb)", value) == json_type
        assert await conn.fetchval("SELECT $1::jsonb = $2::text::jsonb", value, json.dumps(value)) is True


async def test_stored_payloads_read_back_equal_through_every_reader(service_db: ServiceDb) -> None:
    text = "完成第三季度评价工作 — 通过率 95%"
    await append_in_tx(service_db.pool, "payload-1", 0, text, text + "!")
    async with service_db.pool.acquire() as conn:
        stored = await store.read_stream(conn, "payload-1")
        raw = await conn.fetch("SELECT payload::text FROM events WHERE stream_id = 'payload-1' ORDER BY stream_version")
    assert [e.payload for e in stored] == [{"text": text}, {"text": text + "!"}]
    assert [r[0] for r in raw] == [
        '{"text": "完成第三季度评价工作 — 通过率 95%"}',
        '{"text": "完成第三季度评价工作 — 通过率 95%!"}',
    ]
    tailed = [e for _, e in await store.read_after(service_db.pool, store.START, 10)]
    assert tailed == stored


async def test_timestamps_come_back_in_utc_whatever_the_session_zone(service_db: ServiceDb) -> None:
    """timestamptz is read as the server's ISO text; a session in another zone still gives UTC."""
    moment = datetime(2026, 3, 14, 15, 9, 26, 535897, tzinfo=UTC)
    conn = await db.connect(service_db.app_url, service_db.schema)
    try:
        assert await conn.fetchval("SHOW DateStyle") == "ISO, MDY"
        for zone in ("UTC", "Asia/Shanghai", "America/St_Johns"):
            await conn.execute(f"SET TimeZone = '{zone}'")
            back = await conn.fetchval("SELECT $1::timestamptz", moment)
            assert back == moment and back.tzinfo is UTC, zone
            assert await conn.fetchval("SELECT $1::timestamptz = '2026-03-14 15:09:26.535897+00'", moment)
        # Python allows offsets up to a day; PostgreSQL's text input only up to ±15:59.
        odd = datetime(1149, 2, 26, 4, 51, 20, 544010, tzinfo=timezone(timedelta(hours=16, minutes=32)))
        assert await conn.fetchval("SELECT $1::timestamptz", odd) == odd
        await append_in_tx(service_db.pool, "times-1", 0, "a")
        [stored] = await store.read_stream(conn, "times-1")
        assert stored.recorded_at is not None and stored.recorded_at.tzinfo is UTC
        assert abs((stored.recorded_at - datetime.now(UTC)).total_seconds()) < 60
    finally:
        await conn.close()


async def test_a_timestamp_inside_a_row_value_fails_loudly_and_its_columns_read_fine(service_db: ServiceDb) -> None:
    """The price of reading timestamptz as text: asyncpg decodes row values in binary only."""
    await append_in_tx(service_db.pool, "times-2", 0, "a")
    async with service_db.pool.acquire() as conn:
        with pytest.raises(ValueError):
            await conn.fetchval("SELECT ROW(stream_id, recorded_at) FROM events WHERE stream_id = 'times-2'")
        row = await conn.fetchrow("SELECT stream_id, recorded_at FROM events WHERE stream_id = 'times-2'")
        assert row is not None and row["recorded_at"].tzinfo is UTC
        assert await conn.fetchval("SELECT ROW(stream_id, stream_version) FROM events WHERE stream_id = 'times-2'") == (
            "times-2",
            1,
        )


@pytest.mark.parametrize("value", [datetime(2026, 3, 14, 15, 9), datetime(2026, 3, 14).date()], ids=["naive", "date"])
async def test_a_timestamp_without_its_zone_is_refused(service_db: ServiceDb, value: Any) -> None:
    async with service_db.pool.acquire() as conn:
        with pytest.raises(asyncpg.DataError, match="a timestamptz must be a datetime with its zone"):
            await conn.fetchval("SELECT $1::timestamptz", value)
        assert await conn.fetchval("SELECT 1") == 1  # the connection is still usable
