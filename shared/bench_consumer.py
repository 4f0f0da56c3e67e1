"""The catch-up workload: a service's consumer working through a backlog on its topic.

What a consumer faces after it was down, or after a broker loss: first records it has not
seen (each new event through the service's real policy and projections), then, when the
relay republishes the history, the same records again (each one recognised as applied
before). Here the disclosure service's consumer of the registry's events does both, once
applying each fetch in transactions of ``TOGETHER`` events, as it runs in the stack, and
once a record at a time, as it did before, so the table shows what batching is worth.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime

from aiokafka import AIOKafkaProducer
from prometheus_client import Counter

from services.disclosure import app as disclosure
from services.disclosure import domain, projections
from services.registry import domain as registry
from shared import db, embedded, kafka
from shared.bench import Figure, Options, Results, cpu_per_event, cpu_seconds, say
from shared.commands import EventStore
from shared.consumer import APPLIED, BATCHES, DEADLETTERED, DUPLICATES, TOGETHER, InboxConsumer
from shared.envelope import Envelope
from shared.policies import policy_handler
from shared.principal import Principal, Role

SCHEMA = "bench_catchup"
"""The consuming service's schema; dropped and created again before each run."""

CONSUMER = "disclosure-registry"
"""The consumer measured: disclosure applying the registry's events through its policy."""

DEPARTMENT = Principal(subject="bench-clerk", organisation="deyang-sci", role=Role.DEPARTMENT, jurisdiction="510600")

WAIT_S = 600.0
"""Longest a run may take before the bench gives up on it (a stalled consumer is an error)."""


def registry_history(functions: int) -> Iterator[Envelope]:
    """Each function proposed, then listed: two events per stream, each disclosed on the
    function's public stream, so both the policy's reactions and the stream order are exercised.

    The hash chain is left blank: consumers do not check it (the audit does).
    """
    began = datetime.now(UTC)
    for n in range(functions):
        function_id = f"bench-{n:07d}"
        proposed = registry.FunctionProposed(
            function_id=function_id,
            jurisdiction="510600",
            title=f"科技奖励推荐 {n}",
            description="由学会承接的科技奖励推荐工作，含初审、公示与报送",
            category=registry.Category.AWARD_NOMINATION,
            sub_kind=registry.SubKind.NATIONAL_AWARD_NOMINATION,
            scope=registry.Scope.WHOLE,
            entrustment_mode=registry.EntrustmentMode.PURCHASE_OF_SERVICES,
            department="deyang-sci",
            proposed_by_org="deyang-sci",
            proposer_role=Role.DEPARTMENT,
        )
        listed = registry.FunctionListed(function_id=function_id, department="deyang-sci")
        correlation = uuid.uuid4()
        for version, event in enumerate((proposed, listed), start=1):
            yield Envelope(
                stream_id=f"function-{function_id}",
                stream_type="function",
                stream_version=version,
                event_id=uuid.uuid4(),
                event_type=event.event_type,
                schema_version=event.schema_version,
                occurred_at=began,
                actor=DEPARTMENT,
                jurisdiction="510600",
                correlation_id=correlation,
                causation_id=None,
                payload=event.model_dump(mode="json"),
                prev_hash=bytes(32),
                hash=bytes(32),
                position=2 * n + version,
            )


async def publish(bootstrap: str, topic: str, envelopes: Sequence[Envelope]) -> None:
    """Publish ``envelopes`` as the registry's relay does: CloudEvents keyed by stream."""
    await kafka.ensure_topics(bootstrap, [topic])
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20, max_batch_size=1 << 20)
    await producer.start()
    try:
        sent = []
        for envelope in envelopes:
            message = kafka.to_message("registry", envelope)
            sent.append(await producer.send(topic, key=message.key, value=message.value, headers=message.headers))
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


def counted(name: str) -> dict[str, float]:
    """The consumer's counters so far (they live in this process's metrics registry).

    Each counter is collected on its own: collecting the whole registry reads /proc for the
    process metrics, which a loop looking every few milliseconds would pay for.
    """
    figures = {
        "applied": _sample(APPLIED, consumer=name),
        "duplicates": _sample(DUPLICATES, consumer=name),
        "deadlettered": _sample(DEADLETTERED, consumer=name),
    }
    for how in ("together", "one_by_one"):
        figures[f"batches_{how}"] = _sample(BATCHES, consumer=name, how=how)
    return figures


def _sample(counter: Counter, **labels: str) -> float:
    """A counter's total for ``labels``; 0 before its first increment."""
    for family in counter.collect():
        for sample in family.samples:
            if sample.name.endswith("_total") and sample.labels == labels:
                return float(sample.value)
    return 0.0


