"""`chengneng bench`: the performance figures of issue #9, measured on the real parts.

Every workload runs against a real PostgreSQL (the embedded one unless ``--database-url``)
and, where it needs one, the real broker and the real services. The side-by-side reference,
the ``eventsourcing`` library with its PostgreSQL recorder, runs the same append and read
workloads on the same server in the same run, so the ratio holds on a noisy machine.
Figures are printed as a table and written as JSON; nothing here asserts a speed.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import math
import os
import platform
import resource
import statistics
import sys
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

import asyncpg
import psutil

from shared import db, store
from shared.envelope import GENESIS_HASH
from shared.messages import Event, EventRegistry
from shared.principal import Principal, Role

SCHEMA = "bench"
"""Our side's schema; dropped and created again by every run (it holds only bench data)."""

ES_SCHEMA = "bench_es"
"""The reference library's schema."""

RAW_SCHEMA = "bench_raw"
"""The ceiling's schema: the same tables as ours, written by raw asyncpg (``shared.bench_raw``)."""

RAW = "raw asyncpg"
"""The ceiling's name in the table."""

WRITER = Principal(subject="bench-writer", organisation="bench", role=Role.DEPARTMENT, jurisdiction="510600")


class BenchEventRecorded(Event):
    """A progress report of a pilot project: about 300 bytes of JSON, like the real ones."""

    event_type: ClassVar[str] = "BenchEventRecorded"

    project_id: str
    society: str
    milestone: str
    summary: str
    amount_fen: int
    indicators: list[str]
    recorded_on: str


EVENTS = EventRegistry(BenchEventRecorded)


def bench_event(n: int) -> BenchEventRecorded:
    return BenchEventRecorded(
        project_id=f"deyang-pilot-{n % 97:03d}",
        society="德阳市软件行业协会",
        milestone=f"milestone-{n % 7}",
        summary="完成第三季度专业技术人员水平评价工作，组织评审两场，通过率符合协议约定的指标要求",
        amount_fen=1_250_000 + n,
        indicators=["satisfaction>=90%", "reports-on-time", "no-complaints"],
        recorded_on="2026-09-30",
    )


# --- results ----------------------------------------------------------------------------------


@dataclass
class Figure:
    """One measured row: what ran, on which side, how much, how fast."""

    workload: str
    system: str
    events: int
    seconds: float
    per_s: float
    p50_ms: float | None = None
    p99_ms: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Target:
    name: str
    goal: str
    measured: str
    met: bool


