"""The ``chengneng`` command: run the stack, run one service, issue tokens, check schemas."""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from types import FrameType
from typing import Annotated

import httpx
import typer

from shared.settings import Settings

app = typer.Typer(help="chengneng (承能): functions transferred to societies, tracked as events.", no_args_is_help=True)
token_app = typer.Typer(help="Signed tokens for the HTTP APIs.", no_args_is_help=True)
schemas_app = typer.Typer(help="JSON Schemas of the events, generated from the code.", no_args_is_help=True)
app.add_typer(token_app, name="token")
app.add_typer(schemas_app, name="schemas")
audit_app = typer.Typer(
    help="The auditor's tools: verify the stores, replay state, follow a case, export a bundle.",
    no_args_is_help=True,
)
app.add_typer(audit_app, name="audit")

SERVICES = ("registry", "capability", "supervision", "disclosure")
"""Every service, in start order; each is ``services/<name>/app.py:SERVICE``."""

PROCESSORS = {"deadlines": "services.supervision.deadlines"}
"""Stream processors (faust workers), each a process of its own with a ``/health`` page."""

PROCESSES = (*SERVICES, *PROCESSORS)
"""Everything `up` starts, in order."""

SCHEMA_DIRS = (*(s for s in SERVICES if s != "disclosure"), "public")
"""Folders of ``schemas/``: each service's internal events, and the public facts."""

REPO_ROOT = Path(__file__).resolve().parent.parent


def load_service(name: str):  # type: ignore[no-untyped-def]
    if name not in SERVICES:
        raise typer.BadParameter(f"unknown service {name!r}; choose from {', '.join(PROCESSES)}")
    return importlib.import_module(f"services.{name}.app").SERVICE


def fail(message: str, code: int = 1) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code)


# --- the stack -----------------------------------------------------------------------


@dataclass
class RunningStack:
    """What `up` started: where its state lives, the addresses, and the child processes."""

    settings: Settings
    state: Path
    stopping: bool = False
    urls: dict[str, str] = field(default_factory=dict)
    bootstrap: str = ""
    db_url: str = ""
    children: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    spawn: Callable[[str], subprocess.Popen[bytes]] | None = None


