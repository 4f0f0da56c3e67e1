"""The auditor against a tampering database superuser: every kind of change is caught and named.

A small store is built with the real command path, sealed and checkpointed by the real
sealer (no Kafka), then changed behind the service's back: the superuser switches the
append-only triggers off inside a transaction, edits, and switches them on again.
"""

from __future__ import annotations

import dataclasses
import io
import json
import random
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiokafka import AIOKafkaProducer

from shared import audit, db, kafka, merkle, store
from shared.auth import load_private_key
from shared.commands import EventStore
from shared.embedded import EmbeddedBroker
from shared.envelope import Envelope
from shared.messages import Aggregate, Command, Event, EventRegistry
from shared.principal import Principal, Role
from shared.sealer import CHECKPOINT_TOPIC, Sealer, checkpoint_body, key_paths
from tests.conftest import ServiceDb

ACTOR = Principal(subject="clerk", organisation="deyang-cast", role=Role.ASSOCIATION, jurisdiction="510600")


class Noted(Event):
    event_type = "Noted"
    text: str


class Note(Command):
    text: str


EVENTS = EventRegistry(Noted)
NOTES = Aggregate(
    stream_type="note",
    initial=lambda: 0,
    evolve=lambda count, event: count + 1,
    decide=lambda count, command: [Noted(text=command.text)],
    jurisdiction_of=lambda count, command: "510600",
)


@dataclass
class Built:
    schema: str
    admin_url: str
    keys: Path
    gap_position: int
    held: list[dict[str, Any]]
    """The checkpoints as the sealer produced them: what an auditor (or Kafka) keeps."""
    sealer: Sealer
    jobs: int = 1
    """1: everything in the test's process; 2: the chains in worker processes, even for 11 events."""

    async def verify(self, *, held: bool = False, jobs: int | None = None) -> audit.Report:
        return await audit.verify(
            self.admin_url,
            [self.schema],
            self.keys,
            held_checkpoints=self.held if held else (),
            jobs=jobs or self.jobs,
            parallel_from=1,
        )


async def note(events: EventStore, stream: str, text: str) -> None:
    command = Note(issued_by=ACTOR, issued_at=datetime.now(UTC), text=text)
    await events.execute(NOTES, stream, command, correlation_id=uuid.uuid4())


async def seal_everything(sealer: Sealer) -> None:
    expected = await sealer.pool.fetchval("SELECT count(*) FROM events")
    for _ in range(200):
        await sealer.seal_pending()
        if sealer.leaves_loaded == expected:
            return
    raise AssertionError(f"sealed {sealer.leaves_loaded} of {expected}")


@pytest.fixture(params=[1, 2], ids=["one-process", "chain-workers"])
async def built(request: pytest.FixtureRequest, service_db: ServiceDb, scratch_dir: Path) -> AsyncIterator[Built]:
    """s-a: 4 events, s-b: 3, s-c: 2, s-d: 2; checkpoints at 7 and 11; a hole in the positions.

    Every test runs twice: verified in one process, and with the chains checked by worker
    processes over ranges of streams (what a store of ``audit.PARALLEL_FROM`` events gets).
    """
    events = EventStore(service_db.pool, EVENTS)
    for stream, count in (("s-a", 3), ("s-b", 3), ("s-c", 1)):
        for i in range(count):
            await note(events, stream, f"{stream} note {i + 1}")
    sealer = Sealer(service_db.schema, service_db.pool, service_db.app_url, "127.0.0.1:1", scratch_dir / "keys")
    await seal_everything(sealer)
    held = [await sealer.checkpoint(None)]
    # A rolled-back append consumes a position: the hole a forger would like to fill.
    with pytest.raises(RuntimeError):
        async with service_db.pool.acquire() as conn, conn.transaction():
            meta = store.Metadata(ACTOR, "510600", datetime.now(UTC), uuid.uuid4())
            [lost] = await store.append(conn, "s-x", "note", 0, [Noted(text="rolled back")], meta)
            raise RuntimeError("roll back")
    assert lost.position is not None
    for stream, text in (("s-c", "s-c note 2"), ("s-a", "s-a note 4"), ("s-d", "s-d note 1"), ("s-d", "s-d note 2")):
        await note(events, stream, text)
    await seal_everything(sealer)
    held.append(await sealer.checkpoint(None))
    kept = [c for c in held if c is not None]
    assert [c["tree_size"] for c in kept] == [7, 11]
    yield Built(
        service_db.schema, service_db.admin_url, scratch_dir / "keys", lost.position, kept, sealer, request.param
    )