def percentile(samples: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of ``samples`` (seconds) in milliseconds."""
    if not samples:
        return float("nan")
    ordered = sorted(samples)
    rank = max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank] * 1000


def median_run(runs: Sequence[Figure], *, worst: Sequence[str] = ()) -> Figure:
    """The run with the median rate, every run's rate beside it, and the worst of ``worst`` extras
    (memory growth must hold in every run, not in the median one)."""
    ordered = sorted(runs, key=lambda f: f.per_s)
    figure = replace(ordered[len(ordered) // 2], extra=dict(ordered[len(ordered) // 2].extra))
    if len(runs) > 1:
        figure.extra["runs_per_s"] = [round(f.per_s) for f in runs]
    for name in worst:
        figure.extra[name] = max(f.extra[name] for f in runs)
    return figure


def rss_mb(pid: int | None = None) -> float:
    return psutil.Process(pid or os.getpid()).memory_info().rss / 2**20


def cpu_seconds(server: psutil.Process | None) -> tuple[float, float]:
    """CPU seconds so far of this process (the client, both sides' drivers) and of the database
    server (its postmaster and every process under it; NaN when the server is not ours to see).

    A backend that exits takes its CPU time with it: the replays read on pool connections
    that stay open for the whole run. The client's own time comes from ``getrusage``, to the
    microsecond: ``os.times`` counts in clock ticks (10 ms), which a quick replay can fit in.
    """
    own = resource.getrusage(resource.RUSAGE_SELF)
    client = own.ru_utime + own.ru_stime
    if server is None:
        return client, float("nan")
    total = 0.0
    for process in (server, *server.children(recursive=True)):
        with contextlib.suppress(psutil.NoSuchProcess):
            used = process.cpu_times()
            total += used.user + used.system
    return client, total


def cpu_per_event(before: tuple[float, float], after: tuple[float, float], events: int) -> dict[str, float]:
    """Microseconds of client and server CPU per event between two ``cpu_seconds`` readings."""
    figures = {"client_cpu_us": round(1e6 * (after[0] - before[0]) / events, 1)}
    if not math.isnan(after[1]):
        figures["server_cpu_us"] = round(1e6 * (after[1] - before[1]) / events, 1)
    return figures


class Results:
    """Collects figures and targets; prints the table and writes the JSON."""

    def __init__(self, out: Any = sys.stdout) -> None:
        self.figures: list[Figure] = []
        self.targets: list[Target] = []
        self.notes: list[str] = []
        self.out = out

    def add(self, figure: Figure) -> Figure:
        self.figures.append(figure)
        latency = ""
        if figure.p50_ms is not None:
            latency = f"  p50 {figure.p50_ms:7.2f} ms  p99 {figure.p99_ms:7.2f} ms"
        extra = "  " + ", ".join(f"{k}={v}" for k, v in figure.extra.items()) if figure.extra else ""
        print(
            f"  {figure.workload:<40} {figure.system:<14} {figure.events:>9,} ev "
            f"{figure.per_s:>12,.0f}/s{latency}{extra}",
            file=self.out,
            flush=True,
        )
        return figure

    def find(self, workload: str, system: str) -> Figure | None:
        return next((f for f in self.figures if f.workload == workload and f.system == system), None)

    def ratios(self) -> list[tuple[str, float, float, float]]:
        """(workload, ours/s, reference/s, ratio) for every workload both sides ran.

        Where the sides alternated in rounds, the ratio is the median of each round's own
        ratio: the two runs of a round are back to back, so a slow minute of the machine
        weighs on both, where the ratio of the two medians may pair a fast run with a slow one.
        """
        rows = []
        for ours in self.figures:
            if ours.system != "chengneng":
                continue
            ref = self.find(ours.workload, "eventsourcing")
            if ref is not None and ref.per_s > 0:
                paired = ours.extra.get("ratio_per_round")
                ratio = statistics.median(paired) if paired else ours.per_s / ref.per_s
                rows.append((ours.workload, ours.per_s, ref.per_s, ratio))
        return rows

    def ratio(self, workload: str) -> float | None:
        """The side-by-side ratio of ``workload`` as the table prints it; None without the reference."""
        return next((ratio for w, _, _, ratio in self.ratios() if w == workload), None)

    def target(self, name: str, goal: str, measured: str, met: bool) -> None:
        self.targets.append(Target(name, goal, measured, met))

    def print_summary(self) -> None:
        out = self.out
        rows = self.ratios()
        if rows:
            print(
                "\nside by side (chengneng / eventsourcing, same server, same run;"
                " with rounds, the median of each round's ratio)",
                file=out,
            )
            for workload, ours, ref, ratio in rows:
                print(f"  {workload:<40} {ours:>12,.0f}/s {ref:>12,.0f}/s   x{ratio:5.2f}", file=out)
        if self.targets:
            print("\ntargets (issue #9)", file=out)
            for t in self.targets:
                print(
                    f"  [{'met ' if t.met else 'MISS'}] {t.name:<34} goal {t.goal:<22} measured {t.measured}", file=out
                )
        for note in self.notes:
            print(f"note: {note}", file=out)

    def as_json(self, context: dict[str, Any]) -> dict[str, Any]:
        return {
            **context,
            "figures": [asdict(f) for f in self.figures],
            "side_by_side": [
                {"workload": w, "chengneng_per_s": o, "eventsourcing_per_s": r, "ratio": q}
                for w, o, r, q in self.ratios()
            ],
            "targets": [asdict(t) for t in self.targets],
            "notes": self.notes,
        }


def add_side_by_side(results: Results, runs: dict[str, list[Figure]], *, worst: Sequence[str] = ()) -> Figure:
    """Add the median run of each side; ours carries each round's ratio (the runs paired in order)."""
    ours = median_run(runs["chengneng"], worst=worst)
    theirs = runs.get("eventsourcing") or []
    if theirs:
        ours.extra["ratio_per_round"] = [
            round(o.per_s / r.per_s, 3) for o, r in zip(runs["chengneng"], theirs, strict=True)
        ]
    results.add(ours)
    if theirs:
        results.add(median_run(theirs, worst=worst))
    return ours


# --- our side: the event store --------------------------------------------------------------


async def fresh_schema(admin_url: str, schema: str, *, migrate: bool = True) -> None:
    """Drop and create ``schema``, with the core migrations (events, log, checkpoints ...) unless not ``migrate``."""
    await db.drop_service(admin_url, schema)
    if migrate:
        await db.migrate(admin_url, schema, [])
        return
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f"CREATE SCHEMA {schema}")
    finally:
        await conn.close()


def meta() -> store.Metadata:
    return store.Metadata(
        actor=WRITER, jurisdiction="510600", occurred_at=datetime.now(UTC), correlation_id=uuid.uuid4()
    )


async def ours_single_appends(pool: asyncpg.Pool, writers: int, per_writer: int) -> tuple[float, list[float]]:
    """``writers`` concurrent writers, each appending one event at a time to its own stream."""
    latencies: list[float] = []

    async def writer(number: int) -> None:
        stream = f"bench-single-{uuid.uuid4()}"
        head = (0, GENESIS_HASH)  # what a command path knows after loading the stream
        for version in range(per_writer):
            event = bench_event(number * per_writer + version)
            began = time.perf_counter()
            async with pool.acquire() as conn, conn.transaction():
                [stored] = await store.append(conn, stream, "bench", version, [event], meta(), head=head)
            latencies.append(time.perf_counter() - began)
            head = (stored.stream_version, stored.hash)

    began = time.perf_counter()
    await asyncio.gather(*(writer(n) for n in range(writers)))
    return time.perf_counter() - began, latencies


async def ours_batched_appends(pool: asyncpg.Pool, batches: int, batch_size: int, *, offset: int = 0) -> float:
    """``batches`` appends of ``batch_size`` events each, one new stream per batch."""
    began = time.perf_counter()
    for b in range(batches):
        events = [bench_event(offset + b * batch_size + i) for i in range(batch_size)]
        async with pool.acquire() as conn, conn.transaction():
            await store.append(conn, f"bench-batch-{uuid.uuid4()}", "bench", 0, events, meta())
    return time.perf_counter() - began


class Projection:
    """An in-memory read model: events by milestone and the amounts they report.

    Both sides apply their decoded events to this same class, so the replay workloads differ
    only in what each library does to read and decode. Small and bounded on purpose: a
    replay must not keep history in memory.
    """

    def __init__(self) -> None:
        self.by_milestone: Counter[str] = Counter()
        self.amount_fen = 0
        self.events = 0

    def apply(self, event: Any) -> None:
        self.events += 1
        self.by_milestone[event.milestone] += 1
        self.amount_fen += event.amount_fen


@dataclass
class MemoryWatch:
    """Resident memory of this process, sampled as work goes on."""

    start_mb: float = field(default_factory=rss_mb)
    peak_mb: float = 0.0

    def sample(self) -> None:
        self.peak_mb = max(self.peak_mb, rss_mb())

    @property
    def growth_mb(self) -> float:
        return max(0.0, self.peak_mb - self.start_mb)


async def ours_replay(pool: asyncpg.Pool, registry: EventRegistry, watch: MemoryWatch) -> tuple[int, float]:
    """Rebuild ``Projection`` from the whole store, in batches, as the read-model rebuild does."""
    projection = Projection()
    began = time.perf_counter()
    apply = projection.apply
    async for batch in store.replay(pool, registry):
        for _, event in batch:
            apply(event)
        watch.sample()
    return projection.events, time.perf_counter() - began


def replay_figure(
    workload: str, system: str, count: int, seconds: float, watch: MemoryWatch, cpu: dict[str, float]
) -> Figure:
    """One replay run: its rate, the memory it took and the CPU each event cost client and server."""
    memory = {"rss_growth_mb": round(watch.growth_mb, 1), "rss_peak_mb": round(watch.peak_mb, 1)}
    return Figure(workload, system, count, seconds, count / seconds, extra=memory | cpu)


def libpq_params(admin_url: str) -> dict[str, Any]:
    """host/port/user/dbname of a postgresql:// URL, the Unix-socket directory included."""
    parts = urlsplit(admin_url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    return {
        "dbname": parts.path.lstrip("/") or "postgres",
        "host": query.get("host") or parts.hostname or "127.0.0.1",
        "port": int(query.get("port") or parts.port or 5432),
        "user": parts.username or query.get("user") or "postgres",
        "password": parts.password or "",
    }


# --- state as of a moment ----------------------------------------------------------------------

AS_OF_SCHEMA = "bench_asof"


async def long_case(pool: asyncpg.Pool, length: int, start: datetime, per_hour: int = 50) -> str:
    """A supervision case with ``length`` events: opened, then progress reports, ``per_hour``
    of them in one append each hour (tests/integration/test_snapshots.py uses it too)."""
    from services.supervision import domain

    stream = f"case-bench-{uuid.uuid4().hex[:8]}"
    opened = domain.CaseOpened(
        project_id=stream,
        function_id="bench-function",
        society_id="deyang-software-society",
        society_name="德阳市软件行业协会",
        department="deyang-hr",
        jurisdiction="510600",
        title="专业技术人员水平评价",
        category=domain.Category.SCIENCE_EVALUATION,
    )
    events: list[Event] = [opened]
    events += [
        domain.MilestoneReported(
            project_id=stream,
            milestone_id=f"m{n % 5}",
            status=domain.MilestoneProgress.IN_PROGRESS,
            evidence=[f"报告{n}"],
        )
        for n in range(length - 1)
    ]
    version = 0
    for hour, first in enumerate(range(0, length, per_hour)):
        chunk = events[first : first + per_hour]
        meta = store.Metadata(WRITER, "510600", start + timedelta(hours=hour), uuid.uuid4())
        async with pool.acquire() as conn, conn.transaction():
            await store.append(conn, stream, "case", version, chunk, meta)
        version += len(chunk)
    return stream


async def measure_as_of(es: Any, length: int, start: datetime, rng: Any) -> Figure:
    """Median time of ``state_as_of`` at random moments, beside folding the whole stream."""
    from services.supervision import domain

    stream = await long_case(es.pool, length, start)
    hours = length // 50 + 1

    def moment() -> datetime:
        return start + timedelta(hours=rng.uniform(0, hours))

    async def full_fold(at: datetime) -> Any:  # what the query did before snapshots
        state = domain.initial_case()
        for envelope in await store.read_stream(es.pool, stream):
            if envelope.occurred_at > at:
                break
            state = domain.evolve_case(state, es.decode(envelope))
        return state

    async def as_of(at: datetime) -> Any:
        return await es.state_as_of(domain.CASE, stream, at)

    async def timed(call: Callable[[datetime], Awaitable[Any]], at: datetime) -> float:
        began = time.perf_counter()
        await call(at)
        return time.perf_counter() - began

    folds = [await timed(full_fold, moment()) for _ in range(5)]
    first = await timed(as_of, start + timedelta(hours=hours))  # writes the snapshots of an older stream
    warm = [await timed(as_of, moment()) for _ in range(30)]
    median = statistics.median(warm)
    return Figure(
        f"state as of a moment, {length:,}-event case",
        "chengneng",
        length,
        median,
        1 / median,
        percentile(warm, 50),
        percentile(warm, 99),
        extra={"full_fold_p50_ms": round(percentile(folds, 50), 2), "first_query_ms": round(first * 1000, 2)},
    )


async def as_of_workload(options: Options, admin_url: str, results: Results) -> None:
    """Time to the state of one case as of a moment, against the length of its history."""
    import random

    from services.supervision import domain
    from shared.commands import EventStore

    await fresh_schema(admin_url, AS_OF_SCHEMA)
    pool = await db.create_pool(admin_url, AS_OF_SCHEMA, max_size=4)
    es = EventStore(pool, domain.EVENTS)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    rng = random.Random(7)
    try:
        for length in options.as_of_lengths:
            say(f"as-of: a case with {length:,} events ...")
            results.add(await measure_as_of(es, length, start, rng))
        rows = [f for f in results.figures if f.workload.startswith("state as of")]
        if len(rows) > 1:
            growth = (rows[-1].p50_ms or 0) / (rows[0].p50_ms or 1)
            results.target(
                "state as of: near constant",
                "flat in history",
                f"p50 {rows[0].p50_ms:.1f} ms at {rows[0].events:,}, {rows[-1].p50_ms:.1f} ms at {rows[-1].events:,}",
                growth < 3,
            )
    finally:
        await pool.close()


# --- audit -----------------------------------------------------------------------------------


async def seal_everything(pool: asyncpg.Pool, dsn: str, bootstrap: str | None, keys_dir: Path) -> int:
    """Seal the bench schema's events and sign one checkpoint, as a service's sealer does."""
    from shared.sealer import Sealer

    sealer = Sealer(SCHEMA, pool, dsn, bootstrap or "", keys_dir, batch_size=5000)
    await sealer._load_range()
    sealed = 0
    while count := await sealer.seal_pending():
        sealed += count
    await sealer.checkpoint(None)
    return sealed


async def lag_checks(pool: asyncpg.Pool, calls: int = 50) -> list[float]:
    """Seconds each of ``calls`` relay lag checks took on the sealed bench log.

    An idle relay checks its lag several times a second, so this must not grow with history.
    """
    samples = []
    for _ in range(calls):
        start = time.perf_counter()
        await store.log_lag(pool, 0)
        samples.append(time.perf_counter() - start)
    return samples


async def audit_rate(admin_url: str, keys_dir: Path) -> tuple[int, float, bool]:
    from shared import audit

    report = await audit.verify(admin_url, [SCHEMA], keys_dir, kafka_bootstrap=None)
    return report.events, report.elapsed_s, report.ok


# --- replay from the Kafka topic -------------------------------------------------------------


async def fill_topic(pool: asyncpg.Pool, bootstrap: str, topic: str) -> int:
    """Publish the whole bench store to ``topic`` as the relay does (CloudEvents, binary mode)."""
    from aiokafka import AIOKafkaProducer

    from shared import kafka

    await kafka.ensure_topics(bootstrap, [topic], partitions=1)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20, max_batch_size=1 << 20)
    await producer.start()
    sent = 0
    try:
        async with pool.acquire() as conn:
            async for batch in store.tail(conn, 5000):
                futures = []
                for envelope in batch:
                    message = kafka.to_message(SCHEMA, envelope)
                    futures.append(
                        await producer.send(topic, key=message.key, value=message.value, headers=message.headers)
                    )
                await asyncio.gather(*futures)
                sent += len(batch)
    finally:
        await producer.stop()
    return sent


async def topic_replay(bootstrap: str, topic: str, expected: int, watch: MemoryWatch) -> tuple[int, float]:
    """Read the topic from the start and decode each record into its domain event, as consumers do."""
    from aiokafka import AIOKafkaConsumer

    from shared import kafka

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_partition_fetch_bytes=8 << 20,
        fetch_max_bytes=32 << 20,
    )
    await consumer.start()
    counts: Counter[str] = Counter()
    read = 0
    began = time.perf_counter()
    try:
        while read < expected:
            batches = await consumer.getmany(timeout_ms=2000, max_records=5000)
            if not batches:
                break
            for records in batches.values():
                for record in records:
                    incoming = kafka.from_record(record.headers, record.key, record.value)
                    event = EVENTS.decode(incoming.event_type, incoming.schema_version, incoming.data)
                    counts[getattr(event, "milestone", "")] += 1
                    read += 1
            watch.sample()
    finally:
        await consumer.stop()
    return read, time.perf_counter() - began


