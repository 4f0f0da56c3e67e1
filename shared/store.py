"""The event store: append with an expected version, read a stream, tail the whole log.

Appends never lock the table. Concurrent writers to one stream race on the unique
(stream_id, stream_version) key; the loser gets ``ConcurrencyConflict`` and wrote nothing.

Tailing uses the transaction-id horizon: a row is handed to a tail only once every
transaction older than the oldest one still running has finished, so a position taken
early but committed late is never skipped. The horizon is cluster-wide: one long
transaction anywhere holds every tail back, which ``log_lag`` makes visible.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import itertools
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg
import msgspec

from shared.db import Connection, Wakeup
from shared.envelope import GENESIS_HASH, Envelope, canonical_bytes, chain_hash
from shared.errors import ConcurrencyConflict
from shared.messages import Event, EventRegistry
from shared.principal import Principal, Role

COLUMNS = """position, stream_id, stream_type, stream_version, event_id, event_type,
    schema_version, occurred_at, recorded_at, actor_subject, actor_org, actor_role,
    actor_jurisdiction, jurisdiction, correlation_id, causation_id, payload, prev_hash, hash"""

_WIDTH = len(COLUMNS.split(","))

_VISIBLE = "xact_id < pg_snapshot_xmin(pg_current_snapshot())"


@dataclass(frozen=True)
class Metadata:
    """What every event of one append shares: who, where, when, and why (correlation)."""

    actor: Principal
    jurisdiction: str
    occurred_at: datetime
    correlation_id: uuid.UUID
    causation_id: uuid.UUID | None = None


@functools.lru_cache(maxsize=4096)
def _actor(subject: str, organisation: str, role: str, jurisdiction: str) -> Principal:
    """Actors repeat across a store: each distinct one is validated once, then shared (it is frozen)."""
    return Principal(subject=subject, organisation=organisation, role=Role(role), jurisdiction=jurisdiction)


def envelope_from_record(record: asyncpg.Record) -> Envelope:
    """The envelope of a row whose first columns are ``COLUMNS``, in that order.

    Read by position, not by name: replays and audits build millions of envelopes, and a
    row's columns by name cost twice as much.
    """
    (
        position,
        stream_id,
        stream_type,
        stream_version,
        event_id,
        event_type,
        schema_version,
        occurred_at,
        recorded_at,
        actor_subject,
        actor_org,
        actor_role,
        actor_jurisdiction,
        jurisdiction,
        correlation_id,
        causation_id,
        payload,
        prev_hash,
        hash_,
    ) = record[:_WIDTH]
    return Envelope(
        stream_id,
        stream_type,
        stream_version,
        event_id,
        event_type,
        schema_version,
        occurred_at,
        _actor(actor_subject, actor_org, actor_role, actor_jurisdiction),
        jurisdiction,
        correlation_id,
        causation_id,
        payload,
        prev_hash,
        hash_,
        position,
        recorded_at,
    )


async def stream_head(conn: Connection | asyncpg.Pool, stream_id: str) -> tuple[int, bytes]:
    """The current version of a stream (0 when empty) and the hash its next event chains to."""
    row = await conn.fetchrow(
        "SELECT stream_version, hash FROM events WHERE stream_id = $1 ORDER BY stream_version DESC LIMIT 1",
        stream_id,
    )
    if row is None:
        return 0, GENESIS_HASH
    return row["stream_version"], bytes(row["hash"])


async def append(
    conn: Connection,
    stream_id: str,
    stream_type: str,
    expected_version: int,
    events: Sequence[Event],
    meta: Metadata,
    *,
    event_ids: Sequence[uuid.UUID] | None = None,
    head: tuple[int, bytes] | None = None,
) -> list[Envelope]:
    """Append ``events`` to a stream that must be at ``expected_version``; returns the envelopes.

    Must run inside a transaction owned by the caller, so projections and idempotency
    records commit together with the events. A caller that has just read the stream gives
    its ``head`` (version, hash) and saves a round trip; if the stream moved on since, the
    unique (stream, version) key refuses the insert just the same.
    """
    if not conn.is_in_transaction():
        raise RuntimeError("append must run inside a transaction")
    current, prev_hash = head if head is not None else await stream_head(conn, stream_id)
    if current != expected_version:
        raise ConcurrencyConflict(
            "wrong_expected_version",
            f"stream {stream_id} is at version {current}, not {expected_version}",
            stream_id=stream_id,
            actual_version=current,
        )
    envelopes: list[Envelope] = []
    sending: asyncio.Future[list[asyncpg.Record]] | None = None
    try:
        # A large append goes in chunks, and each chunk is hashed while the server inserts the
        # one before: the client's hashing and the server's inserting overlap instead of adding up.
        for first in range(0, len(events), APPEND_CHUNK):
            chunk = _envelopes(
                stream_id,
                stream_type,
                expected_version + first,
                events[first : first + APPEND_CHUNK],
                meta,
                event_ids[first : first + APPEND_CHUNK] if event_ids else None,
                prev_hash,
            )
            prev_hash = chunk[-1].hash
            if sending is not None:
                _complete(envelopes, await sending)
                sending = None
            envelopes.extend(chunk)
            if first + APPEND_CHUNK >= len(events):  # the last chunk (most appends' only one)
                _complete(envelopes, await _insert(conn, stream_id, stream_type, meta, chunk))
            else:
                sending = asyncio.ensure_future(_insert(conn, stream_id, stream_type, meta, chunk))
                await asyncio.sleep(0)  # the insert is on its way before the next chunk is hashed
    except asyncpg.UniqueViolationError as exc:
        if exc.constraint_name == "events_stream_version_key":
            raise ConcurrencyConflict(
                "wrong_expected_version",
                f"stream {stream_id} was appended to concurrently; nothing was written",
                stream_id=stream_id,
            ) from exc
        raise
    finally:
        if sending is not None and not sending.done():  # hashing failed: let the connection settle
            with contextlib.suppress(Exception):
                await sending
    return envelopes


APPEND_CHUNK = 250
"""Events per INSERT of one append: large enough to amortise a round trip, small enough to overlap."""


def _envelopes(
    stream_id: str,
    stream_type: str,
    after_version: int,
    events: Sequence[Event],
    meta: Metadata,
    event_ids: Sequence[uuid.UUID] | None,
    prev_hash: bytes,
) -> list[Envelope]:
    """The envelopes of consecutive events, each hash chained to the one before."""
    envelopes: list[Envelope] = []
    for index, event in enumerate(events):
        version = after_version + index + 1
        event_id = event_ids[index] if event_ids else uuid.uuid4()
        payload = event.model_dump(mode="json")
        digest = chain_hash(
            canonical_bytes(
                stream_id=stream_id,
                stream_type=stream_type,
                stream_version=version,
                event_id=event_id,
                event_type=event.event_type,
                schema_version=event.schema_version,
                occurred_at=meta.occurred_at,
                actor=meta.actor,
                jurisdiction=meta.jurisdiction,
                correlation_id=meta.correlation_id,
                causation_id=meta.causation_id,
                payload=payload,
                prev_hash=prev_hash,
            )
        )
        envelopes.append(
            Envelope(
                stream_id,
                stream_type,
                version,
                event_id,
                event.event_type,
                event.schema_version,
                meta.occurred_at,
                meta.actor,
                meta.jurisdiction,
                meta.correlation_id,
                meta.causation_id,
                payload,
                prev_hash,
                digest,
                None,
                None,
            )
        )
        prev_hash = digest
    return envelopes


_INSERT_COLUMNS = """INSERT INTO events (stream_id, stream_type, stream_version, event_id, event_type,
        schema_version, occurred_at, actor_subject, actor_org, actor_role, actor_jurisdiction,
        jurisdiction, correlation_id, causation_id, payload, prev_hash, hash)"""

_INSERT_ONE = f"""{_INSERT_COLUMNS}
    VALUES ($1, $2, $11, $12, $13, $14, $3, $4, $5, $6, $7, $8, $9, $10, $15, $16, $17)
    RETURNING position, recorded_at"""

_INSERT_MANY = f"""{_INSERT_COLUMNS}
    SELECT $1, $2, e.stream_version, e.event_id, e.event_type, e.schema_version, $3, $4, $5, $6, $7,
        $8, $9, $10, e.payload, e.prev_hash, e.hash
    FROM unnest($11::int[], $12::uuid[], $13::text[], $14::int[], $15::jsonb[], $16::bytea[],
        $17::bytea[]) AS e (stream_version, event_id, event_type, schema_version, payload, prev_hash, hash)
    RETURNING position, recorded_at"""


async def _insert(
    conn: Connection, stream_id: str, stream_type: str, meta: Metadata, envelopes: Sequence[Envelope]
) -> list[asyncpg.Record]:
    """One INSERT of consecutive envelopes; the database's position and time come back."""
    # What one append shares (stream, actor, place, time, correlation) travels once, as
    # scalars; only what differs per event travels as arrays. Most commands append one
    # event, and for one the arrays would cost the client a fifth more CPU than scalars
    # (asyncpg inspects every array and element it encodes): that one goes as a row of values.
    shared = (
        stream_id,
        stream_type,
        meta.occurred_at,
        meta.actor.subject,
        meta.actor.organisation,
        meta.actor.role.value,
        meta.actor.jurisdiction,
        meta.jurisdiction,
        meta.correlation_id,
        meta.causation_id,
    )
    if len(envelopes) == 1:
        [e] = envelopes
        return await conn.fetch(
            _INSERT_ONE,
            *shared,
            e.stream_version,
            e.event_id,
            e.event_type,
            e.schema_version,
            e.payload,
            e.prev_hash,
            e.hash,
        )
    return await conn.fetch(
        _INSERT_MANY,
        *shared,
        [e.stream_version for e in envelopes],
        [e.event_id for e in envelopes],
        [e.event_type for e in envelopes],
        [e.schema_version for e in envelopes],
        [e.payload for e in envelopes],
        [e.prev_hash for e in envelopes],
        [e.hash for e in envelopes],
    )


