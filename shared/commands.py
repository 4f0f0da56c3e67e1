"""The one path from a command to stored events, used by every service.

Load the stream, fold it with ``evolve``, ``decide``, append at the version that was
read, run the service's projector and record the idempotency key — all in one
transaction. A concurrent writer makes the append fail; the command is then decided
again on the new state (deciders are pure, so retrying is safe).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import asyncpg
import structlog

from shared import db, store
from shared.db import Connection
from shared.envelope import GENESIS_HASH, Envelope, Recorded
from shared.errors import ConcurrencyConflict, InvalidInput
from shared.messages import Aggregate, Command, Event, EventRegistry

log = structlog.get_logger(__name__)

S = TypeVar("S")

Projector = Callable[[Connection, Recorded, Event], Awaitable[None]]
"""Updates a service's read models for one new event, inside the append transaction."""

MAX_ATTEMPTS = 10

SNAPSHOT_EVERY = 100
"""A stream whose aggregate has a ``state_model`` keeps its folded state every this many versions."""


@dataclass(frozen=True)
class Idempotency:
    """A client's ``Idempotency-Key`` with the hash of the request it was first used for."""

    principal: str
    key: str
    request_hash: str

    @staticmethod
    def for_request(principal: str, key: str, method: str, path: str, body: bytes) -> Idempotency:
        digest = hashlib.sha256(f"{method} {path}\n".encode() + body).hexdigest()
        return Idempotency(principal=principal, key=key, request_hash=digest)


@dataclass(frozen=True)
class CommandResult:
    """What a command did: the stream, its version after the command, and new events."""

    stream_id: str
    version: int
    events: Sequence[Envelope]
    replayed: bool = False
    body: dict[str, Any] | None = None

    def as_json(self) -> dict[str, Any]:
        if self.body is not None:
            return self.body
        return {
            "stream_id": self.stream_id,
            "version": self.version,
            "appended": [
                {
                    "event_id": str(e.event_id),
                    "event_type": e.event_type,
                    "stream_version": e.stream_version,
                    "position": e.position,
                }
                for e in self.events
            ],
        }


async def _store_snapshot(
    conn: Connection | asyncpg.Pool, stream_id: str, version: int, latest: datetime, state: Any
) -> None:
    """Keep the folded state at ``version``; ``latest`` is the latest ``occurred_at`` up to it."""
    await conn.execute(
        """INSERT INTO snapshots (stream_id, version, occurred_at, state) VALUES ($1, $2, $3, $4)
           ON CONFLICT DO NOTHING""",
        stream_id,
        version,
        latest,
        state.model_dump(mode="json"),
    )


class _ReplayStored(Exception):
    """Rolls back a transaction whose idempotency key was recorded concurrently."""