async def consume_until(
    consumer: InboxConsumer, counter: str, expected: int
) -> tuple[int, float, dict[str, float], dict[str, float]]:
    """Run ``consumer`` until its ``counter`` has grown by ``expected``; the events counted from
    the first one it applied, the seconds they took, their CPU cost to this process (the
    consumer's side) and the counters' growth.

    The clock starts at the first event, not at the start: joining the consumer group and
    the first fetch take seconds that have nothing to do with how fast a backlog is applied.
    """
    before = counted(consumer.name)
    launched = (time.perf_counter(), 0.0, cpu_seconds(None))
    task = asyncio.create_task(consumer.run(), name=f"bench-{consumer.name}")
    try:
        deadline = time.monotonic() + WAIT_S
        start: tuple[float, float, tuple[float, float]] | None = None
        while (done := counted(consumer.name)[counter] - before[counter]) < expected:
            if task.done():
                task.result()  # raises what stopped it
                raise RuntimeError(f"consumer {consumer.name} stopped after {done:,.0f} of {expected:,} events")
            if time.monotonic() > deadline:
                raise RuntimeError(f"consumer {consumer.name} applied {done:,.0f} of {expected:,} in {WAIT_S:.0f} s")
            if start is None and done > 0:
                start = (time.perf_counter(), done, cpu_seconds(None))
            await asyncio.sleep(0.02)
        ended, cpu_after = time.perf_counter(), cpu_seconds(None)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    after = counted(consumer.name)
    growth = {k: after[k] - before[k] for k in after}
    began, at_start, cpu_before = start or launched  # all of it between two looks: from the launch
    events = expected - int(at_start)
    return events, ended - began, cpu_per_event(cpu_before, cpu_after, max(events, 1)), growth


async def catch_up(admin_url: str, bootstrap: str, events: int, together: int) -> list[Figure]:
    """One consumer, on a fresh schema and topic, through a backlog of ``events`` new events
    and then through the same records republished."""
    await db.drop_service(admin_url, SCHEMA)
    await db.migrate(admin_url, SCHEMA, projections.MIGRATIONS)
    pool = await db.create_pool(admin_url, SCHEMA, min_size=2, max_size=4)
    [spec] = [c for c in disclosure.SERVICE.consumers if c.name == CONSUMER]
    assert spec.policy is not None
    topic = f"chengneng.bench.catchup.{uuid.uuid4().hex[:8]}"
    history = list(registry_history(events // 2))
    how = "a fetch together" if together > 1 else "one at a time"
    figures = []
    try:
        for phase, counter in (("new events", "applied"), ("republished", "duplicates")):
            await publish(bootstrap, topic, history)
            consumer = InboxConsumer(
                spec.name,
                [topic],
                pool,
                bootstrap,
                policy_handler(EventStore(pool, domain.EVENTS, projections.project), spec.policy),
                sources=spec.sources,
                together=together,
            )
            say(f"catch-up: {len(history):,} {phase}, {how} ...")
            count, seconds, cpu, growth = await consume_until(consumer, counter, len(history))
            if growth["deadlettered"]:
                raise RuntimeError(f"the catch-up consumer dead-lettered {growth['deadlettered']:,.0f} records")
            extra: dict[str, object] = {"per_transaction": together, **cpu}
            extra |= {k: int(v) for k, v in growth.items() if k.startswith("batches") and v}
            figures.append(
                Figure(
                    f"catch-up, {len(history):,} {phase} ({how})",
                    "chengneng",
                    count,
                    seconds,
                    count / seconds,
                    extra=extra,
                )
            )
        async with pool.acquire() as conn:
            disclosed = await conn.fetchval("SELECT count(*) FROM events")
        figures[0].extra["disclosed"] = disclosed
    finally:
        await pool.close()
    return figures


async def catch_up_workload(options: Options, admin_url: str, results: Results) -> None:
    """The catch-up figures, on a broker of its own: batched as in the stack and one at a
    time, with the speed-up.

    Only the consumer's CPU is counted: the server's would include the autovacuum workers
    its writes set off, whole or not at all, depending on when they start and exit."""
    broker = embedded.start_broker(options.home)
    try:
        batched = await catch_up(admin_url, broker.bootstrap, options.catch_up_events, TOGETHER)
        single = await catch_up(admin_url, broker.bootstrap, options.catch_up_events, 1)
    finally:
        broker.stop()
    for together, alone in zip(batched, single, strict=True):
        if alone.per_s > 0:
            together.extra["speed_up"] = round(together.per_s / alone.per_s, 2)
        results.add(alone)
        results.add(together)