def _complete(envelopes: list[Envelope], rows: list[asyncpg.Record]) -> None:
    """Give the last inserted envelopes the database's position and time (they are not yet shared)."""
    for envelope, row in zip(envelopes[len(envelopes) - len(rows) :], rows, strict=True):
        msgspec.structs.force_setattr(envelope, "position", row["position"])
        msgspec.structs.force_setattr(envelope, "recorded_at", row["recorded_at"])


async def read_stream(conn: Connection | asyncpg.Pool, stream_id: str) -> list[Envelope]:
    rows = await conn.fetch(f"SELECT {COLUMNS} FROM events WHERE stream_id = $1 ORDER BY stream_version", stream_id)
    return [envelope_from_record(r) for r in rows]


async def read_stream_after(
    conn: Connection | asyncpg.Pool, stream_id: str, after_version: int, limit: int
) -> list[Envelope]:
    """Up to ``limit`` events of a stream after ``after_version``, in version order."""
    rows = await conn.fetch(
        f"""SELECT {COLUMNS} FROM events WHERE stream_id = $1 AND stream_version > $2
            ORDER BY stream_version LIMIT $3""",
        stream_id,
        after_version,
        limit,
    )
    return [envelope_from_record(r) for r in rows]


Cursor = tuple[int, int]
"""(transaction id, position) of the last event read: the order in which tails read."""

