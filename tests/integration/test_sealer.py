"""The sealer's log: dense, never skipping, and each stream in version order."""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

from shared import merkle, store
from shared.commands import EventStore
from shared.embedded import EmbeddedBroker
from shared.messages import Command, Event, EventRegistry
from shared.principal import Principal, Role
from shared.sealer import Sealer
from tests.conftest import ServiceDb, recording_aggregate

ACTOR = Principal(subject="clerk", organisation="deyang-cast", role=Role.ASSOCIATION, jurisdiction="510600")


class Noted(Event):
    event_type = "Noted"
    text: str


def meta() -> store.Metadata:
    return store.Metadata(
        actor=ACTOR, jurisdiction="510600", occurred_at=datetime.now(UTC), correlation_id=uuid.uuid4()
    )


def sealer_for(service_db: ServiceDb) -> Sealer:
    keys = Path(tempfile.mkdtemp(prefix="chengneng-keys-"))
    return Sealer(service_db.schema, service_db.pool, service_db.app_url, "unused:9092", keys)


async def write_inverted_stream(service_db: ServiceDb) -> None:
    """Versions 1 and 2 of ``case-1``, version 2 with the smaller transaction id."""
    early = await service_db.pool.acquire()
    late = await service_db.pool.acquire()
    try:
        early_tx = early.transaction()
        await early_tx.start()
        # The early transaction takes its id with a first write elsewhere ...
        await early.execute(
            "INSERT INTO inbox (consumer, event_id, source, event_type) VALUES ('c', $1, 's', 't')", uuid.uuid4()
        )
        async with late.transaction():  # ... a later one writes version 1 and commits ...
            await store.append(late, "case-1", "note", 0, [Noted(text="v1")], meta())
        # ... and the early one reads that head and writes version 2: a smaller id, a later version.
        await store.append(early, "case-1", "note", 1, [Noted(text="v2")], meta())
        await early_tx.commit()
    finally:
        await service_db.pool.release(early)
        await service_db.pool.release(late)


async def test_a_stream_enters_the_log_in_version_order_even_when_transaction_ids_are_inverted(
    service_db: ServiceDb,
) -> None:
    await write_inverted_stream(service_db)
    tail_order = [e.stream_version for _, e in await store.read_after(service_db.pool, store.START, 10)]
    assert tail_order == [2, 1]  # what the transaction-id order alone would give

    sealer = sealer_for(service_db)
    await sealer.seal_pending()
    logged = await service_db.pool.fetch(
        """SELECT e.stream_version, l.leaf_hash, e.hash FROM log_entries l JOIN events e USING (position)
           ORDER BY l.log_index"""
    )
    assert [r["stream_version"] for r in logged] == [1, 2]
    assert all(bytes(r["leaf_hash"]) == merkle.leaf_hash(bytes(r["hash"])) for r in logged)
    assert await sealer.seal_pending() == 0  # nothing is sealed twice


async def test_the_relay_s_lag_counts_the_events_not_yet_sealed_and_not_yet_published(
    service_db: ServiceDb,
) -> None:
    pool = service_db.pool
    sealer = sealer_for(service_db)
    assert await store.log_lag(pool, 0) == (0, 0)
    async with pool.acquire() as conn, conn.transaction():
        await store.append(conn, "s-a", "note", 0, [Noted(text="a1"), Noted(text="a2")], meta())
    assert await store.log_lag(pool, 0) == (2, 2)  # before the sealer ever ran

    held = await pool.acquire()
    try:
        holding = held.transaction()
        await holding.start()  # takes a transaction id, and so holds the horizon
        await held.execute(
            "INSERT INTO inbox (consumer, event_id, source, event_type) VALUES ('c', $1, 's', 't')", uuid.uuid4()
        )
        async with pool.acquire() as conn, conn.transaction():
            await store.append(conn, "s-b", "note", 0, [Noted(text=f"b{n}") for n in range(3)], meta())
        assert await sealer.seal_pending() == 2  # s-b waits behind the open transaction
        assert await store.log_lag(pool, 0) == (5, 3)
        assert await store.log_lag(pool, 2) == (3, 3)  # what was sealed is published
        await store.append(held, "s-c", "note", 0, [Noted(text="c1")], meta())
        await holding.commit()
    finally:
        await pool.release(held)
    while await sealer.seal_pending():
        pass
    assert await store.log_lag(pool, 2) == (4, 0)
    assert await store.log_lag(pool, 6) == (0, 0)


