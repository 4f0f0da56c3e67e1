"""The embedded broker forgets everything (restarted empty) or goes away for a while.

Restarted empty: every relay publishes its store again and the consumers' inboxes make
the second delivery change nothing downstream — also when it happens under load, where
records sent during the restart reach the new broker before the republished history and
consumers must still apply every stream in order. Stopped: commands still succeed (the
events table is the outbox), and publication catches up when the broker returns.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from shared import kafka
from tests.conftest import wait_until
from tests.faults.conftest import PUBLISHING, FaultStack, FunctionLoad, read_topic

pytestmark = pytest.mark.stack

DOWNSTREAM = ("capability", "supervision", "disclosure")


def downstream_state(fs: FaultStack) -> dict[str, tuple[int, int]]:
    """Per consumer service: (events stored, inbox rows) — what a second delivery must not change."""
    return {
        s: (fs.value(f"SELECT count(*) FROM {s}.events"), fs.value(f"SELECT count(*) FROM {s}.inbox"))
        for s in DOWNSTREAM
    }


def every_stored_event_on_its_topic(fs: FaultStack) -> bool:
    for service in PUBLISHING:
        topic = "chengneng.disclosure.public" if service == "disclosure" else kafka.events_topic(service)
        records = asyncio.run(read_topic(fs.broker.bootstrap, topic, settle_s=0.5, timeout_s=30))
        ids = {dict(r.headers)["ce_id"].decode() for r in records}
        stored = {str(r[0]) for r in fs.sql(f"SELECT event_id FROM {service}.events")}  # public: the facts' ids
        if not stored <= ids:
            return False
    return True


def run_load(fs: FaultStack, prefix: str, functions: int) -> FunctionLoad:
    load = FunctionLoad(fs, prefix, workers=3, functions=functions)
    load.start()
    load.join(timeout=120)
    assert not load.is_alive() and load.failures == [], load.failures[:5]
    assert len(load.done) == functions
    return load


def propagated(fs: FaultStack, load: FunctionLoad) -> bool:
    """Each function of the load has its selection in capability and its facts in public."""
    fids = [f"selection-{fid}" for fid in load.done]
    selections = fs.value("SELECT count(DISTINCT stream_id) FROM capability.events WHERE stream_id = ANY($1)", fids)
    public = fs.value(
        "SELECT count(DISTINCT payload->>'source_stream_id') FROM disclosure.events "
        "WHERE payload->>'source_stream_id' = ANY($1)",
        [f"function-{fid}" for fid in load.done],
    )
    return bool(selections == public == len(load.done))


def test_a_broker_restarted_empty_gets_every_event_again_and_downstream_state_does_not_change(
    fault_stack: FaultStack,
) -> None:
    fs = fault_stack
    before_load = run_load(fs, f"empty-{uuid.uuid4().hex[:6]}", 6)
    wait_until(lambda: propagated(fs, before_load), timeout=90, message="the load to reach every service")
    fs.wait_quiet()
    before = downstream_state(fs)

    fs.broker.restart()  # memory storage: every topic, record, offset and group is gone

    wait_until(
        lambda: every_stored_event_on_its_topic(fs), timeout=120, interval=2.0, message="every relay to republish"
    )
    fs.wait_quiet()
    assert downstream_state(fs) == before  # applied once before, so the second delivery changed nothing
    for service in PUBLISHING:
        if fs.value(f"SELECT count(*) FROM {service}.events"):
            log = (fs.stack.home / "logs" / f"{service}.log").read_text()
            assert "republishing every event from the store" in log, service

    # Work goes on: new events reach every service once.
    fs.pilot(f"broker-empty-{uuid.uuid4().hex[:6]}")  # every service and the deadline processor work on
    dead = asyncio.run(read_topic(fs.broker.bootstrap, kafka.DEADLETTER_TOPIC, settle_s=0.5, timeout_s=10))
    assert dead == [], [dict(r.headers).get("deadletter_reason") for r in dead]


def test_with_the_broker_away_commands_still_succeed_and_publishing_catches_up(fault_stack: FaultStack) -> None:
    fs = fault_stack
    fs.wait_quiet()
    fs.broker.stop()
    try:
        began = time.monotonic()
        away = run_load(fs, f"away-{uuid.uuid4().hex[:6]}", 6)  # 18 commands, all accepted
        assert time.monotonic() - began < 60
        assert not fs.relay_caught_up("registry")  # stored, not published: the outbox holds them
        time.sleep(2)  # relays, sealers and consumers keep failing to reach the broker meanwhile
        assert all(fs.healthy(name) for name in PUBLISHING)
    finally:
        fs.broker.start()

    wait_until(lambda: propagated(fs, away), timeout=120, interval=1.0, message="publishing to catch up")
    fs.wait_quiet()
    for service in PUBLISHING:
        assert fs.relay_caught_up(service), service
    # Exactly once downstream: one selection each, one fact per disclosed event.
    fids = [f"selection-{fid}" for fid in away.done]
    opened = fs.value(
        "SELECT count(*) FROM capability.events WHERE stream_id = ANY($1) AND event_type = 'SelectionOpened'", fids
    )
    assert opened == len(away.done)
    facts = fs.sql(
        "SELECT payload->>'source_event_id', count(*) FROM disclosure.events "
        "WHERE payload->>'source_stream_id' = ANY($1) GROUP BY 1",
        [f"function-{fid}" for fid in away.done],
    )
    assert facts and {r[1] for r in facts} == {1}
    fs.pilot(f"broker-away-{uuid.uuid4().hex[:6]}")  # every service and the deadline processor work on
    fs.wait_quiet()
    fs.audit_verify()  # chains, log, checkpoints, and every topic against its store


def public_matches_registry(fs: FaultStack, load: FunctionLoad) -> list[tuple[str, str, str | None]]:
    """Functions whose public status differs from the registry's (empty when all agree)."""
    ids = list(load.done)
    registry = dict(fs.sql("SELECT function_id, status FROM registry.functions WHERE function_id = ANY($1)", ids))
    public = dict(fs.sql("SELECT function_id, status FROM disclosure.p_functions WHERE function_id = ANY($1)", ids))
    return [(fid, registry[fid], public.get(fid)) for fid in ids if public.get(fid) != registry[fid]]


def test_a_broker_restarted_empty_under_load_keeps_every_stream_in_order_downstream(fault_stack: FaultStack) -> None:
    """Records a relay sends while the broker restarts reach the new, empty broker before the
    republished history: consumers must not apply such a record before the events it follows."""
    fs = fault_stack
    load = FunctionLoad(fs, f"under-{uuid.uuid4().hex[:6]}", workers=4, functions=40)
    load.start()
    try:
        wait_until(lambda: load.completed() >= 8, timeout=60, message="the load to run")
        fs.broker.restart()
        load.join(timeout=180)
        assert not load.is_alive() and load.failures == [], load.failures[:5]
    finally:
        load.stop.set()
    wait_until(lambda: propagated(fs, load), timeout=120, interval=1.0, message="the load to reach every service")
    fs.wait_quiet()
    assert public_matches_registry(fs, load) == []
    for service in PUBLISHING:
        assert fs.read_models_match_rebuild(service), service
    # Events that came early were held back and applied after their predecessors: none is left.
    for service in DOWNSTREAM:
        assert fs.value(f"SELECT count(*) FROM {service}.inbox WHERE outcome = 'held_back'") == 0, service
    assert fs.value("SELECT count(*) FROM deadlines.held_events") == 0
