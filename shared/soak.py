"""The soak: a steady command load against a running stack, with throughput, errors and memory.

``chengneng soak`` (not part of the tests) drives every service over HTTP for a given time,
the way the agencies would: each client repeats one pilot from end to end — a society
registered and assessed, a function proposed, listed and opened, the selection that the
capability service opens from the registry's event, an application, a ranking and a
recommendation, the assignment that makes supervision open the case, and the case through
its plan, leader and tripartite agreement (whose taking effect the registry learns). So the
relays, the consumers and the policies of every service carry the load too.

Every interval it prints commands, commands per second, errors, command latency (p50, p95),
completed pilots, how long a cross-service reaction took (p95), the relays' lag, and the
resident memory of every process of the stack; at the end a summary with the memory trend.
"""

from __future__ import annotations

import contextlib
import json
import re
import statistics
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psutil

from shared.auth import issue_token, load_private_key
from shared.bench import percentile
from shared.principal import Principal, Role

JURISDICTION = "510600"
ASSOCIATION = "deyang-cast"
DEPARTMENT = "deyang-sci"
SERVICES = ("registry", "capability", "supervision", "disclosure", "deadlines")
REACTION_TIMEOUT_S = 60.0

Echo = Callable[[str], None]


class StepFailed(Exception):
    """A command or a cross-service reaction did not succeed; the pilot stops there."""


@dataclass
class Stats:
    """What the clients did, shared between them; the reporter takes one interval at a time."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    commands: int = 0
    reads: int = 0
    pilots: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    reactions: list[float] = field(default_factory=list)
    by_command: dict[str, list[float]] = field(default_factory=dict)
    """Every command's latency by its path template, for the whole run (the summary)."""

    def take(self) -> Stats:
        with self.lock:
            taken = Stats(
                commands=self.commands,
                reads=self.reads,
                pilots=self.pilots,
                errors=self.errors,
                latencies=self.latencies,
                reactions=self.reactions,
            )
            self.commands = self.reads = self.pilots = 0
            self.errors, self.latencies, self.reactions = Counter(), [], []
        return taken


@dataclass
class Sample:
    """One report line."""

    at_s: float
    commands: int
    errors: int
    pilots: int
    rss_mb: dict[str, float]


