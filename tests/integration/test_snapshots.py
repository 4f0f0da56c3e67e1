"""State as of a moment from snapshots gives exactly what folding the whole stream gives."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.supervision import domain
from services.supervision.domain import CASE
from shared import store
from shared.bench import long_case
from shared.commands import SNAPSHOT_EVERY, EventStore
from tests.conftest import ServiceDb

START = datetime(2026, 1, 1, tzinfo=UTC)


async def folded(es: EventStore, stream: str, at: datetime) -> tuple[domain.CaseState, int]:
    state, version = domain.initial_case(), 0
    for envelope in await store.read_stream(es.pool, stream):
        if envelope.occurred_at > at:
            break
        state, version = domain.evolve_case(state, es.decode(envelope)), envelope.stream_version
    return state, version


async def test_as_of_from_snapshots_equals_the_full_fold(service_db: ServiceDb) -> None:
    es = EventStore(service_db.pool, domain.EVENTS)
    stream = await long_case(service_db.pool, 3 * SNAPSHOT_EVERY + 18, START, per_hour=1)
    moments = [START - timedelta(minutes=1), START, START + timedelta(minutes=30)]
    moments += [START + timedelta(hours=h, minutes=m) for h in (99, 100, 101, 250, 317, 318, 400) for m in (0, 5)]
    for at in moments:  # the first pass writes the snapshots, the second reads them
        assert await es.state_as_of(CASE, stream, at) == await folded(es, stream, at), at
    snapshots = await service_db.pool.fetch(
        "SELECT version, occurred_at FROM snapshots WHERE stream_id = $1 ORDER BY version", stream
    )
    assert [r["version"] for r in snapshots] == [SNAPSHOT_EVERY, 2 * SNAPSHOT_EVERY, 3 * SNAPSHOT_EVERY]
    assert snapshots[0]["occurred_at"] == START + timedelta(hours=SNAPSHOT_EVERY - 1)
    for at in moments:
        assert await es.state_as_of(CASE, stream, at) == await folded(es, stream, at), at


async def test_an_unreadable_snapshot_is_ignored_not_trusted(service_db: ServiceDb) -> None:
    es = EventStore(service_db.pool, domain.EVENTS)
    stream = await long_case(service_db.pool, SNAPSHOT_EVERY + 6, START, per_hour=1)
    await service_db.pool.execute(
        "INSERT INTO snapshots (stream_id, version, occurred_at, state) VALUES ($1, $2, $3, $4)",
        stream,
        SNAPSHOT_EVERY,
        START,
        {"phase": "no such phase"},
    )
    end = START + timedelta(days=30)
    assert await es.state_as_of(CASE, stream, end) == await folded(es, stream, end)
