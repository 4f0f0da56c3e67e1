"""Fault injection on the real stack: a stack of our own whose database and broker we may break.

The stack is started exactly like ``chengneng up`` (its supervisor restarts a service
process that dies), but on an embedded PostgreSQL and an embedded broker that belong to
the test module, so stopping them disturbs no other test. Helpers here kill service
processes, stop and start the database and the broker, and read the stores directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import psutil
import pytest
from aiokafka import AIOKafkaConsumer

from shared import db, kafka, soak
from shared.embedded import EmbeddedBroker, EmbeddedPostgres, start_broker, start_postgres
from tests.conftest import Stack, alive, start_stack, stop_stack, wait_until

DEYANG = "510600"
PUBLISHING = ("registry", "capability", "supervision", "disclosure")

CONSUMERS = [
    (service, spec.name, source)
    for service in PUBLISHING
    for spec in importlib.import_module(f"services.{service}.app").SERVICE.consumers
    for source in spec.sources
    if source in PUBLISHING  # the deadline processor keeps no event store
]
"""(service, consumer, source service) for every consumer of a service's events."""

READ_MODELS = {
    "registry": ("functions", "function_lists"),
    "capability": ("societies", "selections"),
    "supervision": ("cases",),
    "disclosure": ("p_functions", "p_list_versions", "p_societies", "p_selections", "p_cases"),
}
"""The tables each service's ``projections.rebuild`` recomputes from its store."""