# --- the run ---------------------------------------------------------------------------------


@dataclass
class Options:
    home: Path
    out: Path
    sizes: tuple[int, ...] = (10_000, 100_000, 1_000_000)
    writers: int = 16
    single_appends: int = 16_000
    batch_size: int = 1_000
    reference: bool = True
    reference_url: str | None = None
    unix_socket: bool = False
    audit_at: int = 100_000
    rounds: int = 3
    """Runs of each append and replay workload, the two sides alternating; the median counts."""
    kafka: bool = True
    stack: bool = True
    http_commands: int = 2_000
    http_concurrency: int = 16
    e2e_rate: float = 100.0
    e2e_probe_rate: float = 10.0
    """A rate well below saturation, to show the pipeline's own latency beside the target's."""
    e2e_seconds: float = 20.0
    as_of_lengths: tuple[int, ...] = (100, 1_000, 10_000)
    catch_up_events: int = 10_000
    """Backlog of the catch-up workload: a consumer applying it, then the same republished."""
    database_url: str | None = None
    only: frozenset[str] = frozenset()
    profile: Path | None = None

    def wants(self, workload: str) -> bool:
        return not self.only or workload in self.only


WORKLOADS = ("append", "replay", "audit", "kafka", "catch-up", "http", "as-of", "e2e")