class Client(threading.Thread):
    """One client repeating the pilot until the soak ends."""

    def __init__(
        self,
        number: int,
        run: str,
        urls: dict[str, str],
        key_path: Path,
        stats: Stats,
        stop: threading.Event,
        rate: float,
    ) -> None:
        super().__init__(daemon=True, name=f"soak-client-{number}")
        self.number, self.run_id, self.urls, self.stats, self.stop = number, run, urls, stats, stop
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self._next_at = time.monotonic()
        key = load_private_key(key_path)

        def token(role: Role, org: str) -> str:
            principal = Principal(subject=org, organisation=org, role=role, jurisdiction=JURISDICTION)
            return issue_token(key, principal, ttl=timedelta(days=7))

        self._token = token
        self._clients: list[httpx.Client] = []

    def client(self, service: str, role: Role, org: str, *, keep: bool = True) -> httpx.Client:
        c = httpx.Client(
            base_url=self.urls[service], headers={"Authorization": f"Bearer {self._token(role, org)}"}, timeout=30
        )
        if keep:
            self._clients.append(c)
        return c

    def run(self) -> None:
        association = {s: self.client(s, Role.ASSOCIATION, ASSOCIATION) for s in ("capability", "supervision")}
        department = {s: self.client(s, Role.DEPARTMENT, DEPARTMENT) for s in ("registry", "supervision")}
        public = httpx.Client(base_url=self.urls["disclosure"], timeout=30)
        self._clients.append(public)
        n = 0
        try:
            while not self.stop.is_set():
                n += 1
                try:
                    self.pilot(f"soak-{self.run_id}-{self.number}-{n}", association, department, public)
                    with self.stats.lock:
                        self.stats.pilots += 1
                except StepFailed:
                    pass
        finally:
            for c in self._clients:
                c.close()

    # --- one pilot, from the society's registration to the agreement in force -------------

    def pilot(
        self,
        name: str,
        association: dict[str, httpx.Client],
        department: dict[str, httpx.Client],
        public: httpx.Client,
    ) -> None:
        sid = f"{name}-s"
        society = {s: self.client(s, Role.SOCIETY, sid, keep=False) for s in ("capability", "supervision")}
        try:
            self._pilot(name, association, department, society, public)
        finally:
            for c in society.values():
                c.close()

    def _pilot(
        self,
        name: str,
        association: dict[str, httpx.Client],
        department: dict[str, httpx.Client],
        society: dict[str, httpx.Client],
        public: httpx.Client,
    ) -> None:
        fid, sid = f"{name}-f", f"{name}-s"
        cap, reg = association["capability"], department["registry"]
        self.command(
            cap,
            "/societies",
            {
                "society_id": sid,
                "name": f"学会 {sid}",
                "level": "city",
                "jurisdiction": JURISDICTION,
                "relation": "supervised",
                "association": ASSOCIATION,
                "disciplines": ["engineering"],
                "registration_number": f"REG-{sid}",
                "registered_on": "2020-01-15",
                "reconfirmation_due": "2030-01-15",
            },
            201,
        )
        scores = {"comprehensive_strength": 80, "management_quality": 75, "service_level": 70}
        self.command(
            cap, f"/societies/{sid}/assessments", {"assessment_id": "a1", "scores": scores, "evidence": ["年报"]}
        )
        proposal = {
            "function_id": fid,
            "jurisdiction": JURISDICTION,
            "title": f"科技奖励推荐 {fid}",
            "category": "award_nomination",
            "sub_kind": "national_award_nomination",
            "scope": "whole",
            "entrustment_mode": "purchase_of_services",
            "department": DEPARTMENT,
        }
        self.command(reg, "/functions", proposal, 201)
        self.command(reg, f"/functions/{fid}/listing", {})
        opening = {"qualification_conditions": ["登记满三年"], "thresholds": [], "min_applicants": 1}
        self.command(reg, f"/functions/{fid}/opening", opening)
        self.react(lambda: _status(cap, f"/selections/{fid}") == "open", "capability opens the selection")
        self.command(society["capability"], f"/selections/{fid}/applications", {"society_id": sid, "statement": "能"})
        self.command(cap, f"/selections/{fid}/ranking", {})
        ranking = self.read(cap, f"/selections/{fid}")["ranking"]
        recommendation: dict[str, Any] = {"society_ids": [sid]}
        if ranking["insufficient_competition"]:
            recommendation["justification"] = "仅一家申报, 满足全部门槛"
        self.command(cap, f"/selections/{fid}/recommendation", recommendation)
        self.react(
            lambda: sid in self.read(reg, f"/functions/{fid}").get("recommended_society_ids", []),
            "the registry learns the recommendation",
        )
        self.command(reg, f"/functions/{fid}/assignment", {"society_id": sid, "society_name": f"学会 {sid}"})
        history = self.read(reg, f"/functions/{fid}")["history"]
        case = f"/cases/{fid}-{[e['event_type'] for e in history].index('FunctionAssigned') + 1}"
        sup_a, sup_d, sup_s = association["supervision"], department["supervision"], society["supervision"]
        self.react(lambda: _status(sup_a, case, key="phase") is not None, "supervision opens the case")
        self.command(sup_s, f"{case}/plans", {"content": "实施方案", "goals": ["评价 100 人"]})
        self.command(sup_s, f"{case}/plan-submissions", {"version": 1})
        self.command(sup_d, f"{case}/plan-approvals", {"version": 1, "note": "同意"})
        self.command(sup_a, f"{case}/deployment", {"basis": "部署动员会"})
        leader = {"person_name": "王秘书长", "rank": "secretary_general", "board_resolution_ref": "理事会决议1号"}
        self.command(sup_s, f"{case}/leader", leader)
        self.command(sup_a, f"{case}/agreements", _agreement())
        for party in (sup_d, sup_s, sup_a):
            self.command(party, f"{case}/agreement-signatures", {"version": 1})
        self.react(
            lambda: self.read(reg, f"/functions/{fid}")["status"] == "transferred",
            "the registry marks the function transferred",
        )
        self.command(sup_a, f"{case}/implementation", {"basis": "任务书生效"})
        self.command(
            sup_s, f"{case}/indicator-measurements", {"name": "people_evaluated", "value": "50", "period": "2026-Q1"}
        )
        self.read(public, f"/public/jurisdictions/{JURISDICTION}/functions")

    # --- requests ---------------------------------------------------------------------

    def _pace(self) -> None:
        if self.interval:
            self._next_at += self.interval
            delay = self._next_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            else:
                self._next_at = time.monotonic()  # behind: do not burst to catch up

    def command(self, client: httpx.Client, path: str, body: dict[str, Any], expected: int = 200) -> None:
        self._pace()
        began = time.perf_counter()
        try:
            response = client.post(path, json=body, headers={"Idempotency-Key": f"soak-{uuid.uuid4()}"})
        except httpx.HTTPError as exc:
            self._error(f"POST {_template(path)}: {type(exc).__name__}")
            raise StepFailed from exc
        elapsed = time.perf_counter() - began
        with self.stats.lock:
            self.stats.commands += 1
            self.stats.latencies.append(elapsed)
            self.stats.by_command.setdefault(_template(path), []).append(elapsed)
        if response.status_code != expected:
            code = _problem_code(response)
            self._error(f"POST {_template(path)}: {response.status_code} {code}")
            raise StepFailed

    def read(self, client: httpx.Client, path: str) -> dict[str, Any]:
        try:
            response = client.get(path)
        except httpx.HTTPError as exc:
            self._error(f"GET {_template(path)}: {type(exc).__name__}")
            raise StepFailed from exc
        with self.stats.lock:
            self.stats.reads += 1
        if response.status_code != 200:
            self._error(f"GET {_template(path)}: {response.status_code} {_problem_code(response)}")
            raise StepFailed
        body: dict[str, Any] = response.json()
        return body

    def react(self, done: Callable[[], bool], what: str) -> None:
        """Wait for another service's reaction to an event (through Kafka), and time it."""
        began = time.monotonic()
        while time.monotonic() - began < REACTION_TIMEOUT_S:
            with contextlib.suppress(StepFailed, KeyError, TypeError):
                if done():
                    with self.stats.lock:
                        self.stats.reactions.append(time.monotonic() - began)
                    return
            if self.stop.is_set() and time.monotonic() - began > 5:
                raise StepFailed
            time.sleep(0.1)
        self._error(f"no reaction within {REACTION_TIMEOUT_S:.0f} s: {what}")
        raise StepFailed

    def _error(self, what: str) -> None:
        with self.stats.lock:
            self.stats.errors[what] += 1