@dataclass
class FaultStack:
    """A running stack plus the handles to break it."""

    stack: Stack
    pg_home: Path
    pg: EmbeddedPostgres
    broker: EmbeddedBroker
    tainted: bool = False
    """Set by a test that leaves what no later test may find (poison on the topics): the next
    module that asks for the stack gets a new one, whatever order the modules run in."""

    # --- processes ------------------------------------------------------------------

    def pid(self, name: str) -> int | None:
        """The pid of the service process `up` runs for ``name`` (None while it is down)."""
        for child in psutil.Process(self.stack.process.pid).children():
            try:
                cmd = child.cmdline()
                if "serve" in cmd and cmd[cmd.index("serve") + 1] == name and child.status() != psutil.STATUS_ZOMBIE:
                    return int(child.pid)
            except (psutil.NoSuchProcess, psutil.ZombieProcess, IndexError):
                continue
        return None

    def kill9(self, name: str) -> int:
        """SIGKILL the service: no shutdown code runs, as in a power cut or an OOM kill."""
        pid = self.send(name, signal.SIGKILL)
        wait_until(lambda: not alive(pid), timeout=10, message=f"{name} (pid {pid}) to die")
        return pid

    def pause(self, name: str) -> int:
        """SIGSTOP the service: it does nothing, and holds what it holds, until ``resume``."""
        return self.send(name, signal.SIGSTOP)

    def resume(self, pid: int) -> None:
        psutil.Process(pid).send_signal(signal.SIGCONT)

    def send(self, name: str, sig: signal.Signals) -> int:
        """Send the service's process ``sig``; its pid."""
        pid = self.pid(name)
        assert pid is not None, f"{name} is not running"
        psutil.Process(pid).send_signal(sig)
        return pid

    def wait_restarted(self, name: str, old_pid: int, timeout: float = 90) -> int:
        """`up` restarts a process that died; wait until the new one answers /health."""

        def restarted() -> int | None:
            pid = self.pid(name)
            if pid is None or pid == old_pid:
                return None
            return pid if self.healthy(name) else None

        return int(wait_until(restarted, timeout=timeout, interval=0.5, message=f"{name} to be restarted"))

    def healthy(self, name: str) -> bool:
        try:
            return httpx.get(f"{self.stack.urls[name]}/health", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    # --- the database -----------------------------------------------------------------

    def stop_database(self) -> None:
        self.pg.stop()

    def start_database(self) -> None:
        self.pg = start_postgres(self.pg_home)

    def sql(self, query: str, *args: Any) -> list[asyncpg.Record]:
        """Run one query as the administrator (every schema readable)."""

        async def run() -> list[asyncpg.Record]:
            conn = await db.connect(self.stack.database_url, "public")
            try:
                return list(await conn.fetch(query, *args))
            finally:
                await conn.close()

        return asyncio.run(run())

    def value(self, query: str, *args: Any) -> Any:
        rows = self.sql(query, *args)
        return rows[0][0] if rows else None

    def relay_caught_up(self, service: str) -> bool:
        """Every event of the service is sealed and the relay has published the whole log."""
        return self.relay_behind(service) is None

    def relay_behind(self, service: str) -> str | None:
        """What the service's sealer or relay has still to do, or None when it is caught up."""
        rows = self.sql(
            f"""SELECT (SELECT count(*) FROM {service}.events) AS stored,
                       (SELECT count(*) FROM {service}.log_entries) AS sealed,
                       (SELECT coalesce(max(position), 0) FROM {service}.relay_positions) AS published"""
        )
        stored, sealed, published = rows[0]
        if stored == sealed == published:
            return None
        return f"{service}: {stored} stored, {sealed} sealed, {published} published"

    def wait_quiet(self, timeout: float = 90) -> None:
        """Every relay caught up and every consumer idle for a moment (nothing left in flight).

        On a timeout the failure names what was still behind, so a stuck relay or consumer
        can be told from a slow one."""

        def counts() -> tuple[int, ...]:
            out = []
            for service in PUBLISHING:
                out.append(self.value(f"SELECT count(*) FROM {service}.events"))
                out.append(self.value(f"SELECT count(*) FROM {service}.inbox"))
            return tuple(out)

        last, same, behind = None, 0, ["nothing checked yet"]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            behind = [b for s in PUBLISHING if (b := self.relay_behind(s))] + self.consumers_behind()
            if behind:
                same = 0
            else:
                now = counts()
                same = same + 1 if now == last else 0
                last = now
                if same >= 2:
                    return
                behind = ["still moving"]
            time.sleep(1.0)
        raise AssertionError(
            f"timed out after {timeout:.0f} s waiting for every relay and consumer to settle: {behind}"
        )

    def consumers_behind(self) -> list[str]:
        """Each consumer with stored events of its sources it has not applied or dead-lettered:
        how many, and how many of those it holds back. Stillness alone is not enough to call
        the stack quiet: a restarted consumer waits out the dead member's session before the
        group gives it partitions, and nothing moves meanwhile."""
        behind = []
        for service, consumer, source in CONSUMERS:
            missing, held = self.sql(
                f"""SELECT count(*), count(*) FILTER (WHERE i.outcome = 'held_back') FROM {source}.events e
                    LEFT JOIN {service}.inbox i ON i.consumer = $1 AND i.event_id = e.event_id
                    WHERE i.event_id IS NULL OR i.outcome = 'held_back'""",
                consumer,
            )[0]
            if missing:
                behind.append(f"{consumer}: {missing} of {source}'s events not applied ({held} held back)")
        return behind

    def progress(self, consumer: str, prefix: str) -> tuple[int, int]:
        """How many of the registry events of the load ``prefix`` the consumer applied, of how many stored."""
        schema = consumer.split("-")[0]
        stored, applied = self.sql(
            f"""SELECT (SELECT count(*) FROM registry.events WHERE stream_id LIKE $1),
                       (SELECT count(*) FROM {schema}.inbox i JOIN registry.events e USING (event_id)
                        WHERE i.consumer = $2 AND e.stream_id LIKE $1)""",
            f"function-{prefix}-%",
            consumer,
        )[0]
        return int(applied), int(stored)

    def read_models_match_rebuild(self, service: str) -> bool:
        """Rebuild the service's read models from its store, compare, and roll the rebuild back."""
        projections = importlib.import_module(f"services.{service}.projections")

        async def snapshot(conn: asyncpg.Connection) -> list[list[str]]:
            out = []
            for table in READ_MODELS[service]:
                rows = await conn.fetch(f"SELECT * FROM {table}")
                out.append(sorted(json.dumps(dict(r), sort_keys=True, default=str) for r in rows))
            return out

        async def run() -> bool:
            conn = await db.connect(self.stack.database_url, service)
            try:
                transaction = conn.transaction(isolation="repeatable_read")
                await transaction.start()
                try:
                    before = await snapshot(conn)
                    await projections.rebuild(conn)
                    after = await snapshot(conn)
                finally:
                    await transaction.rollback()
            finally:
                await conn.close()
            for table, b, a in zip(READ_MODELS[service], before, after, strict=True):
                if b != a:
                    print(f"{service}.{table}: {len(b)} rows kept, {len(a)} rebuilt; first difference:")
                    print(next(((x, y) for x, y in zip(b, a, strict=False) if x != y), None))
            return before == after

        return asyncio.run(run())

    def crash_database(self) -> None:
        """SIGKILL PostgreSQL and every backend at once, as a machine losing power would."""
        postmaster = psutil.Process(self.pg.pid)
        for proc in [postmaster, *postmaster.children(recursive=True)]:
            with contextlib.suppress(psutil.NoSuchProcess):
                proc.send_signal(signal.SIGKILL)
        wait_until(lambda: not alive(self.pg.pid), timeout=10, message="PostgreSQL to die")

    def audit_verify(self) -> str:
        """`chengneng audit verify` over the stores and the topics, as an auditor runs it."""
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "shared.cli",
                "audit",
                "verify",
                "--database-url",
                self.stack.database_url,
                "--kafka-bootstrap",
                self.broker.bootstrap,
                "--keys",
                str(self.stack.home / "keys"),
            ],
            env={**os.environ, "CHENGNENG_HOME": str(self.stack.home)},
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
        return done.stdout

    def pilot(self, name: str) -> None:
        """One pilot through every service over HTTP (the soak's), and the deadline processor's copy of its case."""
        soak.run_pilot(self.stack.urls, self.stack.home / "keys" / "token-signing.pem", name)
        wait_until(
            lambda: self.value("SELECT count(*) FROM deadlines.cases WHERE project_id LIKE $1", f"{name}-f-%"),
            timeout=60,
            message="the deadline processor to fold the pilot's case",
        )

    # --- HTTP -------------------------------------------------------------------------

    def client(self, service: str, role: str, org: str, jurisdiction: str = DEYANG) -> httpx.Client:
        return self.stack.client(service, self.stack.token(role, org, jurisdiction))


