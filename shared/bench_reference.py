"""The benchmark's reference side: the same workloads through the ``eventsourcing`` library.

Its PostgreSQL recorder, mapper and JSON transcoder, as an application built on it would
use them. It is synchronous (psycopg 3), so concurrent writers are threads, as in its docs.
"""

from __future__ import annotations

import threading
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from eventsourcing.domain import DomainEvent
from eventsourcing.persistence import DatetimeAsISO, JSONTranscoder, Mapper, UUIDAsHex
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore

from shared.bench import ES_SCHEMA, MemoryWatch, Projection, bench_event, libpq_params


class ProgressRecorded(DomainEvent):
    """The same fields as ``shared.bench.BenchEventRecorded``."""

    project_id: str
    society: str
    milestone: str
    summary: str
    amount_fen: int
    indicators: list[str]
    recorded_on: str


class Reference:
    """The same workloads through ``eventsourcing`` 9.x: its mapper, JSON transcoder and recorder.

    It is synchronous (psycopg 3), so concurrent writers are threads, as in its own docs.
    """

    def __init__(self, admin_url: str, *, pool_size: int) -> None:
        params = libpq_params(admin_url)
        self.transport = "Unix socket" if str(params["host"]).startswith("/") else f"TCP {params['host']}"
        self.datastore = PostgresDatastore(
            params["dbname"],
            params["host"],
            params["port"],
            params["user"],
            params["password"],
            pool_size=pool_size,
            schema=ES_SCHEMA,
        )
        self.recorder = PostgresApplicationRecorder(self.datastore)
        transcoder = JSONTranscoder()
        transcoder.register(UUIDAsHex())
        transcoder.register(DatetimeAsISO())
        self.mapper: Any = Mapper(transcoder=transcoder)

        self.event_class = ProgressRecorded

    def create_table(self) -> None:
        self.recorder.create_table()

    def close(self) -> None:
        self.datastore.close()

    def stored(self, originator: uuid.UUID, version: int, n: int) -> Any:
        fields = bench_event(n).model_dump()
        event = self.event_class(
            originator_id=originator, originator_version=version, timestamp=datetime.now(UTC), **fields
        )
        return self.mapper.to_stored_event(event)

    def single_appends(self, writers: int, per_writer: int) -> tuple[float, list[float]]:
        latencies: list[float] = []
        lock = threading.Lock()

        def writer(number: int) -> None:
            originator = uuid.uuid4()
            mine = []
            for version in range(1, per_writer + 1):
                began = time.perf_counter()
                self.recorder.insert_events([self.stored(originator, version, number * per_writer + version)])
                mine.append(time.perf_counter() - began)
            with lock:
                latencies.extend(mine)

        threads = [threading.Thread(target=writer, args=(n,)) for n in range(writers)]
        began = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return time.perf_counter() - began, latencies

    def batched_appends(self, batches: int, batch_size: int, *, offset: int = 0) -> float:
        began = time.perf_counter()
        for b in range(batches):
            originator = uuid.uuid4()
            self.recorder.insert_events(
                [self.stored(originator, i + 1, offset + b * batch_size + i) for i in range(batch_size)]
            )
        return time.perf_counter() - began

    def replay(self, watch: MemoryWatch, batch_size: int = 5000) -> tuple[int, float]:
        """Read every notification in order and map it back to a domain event, as its projections do."""
        projection = Projection()
        apply = projection.apply
        began = time.perf_counter()
        start = 1
        while True:
            notifications = self.recorder.select_notifications(start, batch_size)
            if not notifications:
                break
            for notification in notifications:
                apply(self.mapper.to_domain_event(notification))
            start = notifications[-1].id + 1
            watch.sample()
        return projection.events, time.perf_counter() - began