def run_pilot(urls: dict[str, str], key_path: Path, name: str) -> None:
    """One pilot end to end, at once (the tests use it to show every service works together);
    raises ``StepFailed`` naming what went wrong."""
    stats, stop = Stats(), threading.Event()
    client = Client(0, "single", urls, key_path, stats, stop, 0.0)
    association = {s: client.client(s, Role.ASSOCIATION, ASSOCIATION) for s in ("capability", "supervision")}
    department = {s: client.client(s, Role.DEPARTMENT, DEPARTMENT) for s in ("registry", "supervision")}
    public = httpx.Client(base_url=urls["disclosure"], timeout=30)
    try:
        client.pilot(name, association, department, public)
    except StepFailed as exc:
        raise StepFailed("; ".join(stats.errors) or "the pilot failed") from exc
    finally:
        for c in (*association.values(), *department.values(), public):
            c.close()


def _status(client: httpx.Client, path: str, key: str = "status") -> Any:
    response = client.get(path)
    return response.json().get(key) if response.status_code == 200 else None


def _problem_code(response: httpx.Response) -> str:
    with contextlib.suppress(ValueError, AttributeError):
        return str(response.json().get("code", ""))
    return ""


_ID = re.compile(r"soak-[0-9a-f]+-\d+-\d+-[fs](-\d+)?")


def _template(path: str) -> str:
    return _ID.sub("{id}", path)


def _agreement() -> dict[str, Any]:
    due = (datetime.now(UTC).date() + timedelta(days=90)).isoformat()
    return {
        "rights_and_obligations": "三方权利义务见任务书",
        "cooperation_mode": "学会承接、部门指导、科协督导",
        "goals": ["完成年度评价"],
        "key_tasks": ["制定评价标准"],
        "milestones": [{"milestone_id": "m1", "title": "标准发布", "due_date": due}],
        "quality_requirements": ["全程留痕"],
        "indicators": [{"name": "people_evaluated", "unit": "persons", "target": "100", "weight": "100"}],
        "funding": [{"source": "能力提升项目经费", "amount_fen": 1_000_000}],
    }


# --- the processes and their memory ---------------------------------------------------------


