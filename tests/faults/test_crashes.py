"""kill -9 of service processes in the middle of work, then `up` restarts them.

The design promises at-least-once publication (the relay re-sends what the broker had not
acknowledged before its position moved) and exactly-once effects (every consumer records
the event ids it applied in the same transaction as the effect). So after the crashes:

- every command a client retried with its Idempotency-Key is stored exactly once;
- the topic holds every stored event, each stream's events in order of first appearance
  (a re-sent suffix may follow: harmless, counted below);
- every consumer applied every event exactly once (its inbox, and the effects themselves:
  one selection per opened function, one public fact per disclosed event);
- each service's read models equal a rebuild from its own store.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter, defaultdict

import pytest

from services.disclosure.policy import load_policy
from shared.consumer import TOGETHER
from tests.conftest import wait_until
from tests.faults.conftest import FaultStack, FunctionLoad, topic_events

pytestmark = pytest.mark.stack

STEPS = ["FunctionProposed", "FunctionListed", "FunctionOpened"]
FUNCTIONS = 250
"""Enough that the load runs on through both crashes and the hold between them."""
CONSUMERS = ("capability", "supervision", "disclosure")
BACKLOG = 150
"""Registry events each consumer is let fall behind: it applies at most ``TOGETHER`` per
transaction, so it is caught with part of the backlog applied and part not."""
HOLD_S = 8.0
"""The consumers are held at most this long, within the broker's 10 s session timeout."""


def test_kill_9_during_publishing_and_applying_loses_and_doubles_nothing(fault_stack: FaultStack) -> None:
    fs = fault_stack
    load = FunctionLoad(fs, f"crash-{uuid.uuid4().hex[:6]}", workers=4, functions=FUNCTIONS)
    load.start()
    try:
        # 1. The registry dies while its relay publishes a burst (stored but not yet on the topic).
        wait_until(lambda: load.completed() >= 10, timeout=60, message="the burst to start")
        wait_until(
            lambda: not fs.relay_caught_up("registry"), timeout=20, interval=0.02, message="the relay to fall behind"
        )
        old = fs.kill9("registry")
        fs.wait_restarted("registry", old)

        # 2. The consumers of the registry's events die while they apply them. A consumer that
        # keeps pace with the load may never be caught between two of its transactions, so the
        # three are held (SIGSTOP) while the load stores a backlog for them, let go together,
        # and each is killed once it has applied part of the backlog but not all of it.
        before = load.completed()
        wait_until(lambda: load.completed() >= before + 10, timeout=60, message="the load to resume")
        held = {name: fs.pause(name) for name in CONSUMERS}
        try:
            deadline = time.monotonic() + HOLD_S
            while True:
                progress = {name: fs.progress(f"{name}-registry", load.prefix) for name in CONSUMERS}
                behind = min(stored - applied for applied, stored in progress.values())
                if behind >= BACKLOG or not load.is_alive() or time.monotonic() > deadline:
                    break
                time.sleep(0.05)
        finally:
            for pid in held.values():
                fs.resume(pid)
        assert behind > 2 * TOGETHER, (
            f"the load stored too small a backlog in {HOLD_S} s (applied of stored: {progress})"
        )
        killed: dict[str, int] = {}

        def kill_those_applying() -> bool:
            for name in CONSUMERS:
                if name in killed:
                    continue
                applied, stored = fs.progress(f"{name}-registry", load.prefix)
                if progress[name][0] < applied < stored:
                    killed[name] = fs.kill9(name)
            return len(killed) == len(CONSUMERS)

        try:
            wait_until(
                kill_those_applying, timeout=30, interval=0.02, message="each consumer to be applying the backlog"
            )
        except AssertionError as exc:
            now = {name: fs.progress(f"{name}-registry", load.prefix) for name in CONSUMERS}
            raise AssertionError(
                f"{exc} (killed: {sorted(killed)}; applied of stored when let go: {progress}, now: {now})"
            ) from None
        for name, pid in killed.items():
            fs.wait_restarted(name, pid)
        load.join(timeout=180)
        assert not load.is_alive(), "the load did not finish"
    finally:
        load.stop.set()
    assert load.failures == [], load.failures[:5]
    assert load.interrupted > 0, "no request was cut off by a crash: the test did not test crashes"
    fs.wait_quiet()

    # Every command exactly once in the store, although clients retried after the crashes.
    streams = [f"function-{fid}" for fid in load.done]
    assert len(streams) == FUNCTIONS
    stored = fs.sql(
        """SELECT stream_id, stream_version, event_id, event_type FROM registry.events
           WHERE stream_id = ANY($1) ORDER BY stream_id, stream_version""",
        streams,
    )
    by_stream: dict[str, list[str]] = defaultdict(list)
    for row in stored:
        by_stream[row["stream_id"]].append(row["event_type"])
    assert by_stream == {s: STEPS for s in streams}

    # The topic holds every stored event; per stream, first appearances are in order.
    on_topic = [e for e in topic_events(fs.broker.bootstrap, "registry") if e.subject in by_stream]
    copies = Counter(e.event_id for e in on_topic)
    assert set(copies) == {row["event_id"] for row in stored}
    firsts: dict[str, list[int]] = defaultdict(list)
    seen: set[uuid.UUID] = set()
    for event in on_topic:
        if event.event_id not in seen:
            seen.add(event.event_id)
            firsts[event.subject].append(event.stream_version)
    assert all(versions == [1, 2, 3] for versions in firsts.values()), firsts
    resent = sum(copies.values()) - len(copies)

    # Every consumer applied every event exactly once: inbox rows, and the effects themselves.
    ids = [row["event_id"] for row in stored]
    for consumer in ("capability-registry", "supervision-registry", "disclosure-registry"):
        schema = consumer.split("-")[0]
        rows = fs.sql(
            f"SELECT outcome, count(*) FROM {schema}.inbox WHERE consumer = $1 AND event_id = ANY($2) GROUP BY 1",
            consumer,
            ids,
        )
        assert {r[0]: r[1] for r in rows} == {"applied": len(ids)}, (consumer, rows)
    selections = fs.sql(
        """SELECT stream_id, count(*) FILTER (WHERE event_type = 'SelectionOpened') FROM capability.events
           WHERE stream_id = ANY($1) GROUP BY 1""",
        [f"selection-{fid}" for fid in load.done],
    )
    assert len(selections) == FUNCTIONS and {r[1] for r in selections} == {1}
    policy = load_policy()
    disclosable = {
        str(row["event_id"])
        for row in fs.sql(
            "SELECT event_id, event_type, payload FROM registry.events WHERE stream_id = ANY($1)", streams
        )
        if policy.disclose("registry", row["event_type"], row["payload"]) is not None
    }
    facts = Counter(
        row[0]
        for row in fs.sql(
            "SELECT payload->>'source_event_id' FROM disclosure.events WHERE payload->>'source_stream_id' = ANY($1)",
            streams,
        )
    )
    assert set(facts) == disclosable and set(facts.values()) == {1}

    # Stores and read models agree: a rebuild from each store gives the same rows.
    for service in ("registry", "capability", "supervision", "disclosure"):
        assert fs.read_models_match_rebuild(service), f"{service}'s read models differ from a rebuild"
    fs.audit_verify()  # chains, log, checkpoints, and every topic against its store
    print(f"crash test: {load.interrupted} requests cut off, {resent} events re-sent by a relay")