async def tamper(built: Built, *statements: tuple[str, Sequence[Any]] | str) -> None:
    """Run ``statements`` as the superuser with the append-only triggers off, then on again."""
    conn = await db.connect(built.admin_url, built.schema)
    try:
        tables = ("events", "log_entries", "checkpoints")
        triggers = {
            t: [
                r["tgname"]
                for r in await conn.fetch(
                    "SELECT tgname FROM pg_trigger WHERE tgrelid = $1::regclass AND NOT tgisinternal",
                    f"{built.schema}.{t}",
                )
            ]
            for t in tables
        }
        async with conn.transaction():
            for table in tables:
                await conn.execute(f"ALTER TABLE {table} DISABLE TRIGGER USER")
            for statement in statements:
                if isinstance(statement, str):
                    await conn.execute(statement)
                else:
                    await conn.execute(statement[0], *statement[1])
            for table, names in triggers.items():
                for name in names:
                    await conn.execute(f"ALTER TABLE {table} ENABLE ALWAYS TRIGGER {name}")
        states = await conn.fetch(
            "SELECT tgenabled::text FROM pg_trigger WHERE tgrelid = ANY($1::regclass[]) AND NOT tgisinternal",
            [f"{built.schema}.{t}" for t in tables],
        )
        assert {r["tgenabled"] for r in states} == {"A"}, "the triggers must be back on"
    finally:
        await conn.close()


def first(report: audit.Report) -> audit.Failure:
    assert not report.ok, report.lines()
    return report.failures[0]


async def test_an_untouched_store_verifies(built: Built) -> None:
    report = await built.verify(held=True)
    assert report.ok, report.lines()
    [summary] = report.services
    assert (summary.events, summary.streams, summary.log_entries, summary.checkpoints) == (11, 4, 11, 2)
    assert summary.external_checkpoints == 2 and summary.unsealed == 0
    assert report.lines()[-1].startswith("OK:")


async def test_progress_is_shown_as_the_chains_are_checked(built: Built) -> None:
    """In one process a line every N events; from the workers, a line whenever their ranges pass a multiple of N."""
    out = io.StringIO()
    report = await audit.verify(
        built.admin_url, [built.schema], built.keys, progress_every=3, progress=out, jobs=built.jobs, parallel_from=1
    )
    assert report.ok, report.lines()
    counts = [int(line.split()[1]) for line in out.getvalue().splitlines() if " events checked (" in line]
    assert counts == sorted(counts) and len(counts) == len(set(counts)), out.getvalue()
    assert len(counts) >= 2 and counts[-1] >= 9 and max(counts) <= 11, out.getvalue()
    assert all(line.startswith(f"{built.schema}: ") for line in out.getvalue().splitlines())


async def test_events_after_the_last_seal_are_reported_not_failed(built: Built) -> None:
    await note(EventStore(built.sealer.pool, EVENTS), "s-b", "late")
    report = await built.verify()
    assert report.ok, report.lines()
    assert report.services[0].unsealed == 1
    assert any("not yet sealed" in n for n in report.notes)


async def test_one_changed_payload_byte_is_named(built: Built) -> None:
    await tamper(
        built,
        """UPDATE events SET payload = jsonb_set(payload, '{text}', to_jsonb('S' || substr(payload->>'text', 2)))
           WHERE stream_id = 's-b' AND stream_version = 2""",
    )
    failure = first(await built.verify())
    assert failure.service == built.schema
    assert "stream s-b version 2" in failure.where
    assert "canonical encoding" in failure.what


async def test_a_deleted_row_is_named(built: Built) -> None:
    await tamper(built, "DELETE FROM events WHERE stream_id = 's-a' AND stream_version = 2")
    report = await built.verify()
    failure = first(report)
    assert "stream s-a version 3" in failure.where and "version 2 is missing" in failure.what
    assert any("log index 1 (position 2)" in f.where and "holds no event" in f.what for f in report.failures), (
        report.lines()
    )


async def test_two_swapped_payloads_are_named(built: Built) -> None:
    await tamper(
        built,
        """UPDATE events SET payload = CASE stream_id WHEN 's-a' THEN
                (SELECT payload FROM events WHERE stream_id = 's-c' AND stream_version = 1)
              ELSE (SELECT payload FROM events WHERE stream_id = 's-a' AND stream_version = 1) END
           WHERE stream_version = 1 AND stream_id IN ('s-a', 's-c')""",
    )
    report = await built.verify()
    assert "stream s-a version 1" in first(report).where
    assert any("stream s-c version 1" in f.where for f in report.failures)