START: Cursor = (0, 0)


async def read_after(conn: Connection | asyncpg.Pool, after: Cursor, limit: int) -> list[tuple[Cursor, Envelope]]:
    """Events after ``after`` in (transaction id, position) order, below the commit horizon.

    Positions are taken when a row is inserted, not when its transaction commits, so a
    reader going by position alone could pass a position whose transaction is still
    running and never come back to it. Transaction ids, on the other hand, are never
    handed out below the oldest running transaction (the horizon): every event of a
    transaction below it is final, and every later one sorts after it. Reading in
    (transaction id, position) order up to the horizon therefore never skips an event.
    Only the sealer tails this way; everyone else follows its dense log (``read_log``).
    """
    return [(_cursor(r), envelope_from_record(r)) for r in await _rows_after(conn, after, limit)]


async def _rows_after(
    conn: Connection | asyncpg.Pool, after: Cursor, limit: int, columns: str = COLUMNS
) -> list[asyncpg.Record]:
    """The rows ``read_after`` reads: ``columns``, position first, then the transaction id."""
    return await conn.fetch(
        f"""SELECT {columns}, xact_id::text::bigint AS xid FROM events
            WHERE (xact_id, position) > ($1::text::xid8, $2::bigint) AND {_VISIBLE}
            ORDER BY xact_id, position LIMIT $3""",
        str(after[0]),
        after[1],
        limit,
    )