@contextlib.contextmanager
def profiled(options: Options, name: str) -> Iterator[None]:
    """Profile a workload with pyinstrument when ``--profile DIR`` is given."""
    if options.profile is None:
        yield
        return
    from pyinstrument import Profiler

    profiler = Profiler(async_mode="enabled")
    profiler.start()
    try:
        yield
    finally:
        profiler.stop()
        options.profile.mkdir(parents=True, exist_ok=True)
        (options.profile / f"{name}.txt").write_text(profiler.output_text(unicode=False, show_all=False))
        (options.profile / f"{name}.html").write_text(profiler.output_html())


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


async def run(options: Options) -> dict[str, Any]:
    from shared import embedded

    results = Results()
    options.home.mkdir(parents=True, exist_ok=True)
    pg = None
    admin_url = stack_url = options.database_url
    if admin_url is None:
        say(f"starting embedded PostgreSQL in {options.home} ...")
        pg = embedded.start_postgres(options.home)
        # Both sides over TCP loopback: the reference's pipelined batch writes stall on a
        # Unix socket once a statement passes ~430 KB (a psycopg pipeline issue).
        tcp_url = pg.listen_tcp(embedded.free_port())
        admin_url = pg.admin_url if options.unix_socket else tcp_url
        options.reference_url = tcp_url
        stack_url = pg.admin_url  # the services connect as under `chengneng up`: over the socket
    try:
        context = await machine_context(admin_url)
        print(f"chengneng bench - {context['postgres']} - {context['cpus']} CPUs - Python {context['python']}")
        server = psutil.Process(pg.pid) if pg is not None else None
        await store_workloads(options, admin_url, results, server)
        if options.wants("catch-up") and options.kafka:
            from shared.bench_consumer import catch_up_workload

            await catch_up_workload(options, admin_url, results)
        if options.wants("as-of"):
            await as_of_workload(options, admin_url, results)
        if options.stack and (options.wants("http") or options.wants("e2e")):
            from shared.bench_stack import stack_workloads

            await quiet_server(admin_url)
            await stack_workloads(options, stack_url or admin_url, results)
    finally:
        if pg is not None and options.database_url is None:
            pg.stop()
    results.print_summary()
    document = results.as_json(context)
    options.out.parent.mkdir(parents=True, exist_ok=True)
    options.out.write_text(json.dumps(document, indent=2, ensure_ascii=False))
    print(f"\nfigures written to {options.out}")
    return document


