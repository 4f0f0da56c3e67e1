"""PostgreSQL stops for a while: every service answers 503 with Retry-After, stays up, and
recovers by itself when the database returns — HTTP, relays, sealers and consumers alike."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter

import httpx
import pytest

from tests.conftest import wait_until
from tests.faults.conftest import DEYANG, PUBLISHING, FaultStack, award_proposal

pytestmark = pytest.mark.stack

OUTAGE_S = 8.0


def reads(fs: FaultStack) -> dict[str, tuple[httpx.Client, str]]:
    """One query per service, each of which needs the database."""
    auditor = ("auditor", "national-audit", "100000")
    return {
        "registry": (fs.client("registry", *auditor), "/functions?jurisdiction=510600"),
        "capability": (fs.client("capability", *auditor), "/societies?jurisdiction=510600"),
        "supervision": (fs.client("supervision", *auditor), "/cases?jurisdiction=510600"),
        "disclosure": (fs.stack.client("disclosure"), f"/public/jurisdictions/{DEYANG}/functions"),
    }


def assert_unavailable(response: httpx.Response, what: str) -> None:
    assert response.status_code == 503, f"{what}: {response.status_code} {response.text}"
    assert response.headers.get("retry-after", "").isdigit(), f"{what}: no Retry-After"
    assert response.headers["content-type"].startswith("application/problem+json"), what
    body = response.json()
    assert body["code"] == "database_unavailable" and body["status"] == 503, body


def recovered_under(fs: FaultStack, load: Load) -> None:
    """Every process healthy again and the load going on; then stop it. Its answers were all
    successes or 503s, never a 500 nor a dropped connection."""
    wait_until(
        lambda: all(fs.healthy(name) for name in (*PUBLISHING, "deadlines")),
        timeout=60,
        message="every process healthy",
    )
    done_at_recovery = len(load.done)
    wait_until(lambda: len(load.done) >= done_at_recovery + 5, timeout=60, message="the load to go on")
    load.stop.set()
    load.join(60)
    assert set(load.statuses) <= {"POST 201", "POST 503", "GET 200", "GET 503"}, load.statuses


class Load(threading.Thread):
    """Commands and queries sent without pause across the outage: each answer must be a
    success or a 503 (never a 500, never a dropped connection); each command is retried with
    its Idempotency-Key until it succeeds."""

    def __init__(self, fs: FaultStack, prefix: str) -> None:
        super().__init__(daemon=True)
        self.fs, self.prefix = fs, prefix
        self.statuses: Counter[str] = Counter()
        self.done: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        department = self.fs.client("registry", "department", "deyang-sci")
        public = self.fs.stack.client("disclosure")
        n = 0
        while not self.stop.is_set():
            fid = f"{self.prefix}-{n}"
            while True:
                try:
                    status = department.post(
                        "/functions", json=award_proposal(fid), headers={"Idempotency-Key": f"k-{fid}"}
                    ).status_code
                    self.statuses[f"POST {status}"] += 1
                    read = public.get(f"/public/jurisdictions/{DEYANG}/functions").status_code
                    self.statuses[f"GET {read}"] += 1
                except httpx.HTTPError as exc:
                    self.statuses[f"error {type(exc).__name__}"] += 1
                    status = 0
                if status == 201:
                    break
                time.sleep(0.2)
            self.done.append(fid)
            n += 1


def test_services_answer_503_during_a_database_outage_and_recover_by_themselves(fault_stack: FaultStack) -> None:
    fs = fault_stack
    department = fs.client("registry", "department", "deyang-sci")
    before = f"db-before-{uuid.uuid4().hex[:6]}"
    assert department.post("/functions", json=award_proposal(before)).status_code == 201
    public = fs.stack.client("disclosure")
    wait_until(
        lambda: public.get(f"/public/functions/{before}").status_code == 200,
        timeout=60,
        message="the function to be disclosed before the outage",
    )
    fs.wait_quiet()
    pids = {name: fs.pid(name) for name in (*PUBLISHING, "deadlines")}
    checkpoints_before = {s: fs.value(f"SELECT count(*) FROM {s}.checkpoints") for s in PUBLISHING}

    load = Load(fs, f"db-load-{uuid.uuid4().hex[:6]}")
    load.start()
    wait_until(lambda: len(load.done) >= 5, message="the load to run")
    fs.stop_database()
    try:
        during = f"db-during-{uuid.uuid4().hex[:6]}"
        key = {"Idempotency-Key": f"outage-{during}"}
        began = time.monotonic()
        probes = 0
        while time.monotonic() - began < OUTAGE_S:
            for name, (client, path) in reads(fs).items():
                assert_unavailable(client.get(path), f"GET {name}{path}")
                assert_unavailable(httpx.get(f"{fs.stack.urls[name]}/health", timeout=10), f"{name} /health")
            assert_unavailable(department.post("/functions", json=award_proposal(during), headers=key), "a command")
            deadlines = httpx.get(f"{fs.stack.urls['deadlines']}/health", timeout=10)
            assert_unavailable(deadlines, "the deadline processor's /health")
            probes += 1
            time.sleep(1.0)
        assert probes >= 3
        # Nobody crashed: the same processes are still serving (metrics need no database).
        assert {name: fs.pid(name) for name in pids} == pids
        for name in PUBLISHING:
            assert httpx.get(f"{fs.stack.urls[name]}/metrics", timeout=10).status_code == 200
    finally:
        fs.start_database()

    # No restart: the same processes recover by themselves.
    recovered_under(fs, load)
    assert load.statuses["POST 503"] > 0, load.statuses
    assert {name: fs.pid(name) for name in pids} == pids
    # The command refused during the outage, retried with its key, is applied once.
    for _ in range(2):
        response = department.post("/functions", json=award_proposal(during), headers=key)
        assert response.status_code == 201, response.text
    assert department.post(f"/functions/{during}/listing", json={}).status_code == 200
    opened = department.post(
        f"/functions/{during}/opening",
        json={"qualification_conditions": ["registered 3 years"], "thresholds": [], "min_applicants": 1},
    )
    assert opened.status_code == 200, opened.text
    history = department.get(f"/functions/{during}").json()["history"]
    assert [e["event_type"] for e in history] == ["FunctionProposed", "FunctionListed", "FunctionOpened"]

    # Relays, sealers and consumers recovered too: the new events travel through every service.
    cast = fs.client("capability", "association", "deyang-cast")
    wait_until(
        lambda: cast.get(f"/selections/{during}").status_code == 200,
        timeout=90,
        message="capability's consumer to open the selection",
    )
    wait_until(
        lambda: public.get(f"/public/functions/{during}").status_code == 200,
        timeout=90,
        message="disclosure's consumer and relay",
    )
    ids = [uuid.UUID(e["event_id"]) for e in history]
    for consumer in ("capability-registry", "supervision-registry", "disclosure-registry"):
        schema = consumer.split("-")[0]
        wait_until(
            lambda schema=schema, consumer=consumer: (
                fs.value(
                    f"SELECT count(*) FROM {schema}.inbox WHERE consumer = $1 AND event_id = ANY($2)", consumer, ids
                )
                == len(ids)
            ),
            timeout=60,
            message=f"{consumer} to apply the new events",
        )
    fs.wait_quiet()
    for service in PUBLISHING:
        assert fs.relay_caught_up(service), service
    # Each sealer signs a checkpoint again (every one whose log grew since the outage).
    wait_until(
        lambda: all(
            fs.value(f"SELECT coalesce(max(tree_size), 0) FROM {s}.checkpoints")
            == fs.value(f"SELECT count(*) FROM {s}.log_entries")
            for s in PUBLISHING
        ),
        timeout=60,
        message="checkpoints of the whole log after the outage",
    )
    assert fs.value("SELECT count(*) FROM registry.checkpoints") > checkpoints_before["registry"]
    # Every command of the load is stored once, and disclosed once: nothing lost, nothing doubled.
    streams = [f"function-{fid}" for fid in load.done]
    rows = fs.sql(
        "SELECT stream_id, count(*) FROM registry.events WHERE stream_id = ANY($1) GROUP BY stream_id", streams
    )
    assert sorted(r[0] for r in rows) == sorted(streams) and {r[1] for r in rows} == {1}
    disclosed = fs.value("SELECT count(*) FROM disclosure.events WHERE payload->>'source_stream_id' = ANY($1)", streams)
    assert disclosed == len(streams)
    # Everything of this test was applied; nothing anywhere is left held back. (Dead letters
    # of other tests' poison records on this shared stack are not this test's concern.)
    assert (
        fs.value("SELECT count(*) FROM disclosure.inbox WHERE subject = ANY($1) AND outcome <> 'applied'", streams) == 0
    )
    assert fs.value("SELECT count(*) FROM disclosure.inbox WHERE subject = ANY($1)", streams) >= len(streams)
    assert fs.value("SELECT count(*) FROM disclosure.inbox WHERE outcome = 'held_back'") == 0


def test_a_crashed_database_recovers_and_nothing_is_lost_or_doubled(fault_stack: FaultStack) -> None:
    """kill -9 of PostgreSQL and all its backends under load, then a start with crash recovery."""
    fs = fault_stack
    fs.wait_quiet()
    pids = {name: fs.pid(name) for name in (*PUBLISHING, "deadlines")}
    load = Load(fs, f"db-crash-{uuid.uuid4().hex[:6]}")
    load.start()
    wait_until(lambda: len(load.done) >= 5, message="the load to run")
    fs.crash_database()
    try:
        time.sleep(3)
        assert_unavailable(httpx.get(f"{fs.stack.urls['registry']}/health", timeout=10), "registry /health")
    finally:
        fs.start_database()
    recovered_under(fs, load)
    assert {name: fs.pid(name) for name in pids} == pids

    fs.pilot(f"db-crash-{uuid.uuid4().hex[:6]}")  # every service, consumer and the deadline processor work on
    fs.wait_quiet()
    streams = [f"function-{fid}" for fid in load.done]
    rows = fs.sql(
        "SELECT stream_id, count(*) FROM registry.events WHERE stream_id = ANY($1) GROUP BY stream_id", streams
    )
    assert sorted(r[0] for r in rows) == sorted(streams) and {r[1] for r in rows} == {1}
    disclosed = fs.value("SELECT count(*) FROM disclosure.events WHERE payload->>'source_stream_id' = ANY($1)", streams)
    assert disclosed == len(streams)
    for service in PUBLISHING:
        assert fs.read_models_match_rebuild(service), service
    fs.audit_verify()