@contextmanager
def _running_stack(database_url: str | None, kafka_bootstrap: str | None, home: Path | None) -> Iterator[RunningStack]:
    """Start the whole stack (as `up` does) and stop it when the block ends; Ctrl-C sets ``stopping``."""
    from shared import embedded
    from shared.auth import ensure_keypair

    overrides = {
        k: v
        for k, v in {
            "DATABASE_URL": database_url,
            "KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
            "CHENGNENG_HOME": home,
        }.items()
        if v is not None
    }
    settings = Settings(**overrides)  # type: ignore[arg-type]
    state = settings.home.expanduser().resolve()
    (state / "logs").mkdir(parents=True, exist_ok=True)
    ensure_keypair(settings.private_key_path, settings.public_key_path)
    stack = RunningStack(settings=settings, state=state)

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stack.stopping = True

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # SIGHUP: its terminal closed
        signal.signal(signum, request_stop)

    pg = broker = None
    children = stack.children
    try:
        db_url = settings.database_url
        if db_url is None:
            typer.echo("starting embedded PostgreSQL ...")
            pg = embedded.start_postgres(state)
            db_url = pg.admin_url
        bootstrap = settings.kafka_bootstrap_servers
        if bootstrap is None:
            typer.echo("starting embedded Kafka-protocol broker (Tansu, memory storage) ...")
            broker = embedded.start_broker(state)
            bootstrap = broker.bootstrap
        env = {
            **os.environ,
            "CHENGNENG_HOME": str(state),
            "DATABASE_URL": db_url,
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "CHENGNENG_TOKEN_PUBLIC_KEY": str(settings.public_key_path.resolve()),
        }
        ports = {name: embedded.stable_port(state, name) for name in PROCESSES}

        def spawn(name: str) -> subprocess.Popen[bytes]:
            log_file = open(state / "logs" / f"{name}.log", "ab")  # noqa: SIM115 - owned by the child
            return subprocess.Popen(
                [sys.executable, "-m", "shared.cli", "serve", name, "--port", str(ports[name])],
                env=env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

        for name in PROCESSES:
            typer.echo(f"starting {name} ...")
            children[name] = spawn(name)
        _wait_healthy(children, ports, state, lambda: stack.stopping)
        urls = {name: f"http://127.0.0.1:{port}" for name, port in ports.items()}
        stack.urls, stack.bootstrap, stack.db_url, stack.spawn = urls, bootstrap, db_url, spawn
        _write_stack_json(stack)
        yield stack
    except embedded.EmbeddedStartError as exc:
        raise fail(str(exc)) from exc
    finally:
        _say("stopping ...")
        for child in children.values():
            if child.poll() is None:
                child.terminate()
        for name, child in children.items():
            try:
                child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                _say(f"{name} did not stop in time; killing it")
                child.kill()
        if broker is not None:
            broker.stop()
        if pg is not None:
            pg.stop()
        _say("stopped; stored events are kept in " + str(state))


def _say(message: str) -> None:
    """Print while stopping, even when nobody reads any more (a closed terminal, a dead pipe):
    a failed print must not skip stopping the children and the embedded servers."""
    try:
        typer.echo(message)
    except OSError:  # BrokenPipeError and friends: send the rest of our output nowhere
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _write_stack_json(stack: RunningStack) -> None:
    """Where everything is (and the process ids, for `chengneng soak`), rewritten on a restart."""
    body = {
        "services": stack.urls,
        "kafka_bootstrap": stack.bootstrap,
        "database_url": stack.db_url,
        "pids": {name: child.pid for name, child in stack.children.items()},
    }
    (stack.state / "stack.json").write_text(json.dumps(body, indent=2))


def _print_addresses(stack: RunningStack, *, until_ctrl_c: bool = True) -> None:
    """The block `up` prints once everything is healthy."""
    typer.echo("")
    typer.secho(f"chengneng is running (home {stack.state})", bold=True)
    for name, url in stack.urls.items():
        what = f"(API docs {url}/docs)" if name in SERVICES else "(stream processor; health at /health)"
        typer.echo(f"  {name:<12} {url}   {what}")
    typer.echo(f"  {'kafka':<12} {stack.bootstrap}")
    typer.echo(f"  {'database':<12} {stack.db_url}")
    typer.echo(f"  {'logs':<12} {stack.state / 'logs'}")
    typer.echo("Get a token:  chengneng token issue --role department --org dept-x --jurisdiction 510600")
    if until_ctrl_c:
        typer.echo("Press Ctrl-C to stop.")


def _serve_until_stopped(stack: RunningStack) -> None:
    """Keep the stack running until Ctrl-C, restarting a process that exits."""
    assert stack.spawn is not None
    restarts: dict[str, int] = {}
    while not stack.stopping:
        time.sleep(0.5)
        for name, child in list(stack.children.items()):
            if child.poll() is not None and not stack.stopping:
                restarts[name] = restarts.get(name, 0) + 1
                typer.secho(
                    f"{name} exited with {child.returncode}; restarting (see {stack.state}/logs/{name}.log)",
                    fg=typer.colors.YELLOW,
                    err=True,
                )
                time.sleep(min(restarts[name], 10))
                stack.children[name] = stack.spawn(name)
                _write_stack_json(stack)


DatabaseUrlOption = Annotated[
    str | None, typer.Option(help="Use this PostgreSQL (admin URL) instead of the embedded one [env DATABASE_URL]")
]
KafkaOption = Annotated[
    str | None, typer.Option(help="Use this Kafka instead of the embedded broker [env KAFKA_BOOTSTRAP_SERVERS]")
]
HomeOption = Annotated[Path | None, typer.Option(help="State directory [env CHENGNENG_HOME, default ./.chengneng]")]


@app.command()
def up(
    database_url: DatabaseUrlOption = None,
    kafka_bootstrap: KafkaOption = None,
    home: HomeOption = None,
    exit_when_ready: Annotated[
        bool, typer.Option("--exit-when-ready", help="Start, print the addresses, then stop everything (for checks)")
    ] = False,
) -> None:
    """Start the whole stack in the foreground and print its addresses; Ctrl-C stops it."""
    with _running_stack(database_url, kafka_bootstrap, home) as stack:
        _print_addresses(stack)
        if not exit_when_ready:
            _serve_until_stopped(stack)


@app.command()
def demo(
    database_url: DatabaseUrlOption = None,
    kafka_bootstrap: KafkaOption = None,
    home: HomeOption = None,
    exit_after: Annotated[
        bool, typer.Option("--exit", help="Stop the stack after the summary instead of serving until Ctrl-C")
    ] = False,
    scenario: Annotated[
        Path | None, typer.Option(help="Directory of the scenario's YAML files [default: the one shipped]")
    ] = None,
) -> None:
    """Start the stack like `up`, play the scenario (the Deyang report and the national pilot) over HTTP,
    compare the disclosed statistics with the report, print the summary and the addresses.

    Exits 1 when a step fails or a disclosed figure differs from the report.
    """
    from shared import demo as scenario_runner

    began = time.monotonic()
    try:
        data = scenario_runner.load_scenario(scenario or scenario_runner.SCENARIO_DIR)
    except scenario_runner.ScenarioError as exc:
        raise fail(str(exc), 2) from exc
    with _running_stack(database_url, kafka_bootstrap, home) as stack:
        started = time.monotonic() - began
        typer.echo("")
        typer.secho(f"playing the scenario ({len(data.levels)} jurisdictions) ...", bold=True)
        outcome = scenario_runner.run(
            stack.urls,
            stack.settings.private_key_path,
            data,
            echo=typer.echo,
            cancelled=lambda: stack.stopping,
        )
        if outcome.aborted:
            raise typer.Exit(130)
        total = time.monotonic() - began
        typer.echo(f"demo took {total:.1f} s (stack start {started:.1f} s, scenario {outcome.seconds:.1f} s)")
        _print_addresses(stack, until_ctrl_c=not exit_after)
        if not exit_after:
            _serve_until_stopped(stack)
    if not outcome.ok:
        raise typer.Exit(1)


@app.command()
def soak(
    duration: Annotated[float, typer.Option(help="how long to keep the load up, in seconds")] = 600.0,
    clients: Annotated[int, typer.Option(min=1, help="concurrent clients, each repeating a pilot end to end")] = 4,
    rate: Annotated[float, typer.Option(min=0, help="commands per second in all (0: as fast as the clients go)")] = 0.0,
    report_every: Annotated[float, typer.Option(min=1, help="seconds between report lines")] = 30.0,
    home: HomeOption = None,
) -> None:
    """A steady command load against a stack started with `up`: throughput, errors and memory over time.

    Each client repeats one pilot through every service (society, function, selection,
    assignment, case, agreement); the report shows commands per second, errors, latency,
    cross-service reaction time, relay lag and the RSS of every process. Exits 1 on any error.
    """
    from shared import soak as soak_runner

    settings = Settings(**({"CHENGNENG_HOME": home} if home else {}))  # type: ignore[arg-type]
    state = settings.home.expanduser().resolve()
    if not (state / "stack.json").exists():
        raise fail(f"no stack.json in {state}: start the stack with `chengneng up` first (same CHENGNENG_HOME)", 2)
    stopping = {"now": False}

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stopping["now"] = True

    signal.signal(signal.SIGINT, request_stop)
    outcome = soak_runner.run(
        state,
        settings.private_key_path,
        duration_s=duration,
        clients=clients,
        rate=rate,
        report_every_s=report_every,
        echo=typer.echo,
        stopping=lambda: stopping["now"],
    )
    if not outcome.ok:
        raise typer.Exit(1)


def _wait_healthy(
    children: dict[str, subprocess.Popen[bytes]], ports: dict[str, int], state: Path, stopping: object
) -> None:
    deadline = time.monotonic() + 90
    pending = set(children)
    while pending:
        if callable(stopping) and stopping():
            raise typer.Exit(130)
        for name in list(pending):
            if children[name].poll() is not None:
                log_tail = (state / "logs" / f"{name}.log").read_text(errors="replace").splitlines()[-25:]
                raise fail(f"{name} exited during start-up with {children[name].returncode}:\n" + "\n".join(log_tail))
            try:
                if httpx.get(f"http://127.0.0.1:{ports[name]}/health", timeout=2).status_code == 200:
                    pending.discard(name)
            except httpx.HTTPError:
                pass
        if time.monotonic() > deadline:
            raise fail(f"not healthy after 90 s: {', '.join(sorted(pending))}; see {state}/logs")
        time.sleep(0.3)


@app.command()
def serve(
    name: Annotated[str, typer.Argument(help=f"one of {', '.join(PROCESSES)}")],
    port: Annotated[int, typer.Option(help="HTTP port [env CHENGNENG_HTTP_PORT]")] = 0,
) -> None:
    """Run one service in the foreground (what `up` and the containers run)."""
    from shared import logging as chengneng_logging
    from shared.runtime import serve as run_service

    settings = Settings()
    chengneng_logging.configure(settings.log_level, service=name)
    chosen = port or settings.http_port
    if not chosen:
        raise fail("give --port or CHENGNENG_HTTP_PORT", 2)
    try:
        if name in PROCESSORS:
            importlib.import_module(PROCESSORS[name]).run(settings, chosen)
        else:
            run_service(load_service(name), settings, chosen)
    except SystemExit as exc:
        if isinstance(exc.code, str):
            raise fail(exc.code, 2) from exc
        raise


# --- tokens --------------------------------------------------------------------------


@token_app.command("issue")
def token_issue(
    role: Annotated[
        str,
        typer.Option(
            help="association, department, society, evaluator, finance_bureau, policy_support, auditor or public"
        ),
    ],
    org: Annotated[str, typer.Option(help="organisation id of the principal")],
    jurisdiction: Annotated[str, typer.Option(help="six-digit division code, e.g. 510600 (central: 100000)")],
    subject: Annotated[str | None, typer.Option(help="the person or system acting; default: the org")] = None,
    ttl_hours: Annotated[float, typer.Option(help="lifetime in hours")] = 12.0,
) -> None:
    """Print a signed token naming role, organisation and jurisdiction."""
    from pydantic import ValidationError

    from shared.auth import ensure_keypair, issue_token, load_private_key
    from shared.principal import Principal

    settings = Settings()
    ensure_keypair(settings.private_key_path, settings.public_key_path)
    try:
        principal = Principal(subject=subject or org, organisation=org, role=role, jurisdiction=jurisdiction)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise fail("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()), 2) from exc
    except Exception as exc:  # InvalidInput from the jurisdiction check
        raise fail(str(exc), 2) from exc
    if ttl_hours <= 0:
        raise fail("--ttl-hours must be positive", 2)
    try:
        token = issue_token(load_private_key(settings.private_key_path), principal, ttl=timedelta(hours=ttl_hours))
    except ValueError as exc:
        raise fail(str(exc), 2) from exc
    typer.echo(token)


@token_app.command("keygen")
def token_keygen(out: Annotated[Path, typer.Option(help="directory for token-signing(.pub).pem")]) -> None:
    """Create an Ed25519 signing key pair (kept if it already exists)."""
    from shared.auth import ensure_keypair

    ensure_keypair(out / "token-signing.pem", out / "token-signing.pub.pem")
    typer.echo(f"keys in {out}: token-signing.pem (secret), token-signing.pub.pem (for the services)")


# --- schemas -------------------------------------------------------------------------


def _all_schemas() -> dict[str, dict[str, object]]:
    from services.disclosure.policy import public_schemas
    from shared.schemas import event_schemas

    out: dict[str, dict[str, object]] = {}
    for name in SERVICES:
        if name != "disclosure":  # its stored events are the public facts, described below
            out.update(event_schemas(name, load_service(name).events))
    out.update(public_schemas())
    return out


@schemas_app.command("generate")
def schemas_generate(root: Annotated[Path, typer.Option(help="schemas directory")] = REPO_ROOT / "schemas") -> None:
    """Write the JSON Schema of every event type and version, and the AsyncAPI document."""
    from shared import asyncapi
    from shared.schemas import write

    written = write(root, _all_schemas())  # type: ignore[arg-type]
    if asyncapi.write(root):
        written.append(root / asyncapi.FILE)
    typer.echo(f"{len(written)} schema file(s) written under {root}")


@schemas_app.command("check")
def schemas_check(root: Annotated[Path, typer.Option(help="schemas directory")] = REPO_ROOT / "schemas") -> None:
    """Exit 1 when the schema files (or the AsyncAPI document) differ from what the code produces."""
    from shared import asyncapi
    from shared.schemas import drift

    problems = drift(root, _all_schemas(), list(SCHEMA_DIRS))  # type: ignore[arg-type]
    problems += asyncapi.drift(root)
    if problems:
        raise fail("schemas drifted from the code (run `chengneng schemas generate`):\n  " + "\n  ".join(problems))
    typer.echo("schemas match the code")


# --- audit ---------------------------------------------------------------------------


def _stack_json() -> dict[str, object]:
    path = Settings().home.expanduser() / "stack.json"
    return json.loads(path.read_text()) if path.exists() else {}  # type: ignore[no-any-return]


def _audit_database(option: str | None) -> str:
    url = option or _stack_json().get("database_url") or Settings().database_url
    if not url:
        raise fail("give --database-url (or run `chengneng up`, whose stack.json names it)", 2)
    return str(url)


def _audit_keys(option: Path | None) -> Path:
    return option or Settings().home.expanduser() / "keys"


def _audit_run(coroutine):  # type: ignore[no-untyped-def]
    import asyncio

    import asyncpg

    try:
        return asyncio.run(coroutine)
    except (OSError, asyncpg.PostgresError, LookupError) as exc:
        raise fail(str(exc) or repr(exc), 2) from exc


ServiceOption = Annotated[
    list[str] | None, typer.Option("--service", help="a service (schema) to audit; repeat for several [default: all]")
]
DatabaseOption = Annotated[
    str | None, typer.Option(help="PostgreSQL URL of a role that reads every schema [default: stack.json]")
]


@audit_app.command("verify")
def audit_verify(
    database_url: DatabaseOption = None,
    kafka_bootstrap: Annotated[str | None, typer.Option(help="Kafka to compare [default: stack.json]")] = None,
    keys: Annotated[
        Path | None, typer.Option(help="directory of checkpoint-<service>.pub.pem [default $CHENGNENG_HOME/keys]")
    ] = None,
    service: ServiceOption = None,
    no_kafka: Annotated[bool, typer.Option("--no-kafka", help="check the stores only")] = False,
    checkpoints: Annotated[
        Path | None, typer.Option(help="checkpoints you kept earlier (JSON, JSON Lines, or GET /audit/checkpoints)")
    ] = None,
    progress_every: Annotated[int, typer.Option(help="a progress line to stderr every N events")] = 10_000,
    jobs: Annotated[
        int | None,
        typer.Option(min=1, help="processes checking the chains of a large store (1: this one only) [default: CPUs]"),
    ] = None,
) -> None:
    """Check hash chains, the log, checkpoint roots, signatures and consistency, and Kafka; exit 1 on any failure."""
    from shared import audit

    url = _audit_database(database_url)
    bootstrap = None if no_kafka else (kafka_bootstrap or _stack_json().get("kafka_bootstrap"))
    try:
        held = audit.load_checkpoint_file(checkpoints) if checkpoints else []
    except (OSError, ValueError, KeyError) as exc:
        raise fail(f"--checkpoints {checkpoints}: {exc}", 2) from exc
    report = _audit_run(
        audit.verify(
            url,
            service or list(audit.SERVICES),
            _audit_keys(keys),
            kafka_bootstrap=str(bootstrap) if bootstrap else None,
            held_checkpoints=held,
            progress_every=progress_every,
            progress=sys.stderr,
            jobs=jobs,
        )
    )
    audit.print_report(report)
    if not report.ok:
        raise typer.Exit(1)


@audit_app.command("replay")
def audit_replay(
    as_of: Annotated[str, typer.Option(help="ISO 8601 time with a zone, e.g. 2025-06-01T12:00:00+08:00")],
    stream: Annotated[str | None, typer.Option(help="one stream id, e.g. function-F-1 [default: every stream]")] = None,
    service: ServiceOption = None,
    database_url: DatabaseOption = None,
) -> None:
    """Print the state of streams as it was at --as-of (events up to then, upcast, folded) as JSON."""
    from datetime import datetime

    from shared import audit

    try:
        moment = datetime.fromisoformat(as_of)
    except ValueError as exc:
        raise fail(f"--as-of: {exc}", 2) from exc
    if moment.tzinfo is None:
        raise fail("--as-of needs a zone (e.g. Z or +08:00)", 2)
    count = _audit_run(
        audit.replay(
            _audit_database(database_url), moment, sys.stdout, stream_id=stream, services=service or audit.SERVICES
        )
    )
    if stream and not count:
        raise fail(f"no stream {stream!r} in {', '.join(service or audit.SERVICES)}")


@audit_app.command("trail")
def audit_trail(
    case_id: Annotated[str, typer.Argument(help="the project id of a supervision case")],
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per line")] = False,
    database_url: DatabaseOption = None,
) -> None:
    """Every event of every service that concerns one case, in time order: who did what, and why."""
    from shared import audit

    entries = _audit_run(audit.trail(_audit_database(database_url), case_id))
    for entry in entries:
        typer.echo(json.dumps(entry.as_json(), ensure_ascii=False) if as_json else entry.line())
    if not as_json:
        typer.echo(f"{len(entries)} event(s) concern case {case_id}")


def _service_url(service: str, url: str | None) -> str:
    if url:
        return url.rstrip("/")
    services = _stack_json().get("services")
    if not isinstance(services, dict) or service not in services:
        raise fail(f"give --url, or run `chengneng up` (its stack.json names {service}'s address)", 2)
    return str(services[service]).rstrip("/")


def _proof_checked(kind: str, body: dict[str, object], ok: bool) -> None:
    typer.echo(json.dumps({**body, "verified": ok}, indent=2))
    if not ok:
        raise fail(f"the {kind} proof does not verify")


@audit_app.command("prove-inclusion")
def audit_prove_inclusion(
    service: Annotated[str, typer.Option(help=f"one of {', '.join(SERVICES)}")],
    position: Annotated[int, typer.Option(help="the event's position in that service's store")],
    url: Annotated[str | None, typer.Option(help="the service's address [default: stack.json]")] = None,
) -> None:
    """Fetch and check the inclusion proof of one event in the service's latest checkpoint."""
    from shared import merkle

    base = _service_url(service, url)
    try:
        entry = httpx.get(f"{base}/audit/entries/{position}", timeout=10)
        latest = httpx.get(f"{base}/audit/checkpoints/latest", timeout=10)
        if entry.status_code != 200 or latest.status_code != 200:
            raise fail(f"{(entry if entry.status_code != 200 else latest).json().get('detail')}", 1)
        index, size = entry.json()["log_index"], latest.json()["tree_size"]
        if index >= size:
            raise fail(f"the event (log index {index}) is not in the latest checkpoint (size {size}) yet", 1)
        proof = httpx.get(f"{base}/audit/proofs/inclusion", params={"log_index": index, "tree_size": size}, timeout=30)
    except httpx.HTTPError as exc:
        raise fail(f"{base} cannot be reached: {exc}", 2) from exc
    body = proof.json()
    checkpoint_root = bytes.fromhex(latest.json()["root_hash"])
    ok = merkle.verify_inclusion(
        bytes.fromhex(body["leaf_hash"]), index, size, [bytes.fromhex(p) for p in body["proof"]], checkpoint_root
    )
    _proof_checked("inclusion", {**body, "checkpoint": latest.json()}, ok)


@audit_app.command("prove-consistency")
def audit_prove_consistency(
    service: Annotated[str, typer.Option(help=f"one of {', '.join(SERVICES)}")],
    first: Annotated[int, typer.Option(help="tree size of the older checkpoint")],
    second: Annotated[int, typer.Option(help="tree size of the newer checkpoint")],
    url: Annotated[str | None, typer.Option(help="the service's address [default: stack.json]")] = None,
) -> None:
    """Fetch and check that the log of size ``second`` extends the log of size ``first``."""
    from shared import merkle

    base = _service_url(service, url)
    try:
        response = httpx.get(f"{base}/audit/proofs/consistency", params={"first": first, "second": second}, timeout=30)
    except httpx.HTTPError as exc:
        raise fail(f"{base} cannot be reached: {exc}", 2) from exc
    if response.status_code != 200:
        raise fail(str(response.json().get("detail")), 1)
    body = response.json()
    # Check against the signed checkpoints of those sizes where they exist, not only the roots served.
    roots = {"first": bytes.fromhex(body["first_root"]), "second": bytes.fromhex(body["second_root"])}
    for name, size in (("first", first), ("second", second)):
        listed = httpx.get(f"{base}/audit/checkpoints", params={"after_size": size - 1, "limit": 1}, timeout=10)
        found = listed.json().get("checkpoints", []) if listed.status_code == 200 else []
        if found and found[0]["tree_size"] == size:
            roots[name] = bytes.fromhex(found[0]["root_hash"])
            body[f"{name}_checkpoint_signed_at"] = found[0]["signed_at"]
    ok = merkle.verify_consistency(
        first, second, roots["first"], roots["second"], [bytes.fromhex(p) for p in body["proof"]]
    )
    _proof_checked("consistency", body, ok)


@audit_app.command("export")
def audit_export(
    out: Annotated[Path, typer.Argument(help="the bundle to write, e.g. audit.jsonl.gz")],
    keys: Annotated[Path | None, typer.Option(help="directory of the checkpoint public keys")] = None,
    service: ServiceOption = None,
    database_url: DatabaseOption = None,
) -> None:
    """Write a self-verifying bundle: events with hashes and leaves, checkpoints, public keys."""
    from shared import audit

    counts = _audit_run(audit.export(_audit_database(database_url), out, _audit_keys(keys), service or audit.SERVICES))
    typer.echo(f"{sum(counts.values())} events of {len(counts)} service(s) written to {out}")


@audit_app.command("verify-export")
def audit_verify_export(
    bundle: Annotated[Path, typer.Argument(help="a bundle written by `chengneng audit export`")],
    keys: Annotated[Path | None, typer.Option(help="also require the bundle's keys to be these")] = None,
) -> None:
    """Re-check a bundle with nothing else (no database, no network); exit 1 on any failure."""
    from shared import audit

    if not bundle.is_file():
        raise fail(f"no bundle at {bundle}", 2)
    report = audit.verify_bundle(bundle, keys_dir=keys, progress=sys.stderr)
    audit.print_report(report)
    if not report.ok:
        raise typer.Exit(1)


MAX_BENCH_SIZE = 100_000_000


def _sizes(text: str) -> tuple[int, ...]:
    """'10000 100000', '10000,100000' or '10_000 1_000_000': commas separate, underscores group."""
    try:
        sizes = tuple(int(part) for part in text.replace(",", " ").split())
    except ValueError:
        raise fail(f"--sizes takes whole numbers, e.g. '10000 100000' or '10_000,100_000', not {text!r}", 2) from None
    if not sizes or min(sizes) < 1 or max(sizes) > MAX_BENCH_SIZE:
        raise fail(f"--sizes must be between 1 and {MAX_BENCH_SIZE:_} events, not {text!r}", 2)
    return sizes


@app.command()
def bench(
    out: Annotated[Path, typer.Option(help="where to write the figures as JSON")] = Path("bench-results.json"),
    sizes: Annotated[str, typer.Option(help="store sizes for the replays, in events")] = "10000 100000 1000000",
    only: Annotated[
        list[str] | None,
        typer.Option(help="run only these workloads: append replay audit kafka catch-up as-of http e2e"),
    ] = None,
    quick: Annotated[bool, typer.Option(help="small sizes and short runs: checks the bench works (CI)")] = False,
    no_reference: Annotated[bool, typer.Option(help="skip the eventsourcing side")] = False,
    rounds: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="runs of each append and replay workload, the sides alternating; the median counts "
            "[default: 3, 1 with --quick]",
        ),
    ] = None,
    profile: Annotated[Path | None, typer.Option(help="write a pyinstrument profile of each workload here")] = None,
    home: Annotated[
        Path | None, typer.Option(help="state of the bench's own servers [default $CHENGNENG_HOME/bench]")
    ] = None,
    database_url: DatabaseUrlOption = None,
) -> None:
    """Measure append, replay, audit, as-of, HTTP and end-to-end figures; print a table, write JSON.

    Runs on a PostgreSQL of its own (embedded, in --home) unless --database-url is given; its
    schemas bench, bench_es, bench_raw and bench_asof are dropped and created again. The eventsourcing
    library runs the same append and replay workloads on the same server in the same run.
    """
    from shared import bench as runner

    unknown = sorted(set(only or ()) - set(runner.WORKLOADS))
    if unknown:
        raise fail(f"unknown workload(s) {', '.join(unknown)}; choose from {' '.join(runner.WORKLOADS)}", 2)
    settings = Settings()
    options = runner.Options(
        home=(home or settings.home / "bench").expanduser().resolve(),
        out=out,
        sizes=_sizes(sizes),
        reference=not no_reference,
        only=frozenset(only or ()),
        profile=profile,
        database_url=database_url or settings.database_url,
    )
    if quick:
        options = runner.quick(options)
    if rounds is not None:
        options = replace(options, rounds=rounds)
    raise typer.Exit(runner.main(options))


if __name__ == "__main__":
    app()