async def quiet_server(admin_url: str) -> None:
    """Flush what the store workloads wrote and let autovacuum finish with their tables, so
    that the services' latencies are not measured against the server's own catching up."""
    conn = await asyncpg.connect(admin_url)
    try:
        with contextlib.suppress(asyncpg.InsufficientPrivilegeError):  # a server of the user's
            await conn.execute("CHECKPOINT")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and await conn.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker'"
        ):
            await asyncio.sleep(0.5)
    finally:
        await conn.close()


async def machine_context(admin_url: str) -> dict[str, Any]:
    conn = await asyncpg.connect(admin_url)
    try:
        version = await conn.fetchval("SELECT version()")
    finally:
        await conn.close()
    return {
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "postgres": str(version).split(" on ")[0],
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


async def store_workloads(
    options: Options, admin_url: str, results: Results, server: psutil.Process | None = None
) -> None:
    """Appends, replays, audit and the topic replay; ``server`` is the embedded PostgreSQL, whose CPU is counted."""
    from shared import bench_raw, embedded

    await fresh_schema(admin_url, SCHEMA)
    pool = await db.create_pool(admin_url, SCHEMA, min_size=options.writers, max_size=options.writers)
    await fresh_schema(admin_url, RAW_SCHEMA)
    raw_pool = await bench_raw.create_pool(admin_url, RAW_SCHEMA, options.writers)
    reference = None
    if options.reference:
        await fresh_schema(options.reference_url or admin_url, ES_SCHEMA, migrate=False)
        from shared.bench_reference import Reference

        reference = Reference(options.reference_url or admin_url, pool_size=options.writers)
        reference.create_table()
        results.notes.append(
            f"eventsourcing side connects over {reference.transport}; ours over {transport(admin_url)}"
        )
    try:
        if options.wants("append"):
            say(f"append: single-event appends ({options.rounds} round(s), the sides alternating) ...")
            per_writer = max(1, options.single_appends // options.writers)
            n = per_writer * options.writers
            single = f"single-event appends, {options.writers} writers"
            runs: dict[str, list[Figure]] = {"chengneng": [], "eventsourcing": [], RAW: []}
            alone: list[Figure] = []  # the ceiling without a transaction

            def single_run(into: list[Figure], system: str, seconds: float, latencies: list[float]) -> None:
                p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
                workload = single if into is not alone else f"{single}, no transaction"
                into.append(Figure(workload, system, n, seconds, n / seconds, p50, p99))

            for _ in range(options.rounds):
                with profiled(options, "append-single"):
                    result = await ours_single_appends(pool, options.writers, per_writer)
                single_run(runs["chengneng"], "chengneng", *result)
                if reference is not None:
                    result = await asyncio.to_thread(reference.single_appends, options.writers, per_writer)
                    single_run(runs["eventsourcing"], "eventsourcing", *result)
                single_run(runs[RAW], RAW, *await bench_raw.single_appends(raw_pool, options.writers, per_writer))
                result = await bench_raw.single_appends(raw_pool, options.writers, per_writer, in_transaction=False)
                single_run(alone, RAW, *result)
            ours = add_side_by_side(results, runs)
            ceiling = results.add(median_run(runs[RAW]))
            results.add(median_run(alone))
            ratio = results.ratio(single)
            results.target(
                "single-event appends/s",
                ">= 5,000 and ahead",
                f"{ours.per_s:,.0f}/s" + (f" (x{ratio:.2f})" if ratio else "") + f"; {RAW} {ceiling.per_s:,.0f}/s",
                ours.per_s >= 5000 and (ratio is None or ratio > 1),
            )
            raw_batches = max(1, min(100, options.sizes[0] // options.batch_size))
            say(f"append: {raw_batches:,} batches of {options.batch_size:,} by {RAW} (COPY) ...")
            seconds = await bench_raw.batched_appends(raw_pool, raw_batches, options.batch_size)
            n = raw_batches * options.batch_size
            results.add(Figure(f"batched appends ({options.batch_size:,} per append)", RAW, n, seconds, n / seconds))
        # Fill to each size with batched appends (the batched-append figure), then replay.
        filled = 0
        ref_filled = 0
        fill_events = {"chengneng": 0, "eventsourcing": 0}  # of every batched fill, per side
        fill_seconds = {"chengneng": 0.0, "eventsourcing": 0.0}
        broker = None
        sizes = sorted(options.sizes) if any(options.wants(w) for w in ("append", "replay", "audit", "kafka")) else []
        audit_size = options.audit_at if options.audit_at in sizes else max(sizes, default=0)
        for size in sizes:
            batches = max(0, (size - filled) // options.batch_size)
            if batches:
                say(f"filling the store to {size:,} events in batches of {options.batch_size:,} ...")
                with profiled(options, f"append-batched-{size}"):
                    seconds = await ours_batched_appends(pool, batches, options.batch_size, offset=filled)
                n = batches * options.batch_size
                fill_events["chengneng"] += n
                fill_seconds["chengneng"] += seconds
                filled += n
                if reference is not None and options.wants("replay"):
                    ref_batches = (size - ref_filled) // options.batch_size
                    seconds = await asyncio.to_thread(
                        reference.batched_appends, ref_batches, options.batch_size, offset=ref_filled
                    )
                    ref_filled += ref_batches * options.batch_size
                    fill_events["eventsourcing"] += ref_batches * options.batch_size
                    fill_seconds["eventsourcing"] += seconds
            await settle(admin_url)
            if options.wants("replay"):
                say(f"replay: {filled:,} events from the store ({options.rounds} round(s), the sides alternating) ...")
                workload = f"replay from the store, {size:,} events"
                runs = {"chengneng": [], "eventsourcing": [], RAW: []}
                for _ in range(options.rounds):
                    gc.collect()
                    watch, before = MemoryWatch(), cpu_seconds(server)
                    with profiled(options, f"replay-store-{size}"):
                        count, seconds = await ours_replay(pool, EVENTS, watch)
                    cpu = cpu_per_event(before, cpu_seconds(server), count)
                    runs["chengneng"].append(replay_figure(workload, "chengneng", count, seconds, watch, cpu))
                    if reference is not None:
                        gc.collect()
                        watch, before = MemoryWatch(), cpu_seconds(server)
                        count, seconds = await asyncio.to_thread(reference.replay, watch)
                        cpu = cpu_per_event(before, cpu_seconds(server), count)
                        runs["eventsourcing"].append(
                            replay_figure(workload, "eventsourcing", count, seconds, watch, cpu)
                        )
                    gc.collect()
                    watch, before = MemoryWatch(), cpu_seconds(server)
                    count, seconds = await bench_raw.replay(pool, watch)
                    cpu = cpu_per_event(before, cpu_seconds(server), count)
                    runs[RAW].append(replay_figure(workload, RAW, count, seconds, watch, cpu))
                add_side_by_side(results, runs, worst=("rss_growth_mb",))
                results.add(median_run(runs[RAW], worst=("rss_growth_mb",)))
            if options.wants("audit") and size == audit_size:
                say(f"audit: sealing {filled:,} events and verifying ...")
                keys = options.home / "bench-keys"
                await seal_everything(pool, admin_url, None, keys)
                checks = await lag_checks(pool)
                results.add(
                    Figure(
                        f"relay's lag check, {filled:,} events sealed",
                        "chengneng",
                        len(checks),
                        sum(checks),
                        len(checks) / sum(checks),
                        percentile(checks, 50),
                        percentile(checks, 99),
                    )
                )
                with profiled(options, "audit-verify"):
                    count, seconds, ok = await audit_rate(admin_url, keys)
                results.add(Figure("audit verify", "chengneng", count, seconds, count / seconds, extra={"ok": ok}))
                results.target(
                    "audit verify events/s", ">= 100,000", f"{count / seconds:,.0f}/s", count / seconds >= 100_000
                )
            if options.wants("kafka") and options.kafka:
                if broker is None:
                    broker = embedded.start_broker(options.home)
                topic = f"chengneng.bench.{size}.{uuid.uuid4().hex[:6]}"
                say(f"kafka: publishing {filled:,} events to {topic} ...")
                published = await fill_topic(pool, broker.bootstrap, topic)
                gc.collect()
                watch = MemoryWatch()
                count, seconds = await topic_replay(broker.bootstrap, topic, published, watch)
                results.add(
                    Figure(
                        f"replay from the topic, {size:,} events",
                        "chengneng",
                        count,
                        seconds,
                        count / seconds,
                        extra={"rss_growth_mb": round(watch.growth_mb, 1)},
                    )
                )
        if broker is not None:
            broker.stop()
        # Every fill counts (the last, up to the largest store, most): one short fill is noise.
        batched = f"batched appends ({options.batch_size:,} per append)"
        for system, n in fill_events.items():
            if n:
                total = fill_seconds[system]
                results.add(Figure(batched, system, n, total, n / total, extra={"to_size": n}))
        batched_figure = results.find(batched, "chengneng")
        if batched_figure is not None:
            ratio = results.ratio(batched)
            raw = results.find(batched, RAW)
            results.target(
                "batched appends events/s",
                ">= 50,000 and ahead",
                f"{batched_figure.per_s:,.0f}/s"
                + (f" (x{ratio:.2f})" if ratio else "")
                + (f"; {RAW} COPY {raw.per_s:,.0f}/s" if raw else ""),
                batched_figure.per_s >= 50_000 and (ratio is None or ratio > 1),
            )
        replays = [
            f for f in results.figures if f.workload.startswith("replay from the store") and f.system == "chengneng"
        ]
        if replays:
            largest = max(replays, key=lambda f: f.events)
            ratio = results.ratio(largest.workload)
            raw = results.find(largest.workload, RAW)
            results.target(
                "replay from the store events/s",
                ">= 150,000 and ahead",
                f"{largest.per_s:,.0f}/s at {largest.events:,}"
                + (f" (x{ratio:.2f})" if ratio else "")
                + (f"; {RAW} {raw.per_s:,.0f}/s" if raw else ""),
                largest.per_s >= 150_000 and (ratio is None or ratio > 1),
            )
            smallest = min(replays, key=lambda f: f.events)
            results.target(
                "memory flat over the replay",
                "no growth with history",
                f"RSS growth {smallest.extra['rss_growth_mb']} MB at {smallest.events:,}, "
                f"{largest.extra['rss_growth_mb']} MB at {largest.events:,}",
                largest.extra["rss_growth_mb"] <= smallest.extra["rss_growth_mb"] + 32,
            )
    finally:
        await pool.close()
        await raw_pool.close()
        if reference is not None:
            reference.close()


async def settle(admin_url: str) -> None:
    """After a bulk fill, do what autovacuum would soon do: vacuum and analyze both sides' tables.

    Otherwise the first reads of new rows write their hint bits, and autovacuum works
    through the fill while the replays are measured, on one side or the other.
    """
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f"VACUUM (ANALYZE) {SCHEMA}.events")
        if await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", f"{ES_SCHEMA}.stored_events"):
            await conn.execute(f"VACUUM (ANALYZE) {ES_SCHEMA}.stored_events")
    finally:
        await conn.close()


def transport(url: str) -> str:
    host = libpq_params(url)["host"]
    return "Unix socket" if str(host).startswith("/") else f"TCP {host}"


def quick(options: Options) -> Options:
    """Every workload at a size that finishes in about a minute: proves the bench runs, measures little."""
    return replace(
        options,
        sizes=(2_000, 5_000),
        rounds=1,
        single_appends=800,
        batch_size=500,
        audit_at=5_000,
        http_commands=80,
        http_concurrency=4,
        e2e_rate=10.0,
        e2e_probe_rate=10.0,
        e2e_seconds=3.0,
        as_of_lengths=(100, 300),
        catch_up_events=400,
    )


def main(options: Options) -> int:
    asyncio.run(run(options))
    return 0
