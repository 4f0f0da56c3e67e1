"""The stack as a user runs it: broker loss, Ctrl-C, restart with events kept, two homes."""

from __future__ import annotations

import asyncio
import json
import signal
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer

from shared import kafka
from shared.embedded import start_broker
from tests.conftest import Stack, alive, start_stack, stop_stack, wait_until

pytestmark = pytest.mark.stack

DEYANG = "510600"


def propose_and_list(stack: Stack, title: str) -> str:
    department = stack.client("registry", stack.token("department", "deyang-sci", DEYANG))
    fid = f"f-{uuid.uuid4().hex[:8]}"
    body = {
        "function_id": fid,
        "jurisdiction": DEYANG,
        "title": title,
        "category": "award_nomination",
        "sub_kind": "national_award_nomination",
        "scope": "whole",
        "entrustment_mode": "purchase_of_services",
        "department": "deyang-sci",
    }
    assert department.post("/functions", json=body).status_code == 201
    assert department.post(f"/functions/{fid}/listing", json={}).status_code == 200
    return fid


def public_ids(stack: Stack) -> set[str]:
    response = stack.client("disclosure").get(f"/public/jurisdictions/{DEYANG}/functions")
    return {f["function_id"] for f in response.json()["functions"]}


async def topic_event_ids(bootstrap: str, topic: str, expected: int) -> list[str]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    ids: list[str] = []
    try:
        for _ in range(100):
            for records in (await consumer.getmany(timeout_ms=200)).values():
                ids.extend(dict(r.headers)["ce_id"].decode() for r in records)
            if len(ids) >= expected:
                break
    finally:
        await consumer.stop()
    return ids


def test_broker_restarted_empty_the_relay_republishes_and_the_public_list_stays_right(scratch_dir: Path) -> None:
    broker = start_broker(scratch_dir / "broker")
    stack = start_stack(scratch_dir / "home", "--kafka-bootstrap", broker.bootstrap)
    try:
        before = {propose_and_list(stack, f"奖励推荐 {n}") for n in range(3)}
        wait_until(lambda: public_ids(stack) == before, message="the public list before the broker restart")

        broker.restart()  # memory storage: every topic, offset and group is gone
        after = before | {propose_and_list(stack, "重启之后")}
        wait_until(lambda: public_ids(stack) == after, timeout=60, message="the public list after the restart")

        # The topic holds every stored event again (4 functions x 2 events), each id once at least.
        ids = asyncio.run(topic_event_ids(broker.bootstrap, kafka.events_topic("registry"), 8))
        assert len(set(ids)) == 8
        log = (stack.home / "logs" / "registry.log").read_text()
        assert "republishing every event from the store" in log
    finally:
        stop_stack(stack)
        broker.stop()


def test_ctrl_c_stops_cleanly_and_a_restart_keeps_every_stored_event(scratch_dir: Path) -> None:
    home = scratch_dir / ".chengneng"
    first = start_stack(home)  # fully embedded: PostgreSQL and broker both started by `up`
    assert any(line.strip().startswith("registry") and "http://127.0.0.1:" in line for line in first.output)
    assert any("kafka" in line for line in first.output)
    assert any("postgresql://" in line for line in first.output)
    fids = {propose_and_list(first, f"保留 {n}") for n in range(2)}
    wait_until(lambda: public_ids(first) == fids, message="the public list")
    urls = first.urls
    stopped = stop_stack(first)
    assert "stopped" in stopped

    second = start_stack(home)
    try:
        assert second.urls == urls  # one home keeps its addresses
        registry = second.client("registry", second.token("auditor", "national-audit", "100000"))
        for fid in fids:
            detail = registry.get(f"/functions/{fid}").json()
            assert [e["event_type"] for e in detail["history"]] == ["FunctionProposed", "FunctionListed"]
        # The new broker is empty: the relay republishes and disclosure is rebuilt from Kafka.
        wait_until(lambda: public_ids(second) == fids, timeout=60, message="the public list after restart")
    finally:
        stop_stack(second)


def test_two_stacks_with_different_homes_do_not_collide(scratch_dir: Path) -> None:
    a = start_stack(scratch_dir / "a")
    try:
        b = start_stack(scratch_dir / "b")
        try:
            assert set(a.urls.values()).isdisjoint(b.urls.values())
            assert a.kafka != b.kafka and a.database_url != b.database_url
            fid = propose_and_list(a, "只在 A")
            wait_until(lambda: fid in public_ids(a), message="A's list")
            assert fid not in public_ids(b)
        finally:
            stop_stack(b)
    finally:
        stop_stack(a)


def test_a_closed_terminal_stops_everything_even_with_nobody_reading_the_output(scratch_dir: Path) -> None:
    """SIGHUP with the output pipe gone (the terminal closed): every service process and the
    embedded PostgreSQL and broker stop, none is left behind without its supervisor."""
    home = scratch_dir / ".chengneng"
    stack = start_stack(home)
    info = json.loads((home / "stack.json").read_text())
    children = list(info["pids"].values())
    postmaster = int((home / "postgres" / "postmaster.pid").read_text().splitlines()[0])
    assert stack.process.stdout is not None
    stack.process.stdout.close()  # nobody reads what `up` prints any more
    stack.process.send_signal(signal.SIGHUP)
    stack.process.wait(timeout=60)
    wait_until(
        lambda: not any(alive(pid) for pid in [*children, postmaster]),
        timeout=30,
        message="every child of up to stop",
    )