def _cursor(row: asyncpg.Record) -> Cursor:
    # The transaction id is the last column; position, the first.
    return (row[-1], row[0])


async def read_versions(conn: Connection | asyncpg.Pool, stream_id: str, first: int, below: int) -> list[Envelope]:
    """Versions ``first`` .. ``below - 1`` of a stream that are not yet sealed (for the sealer)."""
    rows = await conn.fetch(
        f"""SELECT {COLUMNS} FROM events e WHERE stream_id = $1 AND stream_version >= $2 AND stream_version < $3
            AND NOT EXISTS (SELECT 1 FROM log_entries l WHERE l.position = e.position) ORDER BY stream_version""",
        stream_id,
        first,
        below,
    )
    return [envelope_from_record(r) for r in rows]


async def read_log(conn: Connection | asyncpg.Pool, after_index: int, limit: int) -> list[tuple[int, Envelope]]:
    """Sealed events with log index >= ``after_index``, in log order: dense, never skipping."""
    rows = await conn.fetch(
        f"""SELECT {", ".join("e." + c.strip() for c in COLUMNS.split(","))}, l.log_index
            FROM log_entries l JOIN events e USING (position)
            WHERE l.log_index >= $1 ORDER BY l.log_index LIMIT $2""",
        after_index,
        limit,
    )
    return [(int(r["log_index"]), envelope_from_record(r)) for r in rows]


async def tail(conn: Connection | asyncpg.Pool, batch_size: int = 500) -> AsyncIterator[list[Envelope]]:
    """Yield every visible event in tail order, in batches, until caught up."""
    cursor = START
    while batch := await read_after(conn, cursor, batch_size):
        yield [envelope for _, envelope in batch]
        cursor = batch[-1][0]


class Replayed(msgspec.Struct, frozen=True):
    """A stored event as a replay gives it to projections (``Recorded``): 8 of an envelope's
    16 fields. The other columns (the hash chain, the correlation, the recording time, the
    stream type) are not read: they made a third of reading a row, and only the audit, which
    reads whole envelopes, needs them."""

    stream_id: str
    stream_version: int
    event_id: uuid.UUID
    event_type: str
    occurred_at: datetime
    actor: Principal
    jurisdiction: str
    position: int


REPLAY_COLUMNS = """position, stream_id, stream_version, event_id, event_type, schema_version, occurred_at,
    actor_subject, actor_org, actor_role, actor_jurisdiction, jurisdiction,
    convert_to(payload::text, 'UTF8') AS payload"""
"""The payload comes as its JSON text in UTF-8 bytes (``bytea``, which the driver hands over
as it is), for ``EventRegistry.decode_json``: the ``jsonb`` codec would parse it into a
dictionary only for pydantic to check and drop it. Replays read and decode a quarter faster."""


def _replayed(rows: list[asyncpg.Record], decode: Callable[[str, int, bytes], Event]) -> list[tuple[Replayed, Event]]:
    """Each row of ``REPLAY_COLUMNS`` (and the transaction id) as a ``Replayed`` and its event."""
    return [
        (
            Replayed(
                stream_id,
                version,
                event_id,
                event_type,
                occurred_at,
                _actor(subject, org, role, where),
                jurisdiction,
                position,
            ),
            decode(event_type, schema_version, payload),
        )
        for (
            position,
            stream_id,
            version,
            event_id,
            event_type,
            schema_version,
            occurred_at,
            subject,
            org,
            role,
            where,
            jurisdiction,
            payload,
            _,
        ) in rows
    ]


