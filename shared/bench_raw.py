"""The bench's ceiling: the append and replay workloads with nothing of chengneng's in them.

The same rows, the same table (its columns, constraints, indexes and triggers), the same
server and driver (asyncpg; orjson writes the JSON, msgspec reads back the two fields the
replay folds), but no domain event, canonical JSON, hash chain, envelope or validation.
What the database and the driver alone cost is the most any event store on them could do
on this machine: the absolute targets of issue #9 are read against it.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from datetime import UTC, datetime

import asyncpg
import msgspec
import orjson

from shared import store
from shared.bench import WRITER, MemoryWatch, bench_event

INSERT_ONE = """INSERT INTO events (stream_id, stream_type, stream_version, event_id, event_type, schema_version,
        occurred_at, actor_subject, actor_org, actor_role, actor_jurisdiction, jurisdiction, correlation_id,
        payload, prev_hash, hash)
    VALUES ($1, 'bench', $2, $3, 'BenchEventRecorded', 1, $4, $5, $6, $7, $8, '510600', $9, $10, $11, $11)"""

COPIED = (
    "stream_id",
    "stream_type",
    "stream_version",
    "event_id",
    "event_type",
    "schema_version",
    "occurred_at",
    "actor_subject",
    "actor_org",
    "actor_role",
    "actor_jurisdiction",
    "jurisdiction",
    "correlation_id",
    "payload",
    "prev_hash",
    "hash",
)

NO_HASH = bytes(32)
"""Every row's hashes: the table wants 32 bytes; the ceiling computes no chain."""


async def create_pool(url: str, schema: str, size: int) -> asyncpg.Pool:
    """asyncpg as it comes, with orjson for jsonb in binary form: binary COPY wants a binary
    encoder for every column, and chengneng reads timestamps as text (``shared.db``). Like
    chengneng's pool, it skips asyncpg's reset query when a connection goes back."""

    async def init(conn: asyncpg.Connection) -> None:
        await conn.set_type_codec(
            "jsonb",
            encoder=lambda value: b"\x01" + orjson.dumps(value),
            decoder=lambda data: orjson.loads(data[1:]),
            schema="pg_catalog",
            format="binary",
        )

    async def keep(conn: asyncpg.Connection) -> None:
        return None

    pool = await asyncpg.create_pool(
        url, min_size=size, max_size=size, init=init, reset=keep, server_settings={"search_path": schema}
    )
    assert pool is not None
    return pool


async def single_appends(
    pool: asyncpg.Pool, writers: int, per_writer: int, *, in_transaction: bool = True
) -> tuple[float, list[float]]:
    """``writers`` concurrent writers, each inserting one row at a time into its own stream:
    in a transaction of its own (BEGIN, INSERT, COMMIT), as an append that commits with its
    projections must be, or alone (one round trip)."""
    latencies: list[float] = []

    async def writer(number: int) -> None:
        stream = f"raw-single-{uuid.uuid4()}"
        for version in range(1, per_writer + 1):
            payload = bench_event(number * per_writer + version).model_dump(mode="json")
            began = time.perf_counter()
            async with pool.acquire() as conn:
                arguments = (
                    stream,
                    version,
                    uuid.uuid4(),
                    datetime.now(UTC),
                    WRITER.subject,
                    WRITER.organisation,
                    WRITER.role.value,
                    WRITER.jurisdiction,
                    uuid.uuid4(),
                    payload,
                    NO_HASH,
                )
                if in_transaction:
                    async with conn.transaction():
                        await conn.execute(INSERT_ONE, *arguments)
                else:
                    await conn.execute(INSERT_ONE, *arguments)
            latencies.append(time.perf_counter() - began)

    began = time.perf_counter()
    await asyncio.gather(*(writer(n) for n in range(writers)))
    return time.perf_counter() - began, latencies


async def batched_appends(pool: asyncpg.Pool, batches: int, batch_size: int) -> float:
    """``batches`` transactions each copying ``batch_size`` rows of a new stream (binary COPY,
    the fastest way into PostgreSQL)."""
    began = time.perf_counter()
    for b in range(batches):
        stream, moment, correlation = f"raw-batch-{uuid.uuid4()}", datetime.now(UTC), uuid.uuid4()
        rows = [
            (
                stream,
                "bench",
                i + 1,
                uuid.uuid4(),
                "BenchEventRecorded",
                1,
                moment,
                WRITER.subject,
                WRITER.organisation,
                WRITER.role.value,
                WRITER.jurisdiction,
                "510600",
                correlation,
                bench_event(b * batch_size + i).model_dump(mode="json"),
                NO_HASH,
                NO_HASH,
            )
            for i in range(batch_size)
        ]
        async with pool.acquire() as conn, conn.transaction():
            await conn.copy_records_to_table("events", records=rows, columns=COPIED)
    return time.perf_counter() - began


class _Folded(msgspec.Struct):
    """The two payload fields ``Projection`` folds: all the ceiling's replay decodes."""

    milestone: str
    amount_fen: int


async def replay(pool: asyncpg.Pool, watch: MemoryWatch, batch_size: int = 1000) -> tuple[int, float]:
    """Every row of the store in position order, with the columns chengneng's replay reads,
    folded into the same figures as ``shared.bench.Projection`` from its payload's two fields
    (msgspec reads just those from the JSON text): no envelope, no whole domain event."""
    by_milestone: Counter[str] = Counter()
    amount_fen = events = 0
    after = 0
    decode = msgspec.json.Decoder(_Folded).decode
    began = time.perf_counter()
    while rows := await pool.fetch(
        f"SELECT {store.REPLAY_COLUMNS} FROM events WHERE position > $1 ORDER BY position LIMIT $2", after, batch_size
    ):
        for row in rows:
            folded = decode(row[-1])  # REPLAY_COLUMNS: position first, the payload's JSON text last
            by_milestone[folded.milestone] += 1
            amount_fen += folded.amount_fen
        events += len(rows)
        after = rows[-1][0]
        watch.sample()
    return events, time.perf_counter() - began