def stack_processes(home: Path, stack: dict[str, Any]) -> dict[str, list[psutil.Process]]:
    """Every process of the stack by name: the services (from ``stack.json``, or whoever
    listens on their ports), the embedded broker and PostgreSQL (all its processes)."""
    found: dict[str, list[psutil.Process]] = {}
    pids: dict[str, int] = {k: int(v) for k, v in (stack.get("pids") or {}).items()}
    urls: dict[str, str] = stack.get("services", {})
    listeners: dict[int, int] = {}
    if any(name not in pids for name in urls):
        with contextlib.suppress(psutil.AccessDenied):
            for conn in psutil.net_connections("tcp"):
                if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.pid:
                    listeners[conn.laddr[1]] = conn.pid
    for name, url in urls.items():
        pid = pids.get(name) or listeners.get(int(url.rsplit(":", 1)[-1]))
        with contextlib.suppress(psutil.Error, TypeError):
            found[name] = [psutil.Process(pid)]
    with contextlib.suppress(OSError, ValueError, KeyError, psutil.Error):
        found["kafka"] = [psutil.Process(int(json.loads((home / "broker.pid.json").read_text())["pid"]))]
    with contextlib.suppress(OSError, ValueError, IndexError, psutil.Error):
        postmaster = psutil.Process(int((home / "postgres" / "postmaster.pid").read_text().splitlines()[0]))
        found["postgres"] = [postmaster, *postmaster.children(recursive=True)]
    return found


def _refresh(processes: dict[str, list[psutil.Process]]) -> None:
    """PostgreSQL's backends come and go with the connections: list them again."""
    if processes.get("postgres"):
        with contextlib.suppress(psutil.Error):
            postmaster = processes["postgres"][0]
            processes["postgres"] = [postmaster, *postmaster.children(recursive=True)]


def rss_mb(processes: dict[str, list[psutil.Process]]) -> dict[str, float]:
    """Resident memory per name. For a group of processes (PostgreSQL's backends) the sum of
    their proportional set sizes, so the shared buffers every backend touches count once."""
    out: dict[str, float] = {}
    for name, procs in processes.items():
        total = 0
        for proc in procs:
            with contextlib.suppress(psutil.Error):
                if len(procs) > 1:
                    info = proc.memory_full_info()
                    total += getattr(info, "pss", info.rss)
                else:
                    total += proc.memory_info().rss
        out[name] = round(total / 2**20, 1)
    return out


def relay_lag(urls: dict[str, str]) -> dict[str, int]:
    """Events stored but not yet published, per service (its relay's metric)."""
    lag: dict[str, int] = {}
    for name, url in urls.items():
        if name == "deadlines":
            continue
        with contextlib.suppress(httpx.HTTPError, ValueError):
            text = httpx.get(f"{url}/metrics", timeout=10).text
            match = re.search(r'^chengneng_relay_lag_events\{service="[^"]+"\} ([0-9.e+]+)$', text, re.MULTILINE)
            if match:
                lag[name] = int(float(match.group(1)))
    return lag


# --- the run --------------------------------------------------------------------------------