async def replay(
    conn: Connection | asyncpg.Pool, registry: EventRegistry, batch_size: int = 1000
) -> AsyncIterator[list[tuple[Replayed, Event]]]:
    """Every visible event with its decoded domain event, in tail order, in bounded batches.

    What read-model rebuilds and replays use: memory stays at a couple of batches, whatever
    the history. Given a pool, the next batch is already being read (on another connection)
    while this one is decoded; given a connection, the caller may use it between batches.

    The cyclic garbage collector is kept off the batches, which make no reference cycles
    and are freed by reference counting. It waits while a batch is read and decoded, and
    while the caller applies it the batch sits in the permanent generation (``gc.freeze``),
    so the collections the caller's own work triggers do not rescan it: together a sixth of
    a replay's time. Each next batch puts everything back under the collector first
    (``gc.unfreeze``, also when the replay ends or is abandoned). Freezing takes whatever is
    alive at the time, the caller's cyclic garbage included, so every
    ``FULL_COLLECTION_EVERY`` batches a full collection runs with nothing frozen: such
    garbage lives that many batches at most. Nothing else in chengneng freezes objects; a
    process that relied on ``gc.freeze`` itself should not replay.
    """
    ahead = isinstance(conn, asyncpg.Pool)
    after = START
    reading = asyncio.ensure_future(_rows_after(conn, after, batch_size, REPLAY_COLUMNS))
    decoded: list[tuple[Replayed, Event]] = []
    try:
        for number in itertools.count(1):
            with _collector_paused():  # the rows of a batch are decoded while it is awaited
                gc.unfreeze()  # the previous batch, and whatever was alive with it
                if number % FULL_COLLECTION_EVERY == 0:
                    decoded = []
                    gc.collect()
                rows = await reading
                if not rows:
                    break
                after = _cursor(rows[-1])
                if ahead:
                    reading = asyncio.ensure_future(_rows_after(conn, after, batch_size, REPLAY_COLUMNS))
                decoded = _replayed(rows, registry.decode_json)
                del rows
                gc.freeze()
            yield decoded
            if not ahead:
                reading = asyncio.ensure_future(_rows_after(conn, after, batch_size, REPLAY_COLUMNS))
    finally:
        gc.unfreeze()
        if not reading.done():
            reading.cancel()
        # Abandoned: the batch read ahead is not wanted. If it failed meanwhile (a caller that
        # stopped early may close its pool first), its error is nobody's: retrieve it here.
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await reading


FULL_COLLECTION_EVERY = 64
"""Batches of a replay between full collections (see ``replay``)."""


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


_WOKEN_BY_COMMITS: set[Wakeup] = set()


def note_committed() -> None:
    """This process has just committed a transaction that may hold new events: wake its
    sealer now rather than at its next poll. Every event of a command passes the sealer and
    then a topic on its way out, so the poll was on every event's path."""
    for wakeup in _WOKEN_BY_COMMITS:
        wakeup.notify()


@contextlib.contextmanager
def woken_by_commits(wakeup: Wakeup) -> Iterator[None]:
    """While inside, every ``note_committed`` of this process notifies ``wakeup``."""
    _WOKEN_BY_COMMITS.add(wakeup)
    try:
        yield
    finally:
        _WOKEN_BY_COMMITS.discard(wakeup)


async def sealer_cursor(conn: Connection | asyncpg.Pool) -> Cursor:
    """Where the sealer has read up to: every event up to it is in the log."""
    row = await conn.fetchrow("SELECT xid, position FROM sealer_cursor")
    return (int(row["xid"]), int(row["position"])) if row else START


async def log_lag(conn: Connection | asyncpg.Pool, published: int) -> tuple[int, int]:
    """(events not yet published, of which not yet sealed), for a relay at log index ``published``.

    Counted from the ends, never over the whole history: an idle relay asks this several
    times a second, and a store of millions of events must not cost it a table scan each
    time. The log index is dense, so the sealed events number its highest index plus one;
    every event up to the sealer's cursor is sealed, so the unsealed ones lie after it
    (held back by the horizon, or just not reached yet), less the few sealed early as a
    stream's missing predecessor.
    """
    after = await sealer_cursor(conn)
    # The cursor goes in as parameters, not as a subquery: the planner must see its values
    # to walk the tail index from there rather than scan the table.
    row = await conn.fetchrow(
        """SELECT (SELECT coalesce(max(log_index) + 1, 0) FROM log_entries) AS sealed,
                  count(*) FILTER (WHERE NOT EXISTS (SELECT 1 FROM log_entries l WHERE l.position = e.position))
                      AS unsealed
           FROM events e WHERE (e.xact_id, e.position) > ($1::text::xid8, $2::bigint)""",
        str(after[0]),
        after[1],
    )
    assert row is not None
    sealed, unsealed = int(row["sealed"]), int(row["unsealed"])
    return sealed - published + unsealed, unsealed