async def test_a_forged_row_with_a_good_chain_below_the_last_seal_is_named(built: Built) -> None:
    conn = await db.connect(built.admin_url, built.schema)
    try:
        [head] = [e for e in await store.read_stream(conn, "s-c") if e.stream_version == 2]
        forged = msgspec.structs.replace(
            head,
            stream_version=3,
            event_id=uuid.uuid4(),
            payload={"text": "a decision nobody took"},
            prev_hash=head.hash,
            position=built.gap_position,
        )
        forged = msgspec.structs.replace(forged, hash=_rehash(forged))
        assert forged.hash_is_valid()
        # The forger also gives the row an old transaction id, to hide it among sealed history.
        old_xid = await conn.fetchval("SELECT xact_id::text FROM events WHERE position = $1", head.position)
        await conn.execute(
            f"""INSERT INTO events ({store.COLUMNS.replace("recorded_at, ", "")}, xact_id) OVERRIDING SYSTEM VALUE
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18,
                        $19::text::xid8)""",
            forged.position,
            forged.stream_id,
            forged.stream_type,
            forged.stream_version,
            forged.event_id,
            forged.event_type,
            forged.schema_version,
            forged.occurred_at,
            forged.actor.subject,
            forged.actor.organisation,
            forged.actor.role.value,
            forged.actor.jurisdiction,
            forged.jurisdiction,
            forged.correlation_id,
            forged.causation_id,
            forged.payload,
            forged.prev_hash,
            forged.hash,
            old_xid,
        )
    finally:
        await conn.close()
    failure = first(await built.verify())
    assert f"stream s-c version 3 (position {built.gap_position})" in failure.where
    assert "inserted after the fact" in failure.what


def _rehash(envelope: Envelope) -> bytes:
    import hashlib

    return hashlib.sha256(envelope.canonical()).digest()


async def _rewrite_history(built: Built) -> dict[int, bytes]:
    """Change s-a version 2 and recompute everything after it: chain, leaves, roots. Returns the new roots."""
    conn = await db.connect(built.admin_url, built.schema)
    try:
        rows = await conn.fetch(f"SELECT {store.COLUMNS} FROM events ORDER BY stream_id, stream_version")
        envelopes = [store.envelope_from_record(r) for r in rows]
        log = await conn.fetch("SELECT log_index, position FROM log_entries ORDER BY log_index")
    finally:
        await conn.close()
    rewritten: list[Envelope] = []
    prev: Envelope | None = None
    for env in envelopes:
        if env.stream_id == "s-a" and env.stream_version >= 2:
            payload = {"text": "s-a: what we wish we had written"} if env.stream_version == 2 else env.payload
            env = msgspec.structs.replace(env, payload=payload, prev_hash=prev.hash if prev else env.prev_hash)
            env = msgspec.structs.replace(env, hash=_rehash(env))
        rewritten.append(env)
        prev = env
    by_position = {e.position: e for e in rewritten}
    leaves = [merkle.leaf_hash(by_position[r["position"]].hash) for r in log]
    changed = [e for e in rewritten if e.stream_id == "s-a" and e.stream_version >= 2]
    statements: list[Any] = [
        (
            "UPDATE events SET payload = $1, prev_hash = $2, hash = $3 WHERE position = $4",
            [e.payload, e.prev_hash, e.hash, e.position],
        )
        for e in changed
    ]
    statements += [
        ("UPDATE log_entries SET leaf_hash = $1 WHERE log_index = $2", [leaves[r["log_index"]], r["log_index"]])
        for r in log
    ]
    roots = {size: merkle.root(leaves[:size]) for size in (7, 11)}
    statements += [
        ("UPDATE checkpoints SET root_hash = $1 WHERE tree_size = $2", [root, size]) for size, root in roots.items()
    ]
    await tamper(built, *statements)
    return roots


async def _re_sign(built: Built, roots: dict[int, bytes]) -> None:
    key = load_private_key(key_paths(built.keys, built.schema)[0])
    statements: list[Any] = []
    for size, root in roots.items():
        signed_at = datetime.now(UTC)
        body = checkpoint_body(f"chengneng/{built.schema}", size, root, signed_at)
        statements.append(
            (
                "UPDATE checkpoints SET body = $1, signature = $2, signed_at = $3 WHERE tree_size = $4",
                [body, key.sign(body.encode()), signed_at, size],
            )
        )
    await tamper(built, *statements)