class EventStore:
    """A service's event store: its pool, its event types and its projector."""

    def __init__(self, pool: asyncpg.Pool, events: EventRegistry, projector: Projector | None = None) -> None:
        self.pool = pool
        self.events = events
        self.projector = projector

    def decode(self, envelope: Envelope) -> Event:
        return self.events.decode(envelope.event_type, envelope.schema_version, envelope.payload)

    async def load(
        self, aggregate: Aggregate[S], stream_id: str, conn: Connection | asyncpg.Pool | None = None
    ) -> tuple[S, int, list[Envelope]]:
        """Fold a stream into its current state; also returns its version and envelopes."""
        envelopes = await store.read_stream(conn or self.pool, stream_id)
        state = aggregate.initial()
        for envelope in envelopes:
            state = aggregate.evolve(state, self.decode(envelope))
        return state, len(envelopes), envelopes

    async def state_as_of(self, aggregate: Aggregate[S], stream_id: str, at: datetime) -> tuple[S, int]:
        """The stream's state after the events that had happened by ``at``, and how many that was.

        Folding stops at the first event that happened after ``at``. With snapshots (an
        aggregate with a ``state_model``) it starts from the latest snapshot whose events all
        happened by ``at``, so the cost does not grow with the stream's history; snapshots
        missing for older streams are written on the way, once.
        """
        state, version, latest = aggregate.initial(), 0, None
        if aggregate.state_model is not None:
            row = await self.pool.fetchrow(
                """SELECT version, occurred_at, state FROM snapshots WHERE stream_id = $1 AND occurred_at <= $2
                   ORDER BY version DESC LIMIT 1""",
                stream_id,
                at,
            )
            if row is not None:
                try:
                    state = aggregate.state_model.model_validate(row["state"])
                    version, latest = row["version"], row["occurred_at"]
                except ValueError:  # a snapshot of an older state shape: fold from the start
                    log.warning("snapshot no longer readable; folding from the start", stream_id=stream_id)
        missing: list[tuple[int, datetime, S]] = []
        while True:
            envelopes = await store.read_stream_after(self.pool, stream_id, version, SNAPSHOT_EVERY)
            for envelope in envelopes:
                if envelope.occurred_at > at:
                    break
                state = aggregate.evolve(state, self.decode(envelope))
                version = envelope.stream_version
                latest = envelope.occurred_at if latest is None else max(latest, envelope.occurred_at)
                if aggregate.state_model is not None and version % SNAPSHOT_EVERY == 0:
                    missing.append((version, latest, state))
            else:
                if len(envelopes) == SNAPSHOT_EVERY:
                    continue
            break
        if missing:
            async with self.pool.acquire() as conn:
                for number, moment, snapshot in missing:
                    await _store_snapshot(conn, stream_id, number, moment, snapshot)
        return state, version

    async def execute(
        self,
        aggregate: Aggregate[S],
        stream_id: str,
        command: Command,
        *,
        correlation_id: uuid.UUID,
        causation_id: uuid.UUID | None = None,
        idempotency: Idempotency | None = None,
    ) -> CommandResult:
        """Decide ``command`` against the stream and store what it decided, exactly once."""
        if idempotency is not None:
            stored = await self._stored_response(self.pool, idempotency)
            if stored is not None:
                return stored
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                async with self.pool.acquire() as conn, conn.transaction():
                    result = await self._decide_and_append(
                        conn, aggregate, stream_id, command, correlation_id, causation_id, idempotency
                    )
                store.note_committed()
                return result
            except ConcurrencyConflict:
                log.info("append conflict; deciding again", stream_id=stream_id, attempt=attempt)
                if attempt == MAX_ATTEMPTS:
                    raise
                # Jitter so that writers who collided do not collide again in lockstep.
                await asyncio.sleep(random.uniform(0, 0.005 * attempt))
            except _ReplayStored:
                assert idempotency is not None
                stored = await self._stored_response(self.pool, idempotency)
                assert stored is not None
                return stored
        raise AssertionError("unreachable")

    async def execute_within(
        self,
        conn: Connection,
        aggregate: Aggregate[S],
        stream_id: str,
        command: Command,
        *,
        correlation_id: uuid.UUID,
        causation_id: uuid.UUID | None = None,
    ) -> CommandResult:
        """Like ``execute``, inside the caller's transaction (a consumer's inbox transaction).

        Each attempt runs in a savepoint, so a concurrent writer only costs a retry. Within a
        ``db.batch`` there is no savepoint (two round trips fewer) and no retry here: a failure
        spoils the batch, which is rolled back and applied event by event, each with its savepoint.
        """
        batch = db.current_batch()
        if batch is not None:
            try:
                return await self._decide_and_append(
                    conn, aggregate, stream_id, command, correlation_id, causation_id, None
                )
            except BaseException:
                batch.spoiled = True
                raise
        for attempt in range(1, MAX_ATTEMPTS + 1):
            try:
                async with conn.transaction():
                    return await self._decide_and_append(
                        conn, aggregate, stream_id, command, correlation_id, causation_id, None
                    )
            except ConcurrencyConflict:
                if attempt == MAX_ATTEMPTS:
                    raise
                await asyncio.sleep(random.uniform(0, 0.005 * attempt))
        raise AssertionError("unreachable")

    async def _decide_and_append(
        self,
        conn: Connection,
        aggregate: Aggregate[S],
        stream_id: str,
        command: Command,
        correlation_id: uuid.UUID,
        causation_id: uuid.UUID | None,
        idempotency: Idempotency | None,
    ) -> CommandResult:
        state, version, loaded = await self.load(aggregate, stream_id, conn)
        new_events = aggregate.decide(state, command)
        envelopes: list[Envelope] = []
        if new_events:
            meta = store.Metadata(
                actor=command.issued_by,
                jurisdiction=aggregate.jurisdiction_of(state, command),
                occurred_at=command.issued_at,
                correlation_id=correlation_id,
                causation_id=causation_id,
            )
            head = (version, loaded[-1].hash if loaded else GENESIS_HASH)
            envelopes = await store.append(conn, stream_id, aggregate.stream_type, version, new_events, meta, head=head)
            if self.projector is not None:
                for envelope, event in zip(envelopes, new_events, strict=True):
                    await self.projector(conn, envelope, event)
            if (
                aggregate.state_model is not None
                and version // SNAPSHOT_EVERY != (version + len(envelopes)) // SNAPSHOT_EVERY
            ):
                after = state
                for event in new_events:
                    after = aggregate.evolve(after, event)
                latest = max(e.occurred_at for e in (*loaded, *envelopes))
                await _store_snapshot(conn, stream_id, version + len(envelopes), latest, after)
        result = CommandResult(stream_id=stream_id, version=version + len(envelopes), events=envelopes)
        if idempotency is not None:
            inserted = await conn.fetchval(
                """INSERT INTO idempotency_keys (principal, key, request_hash, status, body)
                   VALUES ($1, $2, $3, 200, $4) ON CONFLICT DO NOTHING RETURNING 1""",
                idempotency.principal,
                idempotency.key,
                idempotency.request_hash,
                result.as_json(),
            )
            if inserted is None:
                raise _ReplayStored()
        return result

    async def _stored_response(self, conn: Connection | asyncpg.Pool, idempotency: Idempotency) -> CommandResult | None:
        row = await conn.fetchrow(
            "SELECT request_hash, body FROM idempotency_keys WHERE principal = $1 AND key = $2",
            idempotency.principal,
            idempotency.key,
        )
        if row is None:
            return None
        if row["request_hash"] != idempotency.request_hash:
            raise InvalidInput(
                "idempotency_key_reused",
                "this Idempotency-Key was already used for a different request",
            )
        body = row["body"] if isinstance(row["body"], dict) else json.loads(row["body"])
        return CommandResult(stream_id=body["stream_id"], version=body["version"], events=(), replayed=True, body=body)