@dataclass
class Outcome:
    seconds: float
    commands: int
    errors: Counter[str]
    pilots: int
    samples: list[Sample]
    caught_up: bool
    by_command: dict[str, list[float]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.errors and self.caught_up


def _trend_mb_per_min(samples: list[Sample], name: str) -> float:
    """Least-squares slope of a process's RSS over the second half of the run (after warm-up)."""
    points = [(s.at_s / 60, s.rss_mb[name]) for s in samples[len(samples) // 2 :] if name in s.rss_mb]
    if len(points) < 2:
        return float("nan")
    return float(statistics.linear_regression([p[0] for p in points], [p[1] for p in points]).slope)


def run(
    home: Path,
    key_path: Path,
    *,
    duration_s: float,
    clients: int,
    rate: float,
    report_every_s: float,
    echo: Echo,
    stopping: Callable[[], bool] = lambda: False,
) -> Outcome:
    """Soak the stack described by ``home/stack.json`` and print a report line every interval."""
    stack = json.loads((home / "stack.json").read_text())
    urls: dict[str, str] = stack["services"]
    processes = stack_processes(home, stack)
    names = [n for n in (*SERVICES, "postgres", "kafka") if n in processes]
    run_id = uuid.uuid4().hex[:6]
    stats, stop = Stats(), threading.Event()
    workers = [Client(i, run_id, urls, key_path, stats, stop, rate / clients if rate else 0) for i in range(clients)]
    echo(
        f"soak {run_id}: {clients} client(s), {'as fast as they can' if not rate else f'{rate:g} commands/s'}, "
        f"{duration_s:.0f} s, a report every {report_every_s:.0f} s (memory: RSS in MB, PostgreSQL: PSS of all)"
    )
    header = f"{'time':>6} {'cmds':>6} {'cmd/s':>6} {'err':>4} {'p50ms':>6} {'p95ms':>6} {'pilots':>6} {'react95':>7}"
    echo(header + "".join(f" {n[:11]:>11}" for n in names) + "  relay lag")
    began = time.monotonic()
    samples = [Sample(0.0, 0, 0, 0, rss_mb(processes))]
    totals: Counter[str] = Counter()
    counted = {"commands": 0, "pilots": 0}
    last_report = began

    def report() -> None:
        nonlocal last_report
        now = time.monotonic()
        interval, last_report = now - last_report, now
        taken = stats.take()
        counted["commands"] += taken.commands
        counted["pilots"] += taken.pilots
        totals.update(taken.errors)
        _refresh(processes)
        sample = Sample(now - began, taken.commands, sum(taken.errors.values()), taken.pilots, rss_mb(processes))
        samples.append(sample)
        lag = relay_lag(urls)
        elapsed = int(sample.at_s)
        echo(
            f"{elapsed // 60:>3}:{elapsed % 60:02d} {taken.commands:>6} {taken.commands / interval:>6.1f} "
            f"{sample.errors:>4} {percentile(taken.latencies, 50):>6.0f} "
            f"{percentile(taken.latencies, 95):>6.0f} {taken.pilots:>6} "
            f"{percentile(taken.reactions, 95) / 1000:>6.1f}s"
            + "".join(f" {sample.rss_mb.get(n, float('nan')):>11.1f}" for n in names)
            + "  "
            + " ".join(f"{k[:3]}={v}" for k, v in lag.items())
        )
        for what, count in taken.errors.most_common(5):
            echo(f"       error x{count}: {what}")

    for w in workers:
        w.start()
    try:
        while not stopping() and (now := time.monotonic()) < began + duration_s:
            if now - last_report >= report_every_s:
                report()
            time.sleep(0.2)
    finally:
        stop.set()
        for w in workers:
            w.join(REACTION_TIMEOUT_S + 35)
    report()  # the last stretch, with what the clients finished after the load stopped
    seconds = time.monotonic() - began
    caught_up = _wait_caught_up(urls)
    outcome = Outcome(seconds, counted["commands"], totals, counted["pilots"], samples, caught_up, stats.by_command)
    _summary(outcome, names, echo)
    return outcome


def _wait_caught_up(urls: dict[str, str], timeout_s: float = 120) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        lag = relay_lag(urls)
        if lag and not any(lag.values()):
            return True
        time.sleep(1)
    return False


def _summary(outcome: Outcome, names: list[str], echo: Echo) -> None:
    echo("")
    echo(
        f"{outcome.commands} commands in {outcome.seconds:.0f} s ({outcome.commands / outcome.seconds:.1f}/s), "
        f"{outcome.pilots} pilots end to end, {sum(outcome.errors.values())} error(s)"
    )
    for what, count in outcome.errors.most_common():
        echo(f"  error x{count}: {what}")
    echo("slowest commands (ms): p50, p95, first tenth -> last tenth of the run (p50)")
    slowest = sorted(outcome.by_command.items(), key=lambda kv: -percentile(kv[1], 95))[:6]
    for path, values in slowest:
        tenth = max(len(values) // 10, 1)
        echo(
            f"  {path:<48} {percentile(values, 50):>6.0f} {percentile(values, 95):>6.0f}"
            f"   {percentile(values[:tenth], 50):>6.0f} -> {percentile(values[-tenth:], 50):>6.0f}"
        )
    echo("memory (MB; RSS, PostgreSQL PSS): start -> end, peak, trend over the second half")
    first, last = outcome.samples[0].rss_mb, outcome.samples[-1].rss_mb
    for name in names:
        peak = max(s.rss_mb.get(name, 0.0) for s in outcome.samples)
        echo(
            f"  {name:<12} {first.get(name, float('nan')):>8.1f} -> {last.get(name, float('nan')):>8.1f}"
            f"   peak {peak:>8.1f}   {_trend_mb_per_min(outcome.samples, name):+.2f} MB/min"
        )
    echo(
        "every relay caught up after the load"
        if outcome.caught_up
        else "relays did NOT catch up within 120 s after the load"
    )