async def test_a_consistently_rewritten_history_is_caught_by_the_checkpoints_held_elsewhere(built: Built) -> None:
    roots = await _rewrite_history(built)
    # Chains, leaves and roots agree again; the old signed bodies do not.
    report = await built.verify()
    assert all("stream" not in f.where and "log index" not in f.where for f in report.failures), report.lines()
    assert "checkpoint tree_size 7" in first(report).where and "signed body says root" in first(report).what

    # A forger holding the signing key re-signs the new roots: the database alone now agrees with itself ...
    await _re_sign(built, roots)
    assert (await built.verify()).ok

    # ... but not with the checkpoints that were published before: those name the rewrite.
    report = await built.verify(held=True)
    failure = first(report)
    assert failure.where == "checkpoint tree_size 7 (held by the auditor)"
    assert "the history was rewritten" in failure.what
    assert any(f.where == "checkpoint tree_size 11 (held by the auditor)" for f in report.failures)


async def test_worker_processes_find_what_one_process_finds_in_the_same_order(built: Built) -> None:
    """Chain failures in (stream, version) order over several ranges of streams, the log's after them."""
    await tamper(
        built,
        "DELETE FROM events WHERE stream_id = 's-a' AND stream_version = 2",
        """UPDATE events SET payload = '{"text": "changed"}'
           WHERE stream_id IN ('s-b', 's-d') AND stream_version = 1""",
        "UPDATE events SET jurisdiction = '510700' WHERE stream_id = 's-c' AND stream_version = 2",
    )
    here, workers = await built.verify(jobs=1), await built.verify(jobs=2)
    assert [(f.where, f.what) for f in workers.failures] == [(f.where, f.what) for f in here.failures]
    assert workers.failure_count == here.failure_count
    assert [dataclasses.replace(s, service="") for s in workers.services] == [
        dataclasses.replace(s, service="") for s in here.services
    ]
    wheres = [f.where for f in here.failures]
    streams = [w.split()[1] for w in wheres if w.startswith("stream ")]
    assert streams == sorted(streams) and {"s-a", "s-b", "s-c", "s-d"} <= set(streams), here.lines()
    first_log = next(i for i, w in enumerate(wheres) if w.startswith("log index"))
    assert all(not w.startswith("stream ") for w in wheres[first_log:]), here.lines()


async def test_failures_beyond_the_listed_ones_are_counted(built: Built, monkeypatch: pytest.MonkeyPatch) -> None:
    await tamper(
        built,
        "DELETE FROM log_entries WHERE log_index IN (2, 4, 6, 8)",
        """UPDATE events SET payload = '{"text": "changed"}' WHERE stream_version = 1""",
    )
    everything = await built.verify()
    assert everything.failure_count > 6, everything.lines()
    monkeypatch.setattr(audit, "MAX_FAILURES", 2)
    listed = await built.verify()
    assert listed.failure_count == everything.failure_count
    assert listed.failures == everything.failures[:2]


async def test_a_forged_checkpoint_signature_fails(built: Built) -> None:
    await tamper(built, ("UPDATE checkpoints SET signature = $1 WHERE tree_size = 11", [random.randbytes(64)]))
    failure = first(await built.verify())
    assert failure.where == "checkpoint tree_size 11" and "signature does not verify" in failure.what


async def test_a_missing_log_entry_fails(built: Built) -> None:
    await tamper(built, "DELETE FROM log_entries WHERE log_index = 4")
    report = await built.verify()
    assert "has no log entry" in first(report).what
    assert any(f.where.startswith("log index 5") and "not dense" in f.what for f in report.failures)
    assert any("checkpoint tree_size 7" in f.where and "differs from the root" in f.what for f in report.failures)


async def test_a_bundle_verifies_alone_and_a_changed_one_does_not(built: Built, scratch_dir: Path) -> None:
    bundle = scratch_dir / "audit.jsonl.gz"
    counts = await audit.export(built.admin_url, bundle, built.keys, [built.schema])
    assert counts == {built.schema: 11}
    report = audit.verify_bundle(bundle, keys_dir=built.keys)
    assert report.ok, report.lines()
    assert report.services[0].checkpoints == 2

    await tamper(built, "DELETE FROM events WHERE stream_id = 's-d' AND stream_version = 1")
    await audit.export(built.admin_url, bundle, built.keys, [built.schema])
    report = audit.verify_bundle(bundle)
    assert "holds no event" in first(report).what
    assert any("stream s-d version 2" in f.where and "starts at version 2" in f.what for f in report.failures)