class FunctionLoad(threading.Thread):
    """Clients proposing, listing and opening functions in the registry, as fast as they can.

    Each command carries an Idempotency-Key and is retried until it succeeds when the answer
    is a dropped connection or a 503, as a careful client would; any other failure is noted.
    """

    def __init__(self, fs: FaultStack, prefix: str, *, workers: int = 4, functions: int = 60) -> None:
        super().__init__(daemon=True)
        self.fs, self.prefix, self.workers, self.functions = fs, prefix, workers, functions
        self.stop = threading.Event()
        self.done: list[str] = []
        self.failures: list[str] = []
        self.interrupted = 0
        self._next = 0
        self._lock = threading.Lock()

    def completed(self) -> int:
        return len(self.done)

    def run(self) -> None:
        threads = [threading.Thread(target=self._work, daemon=True) for _ in range(self.workers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    def _take(self) -> int | None:
        with self._lock:
            if self._next >= self.functions or self.stop.is_set():
                return None
            self._next += 1
            return self._next - 1

    def _work(self) -> None:
        department = self.fs.client("registry", "department", "deyang-sci")
        while (n := self._take()) is not None:
            fid = f"{self.prefix}-{n:03d}"
            steps = [
                ("/functions", award_proposal(fid), 201),
                (f"/functions/{fid}/listing", {}, 200),
                (
                    f"/functions/{fid}/opening",
                    {"qualification_conditions": ["registered 3 years"], "thresholds": [], "min_applicants": 1},
                    200,
                ),
            ]
            if all(self._command(department, fid, i, *step) for i, step in enumerate(steps)):
                with self._lock:
                    self.done.append(fid)

    def _command(self, client: httpx.Client, fid: str, i: int, path: str, body: dict[str, Any], ok: int) -> bool:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not self.stop.is_set():
            try:
                response = client.post(path, json=body, headers={"Idempotency-Key": f"{fid}-{i}"})
            except httpx.TransportError:
                with self._lock:
                    self.interrupted += 1
                time.sleep(0.3)
                continue
            if response.status_code == ok:
                return True
            if response.status_code != 503:
                self.failures.append(f"{path}: {response.status_code} {response.text[:200]}")
                return False
            time.sleep(0.3)
        self.failures.append(f"{path}: gave up")
        return False


def award_proposal(fid: str) -> dict[str, str]:
    """The body of ``POST /functions`` for a Deyang award-nomination function."""
    return {
        "function_id": fid,
        "jurisdiction": DEYANG,
        "title": f"科技奖励推荐 {fid}",
        "category": "award_nomination",
        "sub_kind": "national_award_nomination",
        "scope": "whole",
        "entrustment_mode": "purchase_of_services",
        "department": "deyang-sci",
    }


FAULTS_DIR = Path(__file__).resolve().parent
_RUNNING: list[FaultStack] = []
"""The one fault stack, shared by the modules of this directory and stopped when they are done."""


def _start(scratch: Callable[[str], Path]) -> FaultStack:
    home = scratch("faults")
    pg_home = home / "pg"
    pg = start_postgres(pg_home)
    broker = start_broker(home / "broker")
    try:
        with pytest.MonkeyPatch.context() as env:
            # Checkpoints and deadline checks often, so a test sees them resume after a fault.
            env.setenv("CHENGNENG_CHECKPOINT_INTERVAL_S", "2")
            env.setenv("CHENGNENG_DEADLINE_CHECK_INTERVAL_S", "1")
            stack = start_stack(
                home / ".chengneng", "--database-url", pg.admin_url, "--kafka-bootstrap", broker.bootstrap
            )
    except BaseException:
        broker.stop()
        pg.stop()
        raise
    return FaultStack(stack, pg_home, pg, broker)


LOGS_KEPT = Path(tempfile.gettempdir()) / "chengneng-fault-logs"
"""The last fault stack's logs are copied here, to read after a failure; a failed test's
are also kept beneath it, in a directory named after the test, as they were when it failed."""


def _stop(fs: FaultStack) -> None:
    try:
        if fs.stack.process.poll() is None:
            stop_stack(fs.stack)
    finally:
        fs.broker.stop()
        fs.pg.stop()  # nothing to do if a failed test left it stopped
        shutil.copytree(fs.stack.home / "logs", LOGS_KEPT, dirs_exist_ok=True)


@pytest.fixture(scope="module")
def fault_stack(scratch: Callable[[str], Path]) -> FaultStack:
    """The fault stack: started by the first module of this directory that needs it."""
    if _RUNNING and _RUNNING[0].tainted:
        _stop(_RUNNING.pop())
    if not _RUNNING:
        _RUNNING.append(_start(scratch))
    fs = _RUNNING[0]
    for name in PUBLISHING:  # a previous module's fault must not leak into the next one
        wait_until(lambda name=name: fs.healthy(name), timeout=90, message=f"{name} healthy")
    return fs


@pytest.fixture(scope="session", autouse=True)
def _no_fault_stack_left() -> Iterator[None]:
    yield
    while _RUNNING:  # the run was interrupted inside this directory
        _stop(_RUNNING.pop())


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[pytest.TestReport]:
    """Keep the stack's logs as they were when a test failed: later tests append to them, and a
    tainted stack's are replaced by a new stack's."""
    report = yield
    if report.failed and _RUNNING:
        kept = LOGS_KEPT / "failed" / f"{item.name}-{report.when}"
        shutil.copytree(_RUNNING[0].stack.home / "logs", kept, dirs_exist_ok=True)
        report.sections.append(("fault stack logs", f"kept in {kept}"))
    return report


def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """Stop the fault stack as soon as the tests of this directory are done."""
    if _RUNNING and (nextitem is None or FAULTS_DIR not in Path(nextitem.path).resolve().parents):
        _stop(_RUNNING.pop())


# --- what the topics hold ----------------------------------------------------------------


async def read_topic(bootstrap: str, topic: str, *, settle_s: float = 2.0, timeout_s: float = 60.0) -> list[Any]:
    """Every record of ``topic`` from the beginning (no group), read until it stays quiet."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
        client_id=f"fault-test-{uuid.uuid4().hex[:6]}",
    )
    await consumer.start()
    records: list[Any] = []
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        quiet_since = loop.time()
        while loop.time() < deadline:
            batch = await consumer.getmany(timeout_ms=300)
            got = [r for rs in batch.values() for r in rs]
            records.extend(got)
            if got or not consumer.assignment():
                quiet_since = loop.time()
            elif loop.time() - quiet_since >= settle_s:
                break
    finally:
        await consumer.stop()
    return records


def topic_events(bootstrap: str, service: str) -> list[kafka.IncomingEvent]:
    """The events on a service's topic, in partition order (per stream: publication order)."""
    records = asyncio.run(read_topic(bootstrap, kafka.events_topic(service)))
    records.sort(key=lambda r: (r.partition, r.offset))
    return [kafka.from_record(r.headers, r.key, r.value) for r in records]
