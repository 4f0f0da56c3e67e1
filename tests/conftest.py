"""Fixtures on the real parts: an embedded PostgreSQL, an embedded Kafka-protocol broker,
and the whole stack started with `chengneng up`, exactly as a user starts it.

Set CHENGNENG_TEST_DATABASE_URL (an administrative URL) to run against an existing
PostgreSQL instead of the embedded one.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import psutil
import pytest

from shared import db
from shared.auth import ensure_keypair, issue_token, load_private_key
from shared.commands import Aggregate
from shared.embedded import EmbeddedBroker, start_broker, start_postgres
from shared.messages import Event
from shared.principal import Principal, Role

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def scratch() -> Iterator[Callable[[str], Path]]:
    """Directories for embedded servers, outside pytest's own temp root.

    Each pytest session resets ``/tmp/pytest-of-<user>`` to mode 0700, which would lock the
    embedded PostgreSQL's own OS user out of a data directory beneath it while another
    session runs; these directories are ours and are removed at the end.
    """
    made: list[Path] = []

    def make(prefix: str) -> Path:
        path = Path(tempfile.mkdtemp(prefix=f"chengneng-{prefix}-"))
        path.chmod(0o755)
        made.append(path)
        return path

    yield make
    for path in made:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def scratch_dir(scratch: Callable[[str], Path], request: pytest.FixtureRequest) -> Path:
    return scratch(request.node.name[:40])


@pytest.fixture(scope="session")
def pg_admin_url(scratch: Callable[[str], Path]) -> Iterator[str]:
    url = os.environ.get("CHENGNENG_TEST_DATABASE_URL")
    if url:
        yield url
        return
    pg = start_postgres(scratch("pg-home"))
    try:
        yield pg.admin_url
    finally:
        pg.stop()


@pytest.fixture(scope="session")
def broker(scratch: Callable[[str], Path]) -> Iterator[EmbeddedBroker]:
    """A broker shared by tests that do not restart it."""
    b = start_broker(scratch("broker-home"))
    try:
        yield b
    finally:
        b.stop()


@dataclass
class ServiceDb:
    """A fresh service schema, migrated, with the service's own login-role pool."""

    admin_url: str
    schema: str
    app_url: str
    pool: asyncpg.Pool


@pytest.fixture
async def service_db(pg_admin_url: str) -> AsyncIterator[ServiceDb]:
    schema = "t" + uuid.uuid4().hex[:10]
    await db.migrate(pg_admin_url, schema, [])
    url = db.app_url(pg_admin_url, schema, None)
    pool = await db.create_pool(url, schema, max_size=8)
    try:
        yield ServiceDb(pg_admin_url, schema, url, pool)
    finally:
        await pool.close()
        await db.drop_service(pg_admin_url, schema)  # an existing server is left as it was


# --- the whole stack -------------------------------------------------------------------


@dataclass
class Stack:
    home: Path
    process: subprocess.Popen[str]
    urls: dict[str, str]
    kafka: str
    database_url: str
    output: list[str]

    def token(self, role: Role | str, org: str, jurisdiction: str, *, subject: str | None = None) -> str:
        principal = Principal(subject=subject or org, organisation=org, role=Role(role), jurisdiction=jurisdiction)
        return issue_token(load_private_key(self.home / "keys" / "token-signing.pem"), principal)

    def client(self, service: str, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.urls[service], headers=headers, timeout=15)


def _stop_with_test_process() -> None:
    """Linux: SIGTERM to ``chengneng up`` when the process that started it dies, however it
    dies (a pytest killed from outside would otherwise leave whole stacks running)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


PR_SET_PDEATHSIG = 1


def start_stack(home: Path, *extra: str, env: dict[str, str] | None = None) -> Stack:
    """Run `chengneng up` in a subprocess and wait until it prints that it is running.

    ``env`` adds settings for this stack only (e.g. a shorter checkpoint interval)."""
    home.mkdir(parents=True, exist_ok=True)
    ensure_keypair(home / "keys" / "token-signing.pem", home / "keys" / "token-signing.pub.pem")
    extra_env = env or {}
    env = {
        **os.environ,
        "CHENGNENG_HOME": str(home),
        "CHENGNENG_KAFKA_SESSION_TIMEOUT_MS": "6000",
        "CHENGNENG_TOPIC_CHECK_INTERVAL_S": "1",
    }
    env.pop("DATABASE_URL", None)
    env.pop("KAFKA_BOOTSTRAP_SERVERS", None)
    env.update(extra_env)
    proc = subprocess.Popen(
        [sys.executable, "-m", "shared.cli", "up", *extra],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=_stop_with_test_process,  # one prctl call: safe between fork and exec
    )
    output: list[str] = []
    deadline = time.monotonic() + 120
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise AssertionError("chengneng up exited early:\n" + "".join(output))
        output.append(line)
        if line.startswith("Press Ctrl-C"):
            break
    else:
        proc.kill()
        raise AssertionError("chengneng up did not become ready:\n" + "".join(output))
    info = json.loads((home / "stack.json").read_text())
    return Stack(home, proc, info["services"], info["kafka_bootstrap"], info["database_url"], output)


def alive(pid: int) -> bool:
    """The process exists and is not a zombie waiting for its parent."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@contextmanager
def running_stack(home: Path, *extra: str, env: dict[str, str] | None = None) -> Iterator[Stack]:
    """A stack for the length of a ``with`` block (a fixture's): stopped with Ctrl-C at the end
    unless a test already stopped it."""
    stack = start_stack(home, *extra, env=env)
    try:
        yield stack
    finally:
        if stack.process.poll() is None:
            stop_stack(stack)


def stop_stack(stack: Stack) -> str:
    """Ctrl-C, as a user would; returns what `up` printed while stopping."""
    stack.process.send_signal(signal.SIGINT)
    rest, _ = stack.process.communicate(timeout=60)
    assert stack.process.returncode == 0, rest
    return rest


@pytest.fixture(scope="module")
def stack(scratch: Callable[[str], Path], broker: EmbeddedBroker) -> Iterator[Stack]:
    """The stack on an embedded PostgreSQL of its own and the session's broker."""
    with running_stack(scratch("stack-home") / ".chengneng", "--kafka-bootstrap", broker.bootstrap) as s:
        yield s


def wait_until(predicate, timeout: float = 30.0, interval: float = 0.2, message: str = "condition"):  # type: ignore[no-untyped-def]
    """Poll ``predicate`` until it returns a truthy value; fail with ``message`` otherwise."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {message}; last value: {last!r}")


def recording_aggregate(stream_type: str, record: Callable[[Any], list[Event]]) -> Aggregate[int]:
    """A stream type for tests of the store's machinery: each command records the events
    ``record`` makes of it, and the state only counts them."""
    return Aggregate(
        stream_type=stream_type,
        initial=lambda: 0,
        evolve=lambda count, event: count + 1,
        decide=lambda count, command: record(command),
        jurisdiction_of=lambda state, command: command.issued_by.jurisdiction,
    )