async def test_the_relay_s_lag_leaves_out_a_predecessor_sealed_ahead_of_the_sealer_s_cursor(
    service_db: ServiceDb,
) -> None:
    await write_inverted_stream(service_db)
    sealer = sealer_for(service_db)
    sealer.batch_size = 1
    assert await sealer.seal_pending() == 1  # read version 2, sealed version 1 with it
    assert await service_db.pool.fetchval("SELECT count(*) FROM log_entries") == 2
    assert await store.log_lag(service_db.pool, 0) == (2, 0)  # version 1 is past the cursor, but sealed
    assert await store.log_lag(service_db.pool, 2) == (0, 0)


async def test_a_predecessor_beyond_the_batch_is_sealed_first(service_db: ServiceDb) -> None:
    for n in range(3):
        async with service_db.pool.acquire() as conn, conn.transaction():
            await store.append(conn, f"s{n}", "note", 0, [Noted(text="x")], meta())
    sealer = sealer_for(service_db)
    sealer.batch_size = 1
    while await sealer.seal_pending():
        pass
    rows = await service_db.pool.fetch("SELECT log_index FROM log_entries ORDER BY log_index")
    assert [r["log_index"] for r in rows] == [0, 1, 2]


async def test_a_sealer_refuses_to_sign_over_a_log_changed_under_its_last_checkpoint(service_db: ServiceDb) -> None:
    sealer = sealer_for(service_db)
    for n in range(5):
        async with service_db.pool.acquire() as conn, conn.transaction():
            await store.append(conn, f"s-{n}", "note", 0, [Noted(text=str(n))], meta())
    await sealer._load_range()
    assert await sealer.seal_pending() == 5
    first = await sealer.checkpoint(None)
    assert first is not None and first["tree_size"] == 5
    async with service_db.pool.acquire() as conn, conn.transaction():
        await store.append(conn, "s-late", "note", 0, [Noted(text="late")], meta())
    # A new leader loads the log: unchanged, it signs the grown tree.
    successor = sealer_for(service_db)
    successor.key, successor.key_id = sealer.key, sealer.key_id
    await successor._load_range()
    assert await successor.seal_pending() == 1
    assert (await successor.checkpoint(None) or {}).get("tree_size") == 6

    # Someone with the owner's rights rewrites a leaf under the signed checkpoints.
    admin = await asyncpg.connect(service_db.admin_url, server_settings={"search_path": service_db.schema})
    try:
        await admin.execute("ALTER TABLE log_entries DISABLE TRIGGER log_entries_append_only")
        await admin.execute("UPDATE log_entries SET leaf_hash = $1 WHERE log_index = 2", merkle.leaf_hash(b"forged"))
        await admin.execute("ALTER TABLE log_entries ENABLE ALWAYS TRIGGER log_entries_append_only")
    finally:
        await admin.close()
    async with service_db.pool.acquire() as conn, conn.transaction():
        await store.append(conn, "s-later", "note", 0, [Noted(text="later")], meta())
    third = sealer_for(service_db)
    third.key, third.key_id = sealer.key, sealer.key_id
    await third._load_range()
    assert not third.consistent
    assert await third.seal_pending() == 1  # sealing goes on (nothing is lost) ...
    assert await third.checkpoint(None) is None  # ... but nothing more is signed over the changed log
    assert await service_db.pool.fetchval("SELECT max(tree_size) FROM checkpoints") == 6


class Note(Command):
    text: str


NOTES = recording_aggregate("note", lambda command: [Noted(text=command.text)])


async def test_a_command_is_sealed_at_once_by_the_sealer_of_its_process_not_at_its_next_poll(
    service_db: ServiceDb, broker: EmbeddedBroker
) -> None:
    """Every event waits for the sealer on its way to a topic: a sealer that only polled would
    add up to its poll interval to each. This one polls once a minute."""
    keys = Path(tempfile.mkdtemp(prefix="chengneng-keys-"))
    sealer = Sealer(
        service_db.schema, service_db.pool, service_db.app_url, broker.bootstrap, keys, interval_s=60, poll_s=60
    )
    events = EventStore(service_db.pool, EventRegistry(Noted))

    async def sealed_within(count: int, seconds: float) -> None:
        began = time.monotonic()
        while time.monotonic() - began < seconds:
            if await service_db.pool.fetchval("SELECT count(*) FROM log_entries") == count:
                return
            await asyncio.sleep(0.02)
        raise AssertionError(f"{count} events not sealed within {seconds} s")

    async def command(text: str) -> None:
        note = Note(issued_by=ACTOR, issued_at=datetime.now(UTC), text=text)
        await events.execute(NOTES, "notes", note, correlation_id=uuid.uuid4())

    task = asyncio.create_task(sealer.run())
    try:
        await command("first")
        await sealed_within(1, 30)  # at its start, or woken
        for n in range(2, 5):
            await asyncio.sleep(0.3)  # the sealer is waiting out its poll
            await command(f"then {n}")
            await sealed_within(n, 5)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