async def test_worker_ranges_follow_the_database_collation(service_db: ServiceDb, scratch_dir: Path) -> None:
    """Stream ids whose order under the column's collation is not Python's: no stream is checked twice or missed.

    Needs a server with ICU collations (the embedded one has none; set CHENGNENG_TEST_DATABASE_URL).
    """
    conn = await db.connect(service_db.admin_url, service_db.schema)
    try:
        if not await conn.fetchval("SELECT count(*) FROM pg_collation WHERE collname = 'und-x-icu'"):
            pytest.skip("this PostgreSQL has no ICU collations")
        await conn.execute('ALTER TABLE events ALTER COLUMN stream_id TYPE text COLLATE "und-x-icu"')
        # The collation sorts s-b before s-C; Python (and C) sort "s-C" before "s-b".
        assert await conn.fetchval(
            'SELECT array_agg(s ORDER BY s COLLATE "und-x-icu") FROM unnest($1::text[]) s', ["s-C", "s-b"]
        ) == [
            "s-b",
            "s-C",
        ]
    finally:
        await conn.close()
    events = EventStore(service_db.pool, EVENTS)
    for stream in ("s-a", "s-b", "s-C", "s-d"):
        for i in range(3):
            await note(events, stream, f"{stream} note {i + 1}")
    sealer = Sealer(service_db.schema, service_db.pool, service_db.app_url, "127.0.0.1:1", scratch_dir / "keys")
    await seal_everything(sealer)
    await sealer.checkpoint(None)
    for jobs in (1, 2):
        report = await audit.verify(
            service_db.admin_url, [service_db.schema], scratch_dir / "keys", jobs=jobs, parallel_from=1
        )
        assert report.ok, report.lines()
        [summary] = report.services
        assert (summary.events, summary.streams, summary.log_entries) == (12, 4, 12), (jobs, report.lines())


def test_proofs_collected_while_streaming_equal_the_reference_proofs() -> None:
    leaves = [merkle.leaf_hash(i.to_bytes(4, "big")) for i in range(70)]
    pairs = [(m, n) for m in range(1, 70, 3) for n in (m + 1, m + 5, 70) if n <= 70]
    stream = audit.LeafStream({n for _, n in pairs} | {0}, pairs)
    for leaf in leaves:
        stream.append(leaf)
    assert stream.roots[0] == merkle.EMPTY_ROOT
    for m, n in pairs:
        assert stream.roots[n] == merkle.root(leaves[:n])
        proof = stream.consistency_proof(m, n)
        assert proof == merkle.consistency_proof(leaves, m, n), (m, n)
        assert merkle.verify_consistency(m, n, merkle.root(leaves[:m]), merkle.root(leaves[:n]), proof)


async def test_kafka_remembers_what_was_published(built: Built, broker: EmbeddedBroker) -> None:
    """The service's topic and the checkpoint topic, as a relay and the sealer fill them, against the store."""
    topic = kafka.events_topic(built.schema)
    await kafka.ensure_topics(broker.bootstrap, [topic, CHECKPOINT_TOPIC], partitions=1)
    producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks="all")
    await producer.start()
    try:
        for _, env in await store.read_after(built.sealer.pool, store.START, 100):
            message = kafka.to_message(built.schema, env)
            await producer.send_and_wait(topic, key=message.key, value=message.value, headers=message.headers)
        for record in built.held:
            await producer.send_and_wait(
                CHECKPOINT_TOPIC, key=record["origin"].encode(), value=json.dumps(record).encode()
            )
    finally:
        await producer.stop()

    async def verify() -> audit.Report:
        return await audit.verify(built.admin_url, [built.schema], built.keys, kafka_bootstrap=broker.bootstrap)

    report = await verify()
    assert report.ok, report.lines()
    assert report.services[0].topic_records == 11 and report.services[0].external_checkpoints == 2

    await _re_sign(built, await _rewrite_history(built))
    report = await verify()
    failure = first(report)
    assert failure.where == f"checkpoint tree_size 7 (published on {CHECKPOINT_TOPIC})", report.lines()
    assert "the history was rewritten" in failure.what
    assert any(
        f.where == "stream s-a version 2" and f"topic {topic} partition 0 offset 1 carries hash" in f.what
        for f in report.failures
    ), report.lines()

    await tamper(built, "DELETE FROM events WHERE stream_id = 's-d' AND stream_version = 2")
    report = await verify()
    assert any(
        f.where == f"topic {topic} partition 0 offset 10" and "not in the store" in f.what for f in report.failures
    ), report.lines()
