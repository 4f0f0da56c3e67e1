"""The demo (`chengneng demo`): the city report and the national pilot, played over HTTP.

The scenario is data, in ``shared/scenario/*.yaml``: the levels (central, Sichuan, Deyang,
Mianyang) with their association, departments, societies and functions, the wording every
level shares (``common.yaml``) and the figures of the Deyang report that the disclosed
statistics must reproduce (``report.yaml``). Nothing here writes to a database: every step
is a request to a service's public API, with a signed token of the organisation that acts
(one principal per organisation, with its role and jurisdiction), and every wait is for
an event to travel from one service to another through Kafka.

Requests run concurrently per society, function and case, at most ``CONCURRENCY`` at a
time; POSTs carry an ``Idempotency-Key`` derived from the request, so a retry after a lost
connection (or a second run on the same home) records nothing twice.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Literal, TypeVar

import httpx
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from shared.auth import issue_token, load_private_key
from shared.principal import Principal, Role

SCENARIO_DIR = Path(__file__).resolve().parent / "scenario"
"""The scenario shipped with the package."""

CONCURRENCY = 8
"""Requests in flight at once: enough to keep four services busy, not to swamp two cores."""
ATTEMPTS = 4
"""Tries of one request when the connection fails or a service answers 502/503/504."""
WAIT_TIMEOUT_S = 60.0
"""How long to wait for one event to reach another service."""
CONVERGENCE_TIMEOUT_S = 120.0
"""How long to wait for the disclosed statistics to count every fact."""
POLL_INTERVAL_S = 0.3

T = TypeVar("T")
Echo = Callable[[str], None]


class ScenarioError(ValueError):
    """The scenario files are missing, malformed or inconsistent."""


class DemoError(RuntimeError):
    """A step of the demo failed; the message says which request or which wait."""


class DemoAborted(DemoError):
    """The user asked to stop (Ctrl-C) while the demo ran."""


# --- the scenario ---------------------------------------------------------------------------

_STRICT = ConfigDict(extra="forbid", frozen=True)

Willingness = Literal["very_willing", "willing", "unwilling"]
Capacity = Literal["fully_capable", "partly_capable", "not_capable"]
SocietyClass = Literal["strengthen", "newly_establish", "stabilise", "exit"]
Stage = Literal["proposed", "consultation", "listed", "undertaken"]
Through = Literal["assigned", "implementation", "summary", "closed"]
PartyName = Literal["department", "society", "association"]
THROUGH_ORDER: dict[str, int] = {"assigned": 0, "implementation": 1, "summary": 2, "closed": 3}
STAGE_ORDER: dict[str, int] = {"proposed": 0, "consultation": 1, "listed": 2, "undertaken": 3}


class Org(BaseModel):
    model_config = _STRICT

    id: str
    name: str


class Place(BaseModel):
    model_config = _STRICT

    code: str
    name: str


class RegistrationSpec(BaseModel):
    model_config = _STRICT

    number_prefix: str
    registered_on: str
    reconfirmation_due: str


class GovernanceSpec(BaseModel):
    model_config = _STRICT

    has_board: bool
    has_secretariat: bool
    has_supervisory_board: bool
    secretariat_real_entity: bool
    professional_secretary_general: bool
    full_time_staff: int


class SocietySpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    id: str
    name: str
    relation: Literal["supervised", "group_member"]
    willingness: Willingness | None = None
    capacity: Capacity | None = None
    society_class: SocietyClass | None = Field(default=None, alias="class")
    disciplines: list[str] = Field(default_factory=list)
    scores: tuple[float, float, float] | None = None
    grade: Literal["3A", "4A", "5A"] | None = None
    governance: GovernanceSpec | None = None
    decoupling: dict[str, str] = Field(default_factory=dict)
    brand: str | None = None
    """The rationale when the society is designated a brand society (品牌学会)."""

    @model_validator(mode="after")
    def _survey_complete(self) -> SocietySpec:
        if (self.willingness is None) != (self.capacity is None):
            raise ValueError(f"society {self.id}: give both willingness and capacity, or neither")
        return self


class FunctionSpec(BaseModel):
    model_config = _STRICT

    id: str
    title: str
    description: str = ""
    category: str
    sub_kind: str
    department: str
    proposer: str
    stage: Stage = "proposed"
    scope: str = "partial"
    entrustment_mode: str = "tripartite_task_agreement"
    undertaken_by: str | None = None
    applicants: list[str] = Field(default_factory=list)
    through: Through = "implementation"
    funding_fen: int = 0
    disbursed_fen: int = 0
    evaluated: bool = False
    third_party: bool = False
    review: str | None = None
    min_applicants: int | None = None

    @property
    def all_applicants(self) -> list[str]:
        """The societies that apply, the one that undertakes the function first."""
        assert self.undertaken_by is not None
        return [self.undertaken_by, *(a for a in self.applicants if a != self.undertaken_by)]

    def reaches(self, phase: Through) -> bool:
        return self.stage == "undertaken" and THROUGH_ORDER[self.through] >= THROUGH_ORDER[phase]


class IndicatorSpec(BaseModel):
    model_config = _STRICT

    name: str
    unit: str
    target: Decimal
    weight: Decimal
    measured: Decimal


class RectificationSpec(BaseModel):
    model_config = _STRICT

    function: str
    rectification_id: str
    required_actions: list[str]
    deadline_in_days: int
    basis: str
    actions_taken: list[str]
    evidence: list[str]
    acceptance_basis: str


class Commendation(BaseModel):
    model_config = _STRICT

    basis: str
    note: str = ""


class TypicalCaseSpec(BaseModel):
    model_config = _STRICT

    function: str
    commendation: Commendation | None = None
    rationale: str


class AccessRefusal(BaseModel):
    model_config = _STRICT

    function: FunctionSpec
    expect: str


class LeaderRefusal(BaseModel):
    model_config = _STRICT

    function: str
    person_name: str
    rank: str
    board_resolution_ref: str
    expect: str


class StaleSignatureRefusal(BaseModel):
    model_config = _STRICT

    function: str
    signed_first_by: PartyName
    stale_party: PartyName
    amendment_reason: str
    indicators: list[IndicatorSpec]
    expect: str


class Refusals(BaseModel):
    model_config = _STRICT

    access_type: AccessRefusal | None = None
    leader: LeaderRefusal | None = None
    stale_signature: StaleSignatureRefusal | None = None


class Level(BaseModel):
    """One jurisdiction of the scenario and everything that happens in it."""

    model_config = _STRICT

    jurisdiction: Place
    society_level: Literal["national", "provincial", "city"]
    association: Org
    finance_bureau: Org | None = None
    evaluators: list[Org] = Field(default_factory=list)
    registration: RegistrationSpec
    departments: list[Org]
    anchors: dict[str, Any] = Field(default_factory=dict)
    """YAML anchors only (shared governance and decoupling records); never read."""
    societies: list[SocietySpec] = Field(default_factory=list)
    function_defaults: dict[str, Any] = Field(default_factory=dict)
    functions: list[FunctionSpec] = Field(default_factory=list)
    rectification: RectificationSpec | None = None
    typical_case: TypicalCaseSpec | None = None
    refusals: Refusals = Field(default_factory=Refusals)

    @model_validator(mode="before")
    @classmethod
    def _apply_function_defaults(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("function_defaults"):
            defaults = data["function_defaults"]
            data = {**data, "functions": [{**defaults, **f} for f in data.get("functions") or []]}
        return data

    @property
    def code(self) -> str:
        return self.jurisdiction.code

    @property
    def name(self) -> str:
        return self.jurisdiction.name


class SurveyTemplate(BaseModel):
    model_config = _STRICT

    reference: str
    preferred_modes: dict[str, list[str]]


class AssessmentTemplate(BaseModel):
    model_config = _STRICT

    assessment_id: str
    evidence: list[str]


class OpeningTemplate(BaseModel):
    model_config = _STRICT

    qualification_conditions: list[str]
    thresholds: list[dict[str, str]]
    min_applicants: int
    application_days: int


class LeaderTemplate(BaseModel):
    model_config = _STRICT

    person_name: str
    rank: str
    board_resolution_ref: str


class MilestoneTemplate(BaseModel):
    model_config = _STRICT

    milestone_id: str
    title: str
    due_in_days: int


class AgreementTemplate(BaseModel):
    model_config = _STRICT

    rights_and_obligations: str
    cooperation_mode: str
    goals: list[str]
    key_tasks: list[str]
    quality_requirements: list[str]
    milestones: list[MilestoneTemplate]


class PlanTemplate(BaseModel):
    model_config = _STRICT

    content: str
    goals: list[str]


class MeetingTemplate(BaseModel):
    model_config = _STRICT

    attendees: list[str]
    progress: str
    stage_goals: list[str]
    next_priorities: list[str]
    issues_to_coordinate: list[str]


class ProgressTemplate(BaseModel):
    model_config = _STRICT

    milestone: str
    evidence: list[str]
    feedback: list[str]
    meeting: MeetingTemplate


class ReportTemplate(BaseModel):
    model_config = _STRICT

    report_ref: str
    findings: list[str] = Field(default_factory=list)


class SelfEvaluationTemplate(BaseModel):
    model_config = _STRICT

    report_ref: str
    claimed_score: Decimal


class SurveyCount(BaseModel):
    model_config = _STRICT

    respondents: int
    satisfied: int


class EvaluationTemplate(BaseModel):
    model_config = _STRICT

    self_evaluation: SelfEvaluationTemplate
    finance: dict[Literal["overall", "on_site"], ReportTemplate]
    satisfaction: dict[Literal["departments", "societies", "public"], SurveyCount]
    disbursement_purpose: str


class TeamTemplate(BaseModel):
    model_config = _STRICT

    party: PartyName
    name: str
    role_in_team: str


class SummaryTemplate(BaseModel):
    model_config = _STRICT

    basis: str
    report_ref: str
    replicable_models: list[str]
    closure_basis: str


class Templates(BaseModel):
    """The wording and terms every level shares (``common.yaml``)."""

    model_config = _STRICT

    survey: SurveyTemplate
    class_rationales: dict[SocietyClass, str]
    assessment: AssessmentTemplate
    opening: OpeningTemplate
    justification: str
    application_statement: str
    review: str
    plan: PlanTemplate
    approval_note: str
    deployment_basis: str
    leader: LeaderTemplate
    agreement: AgreementTemplate
    funding_source: str
    funding_basis: str
    implementation_basis: str
    indicators: dict[str, list[IndicatorSpec]]
    measurement_period: str
    progress: ProgressTemplate
    evaluation: EvaluationTemplate
    third_party: ReportTemplate
    team: list[TeamTemplate]
    list_notes: list[str]
    summary: SummaryTemplate


class Figure(BaseModel):
    model_config = _STRICT

    key: str
    zh: str
    path: str
    value: Decimal


class Report(BaseModel):
    """The figures of the city report the disclosed statistics must show."""

    model_config = _STRICT

    jurisdiction: str
    title: str
    figures: list[Figure]


class Scenario(BaseModel):
    model_config = _STRICT

    levels: list[Level]
    templates: Templates
    report: Report

    @model_validator(mode="after")
    def _consistent(self) -> Scenario:
        problems: list[str] = []
        societies: dict[str, str] = {}
        functions: set[str] = set()
        codes = [level.code for level in self.levels]
        if len(set(codes)) != len(codes):
            problems.append(f"a jurisdiction appears twice: {codes}")
        for level in self.levels:
            for s in level.societies:
                if s.id in societies:
                    problems.append(f"society {s.id} appears twice")
                societies[s.id] = level.code
        for level in self.levels:
            departments = {d.id for d in level.departments}
            own = {s.id for s in level.societies}
            proposers = own | departments | {level.association.id}
            refused = [level.refusals.access_type.function] if level.refusals.access_type else []
            for f in [*level.functions, *refused]:
                where = f"function {f.id} ({level.name})"
                if f.id in functions:
                    problems.append(f"{where} appears twice")
                functions.add(f.id)
                if f.department not in departments:
                    problems.append(f"{where}: department {f.department} is not one of {level.name}'s")
                if f.proposer not in proposers:
                    problems.append(f"{where}: proposer {f.proposer} is not an organisation of {level.name}")
                if f.category not in self.templates.indicators:
                    problems.append(f"{where}: no indicators for category {f.category} in common.yaml")
                if f.stage == "undertaken":
                    if f.undertaken_by not in own:
                        problems.append(f"{where}: undertaken_by {f.undertaken_by} is not a society of {level.name}")
                    for a in f.applicants:
                        if a not in own:
                            problems.append(f"{where}: applicant {a} is not a society of {level.name}")
                    if f.undertaken_by is not None and f.undertaken_by in own:
                        spec = next(s for s in level.societies if s.id == f.undertaken_by)
                        if spec.scores is None or spec.governance is None:
                            problems.append(f"{where}: {f.undertaken_by} needs scores and governance to be ranked")
                elif f.undertaken_by or f.applicants:
                    problems.append(f"{where}: only an undertaken function has a society")
                if f.evaluated and not f.reaches("implementation"):
                    problems.append(f"{where}: an evaluated project must reach implementation")
                if f.disbursed_fen > f.funding_fen:
                    problems.append(f"{where}: disburses more than it is allocated")
            undertaken = {f.id: f for f in level.functions if f.stage == "undertaken"}
            for label, ref, least in (
                ("rectification", level.rectification, "implementation"),
                ("typical_case", level.typical_case, "summary"),
                ("refusals.leader", level.refusals.leader, "assigned"),
                ("refusals.stale_signature", level.refusals.stale_signature, "implementation"),
            ):
                if ref is None:
                    continue
                target = undertaken.get(ref.function)  # type: ignore[union-attr]
                if target is None or not target.reaches(least):  # type: ignore[arg-type]
                    problems.append(f"{label} of {level.name}: {ref.function} must be undertaken through {least}")  # type: ignore[union-attr]
        if self.report.jurisdiction not in codes:
            problems.append(f"the report's jurisdiction {self.report.jurisdiction} is not a level of the scenario")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def level(self, code: str) -> Level:
        return next(level for level in self.levels if level.code == code)


def load_scenario(directory: Path = SCENARIO_DIR) -> Scenario:
    """Read every ``*.yaml`` of ``directory``: a file with ``jurisdiction`` is a level; the
    others contribute their top-level keys (``templates``, ``report``)."""
    files = sorted(directory.glob("*.yaml"))
    if not files:
        raise ScenarioError(f"no scenario files (*.yaml) in {directory}")
    levels: list[Any] = []
    rest: dict[str, Any] = {}
    for path in files:
        try:
            document = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise ScenarioError(f"{path.name}: {exc}") from exc
        if not isinstance(document, dict):
            raise ScenarioError(f"{path.name}: expected a mapping at the top")
        if "jurisdiction" in document:
            levels.append(document)
            continue
        for key, value in document.items():
            if key in rest:
                raise ScenarioError(f"{path.name}: {key!r} is already given by another file")
            rest[key] = value
    try:
        levels.sort(key=lambda level: str((level.get("jurisdiction") or {}).get("code", "")))
        return Scenario.model_validate({"levels": levels, **rest})
    except ValidationError as exc:
        lines = [f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors(include_url=False)]
        raise ScenarioError(f"the scenario in {directory} is invalid:\n  " + "\n  ".join(lines[:20])) from exc


class _Placeholders(dict[str, str]):
    def __missing__(self, key: str) -> str:
        raise ScenarioError(f"unknown placeholder {{{key}}} in the scenario's templates")


def fill(value: T, **names: str) -> T:
    """``value`` with ``{title}``, ``{society}``, ... replaced in every string inside it."""
    if isinstance(value, str):
        return value.format_map(_Placeholders(names))  # type: ignore[return-value]
    if isinstance(value, list):
        return [fill(v, **names) for v in value]  # type: ignore[return-value]
    if isinstance(value, dict):
        return {k: fill(v, **names) for k, v in value.items()}  # type: ignore[return-value]
    return value


# --- HTTP: principals, retries, waits -------------------------------------------------------


@dataclass(frozen=True)
class Actor:
    """One organisation acting with its role in its jurisdiction (one token each)."""

    role: Role
    org: str
    jurisdiction: str

    def __str__(self) -> str:
        return f"{self.role.value} {self.org} ({self.jurisdiction})"


@dataclass(frozen=True)
class Refusal:
    """A request the services refused, as the rules require."""

    what: str
    actor: Actor
    status: int
    code: str
    detail: str


def _problem(response: httpx.Response) -> tuple[str, str]:
    try:
        body = response.json()
    except ValueError:
        return "", response.text[:300]
    if isinstance(body, dict):
        return str(body.get("code", "")), str(body.get("detail", body))[:500]
    return "", str(body)[:300]


class Api:
    """The services' HTTP APIs with one signed token per organisation."""

    RETRY_STATUSES = frozenset({502, 503, 504})

    def __init__(
        self,
        client: httpx.AsyncClient,
        urls: dict[str, str],
        private_key_path: Path,
        *,
        concurrency: int = CONCURRENCY,
        cancelled: Callable[[], bool] = lambda: False,
    ) -> None:
        self.client = client
        self.urls = urls
        self.key = load_private_key(private_key_path)
        self.slots = asyncio.Semaphore(concurrency)
        self.cancelled = cancelled
        self.requests = 0
        self.retries = 0
        self._tokens: dict[Actor, str] = {}

    def token(self, actor: Actor) -> str:
        if actor not in self._tokens:
            principal = Principal(
                subject=actor.org, organisation=actor.org, role=actor.role, jurisdiction=actor.jurisdiction
            )
            self._tokens[actor] = issue_token(self.key, principal, ttl=timedelta(hours=2))
        return self._tokens[actor]

    async def _send(
        self,
        method: str,
        service: str,
        path: str,
        actor: Actor | None,
        *,
        body: Any = None,
        params: dict[str, Any] | None = None,
    ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.token(actor)}"} if actor else {}
        if method == "POST":
            text = json.dumps(body, sort_keys=True, ensure_ascii=False, default=str)
            digest = hashlib.sha256(f"{actor}|{service}{path}|{text}".encode()).hexdigest()
            headers["Idempotency-Key"] = f"demo-{digest[:48]}"
        url = self.urls[service] + path
        for attempt in range(1, ATTEMPTS + 1):
            if self.cancelled():
                raise DemoAborted("stopped by the user")
            try:
                async with self.slots:
                    self.requests += 1
                    response = await self.client.request(method, url, json=body, params=params, headers=headers)
            except httpx.TransportError as exc:
                if attempt == ATTEMPTS:
                    raise DemoError(f"{method} {service} {path}: {exc!r} after {ATTEMPTS} tries") from exc
            else:
                if response.status_code not in self.RETRY_STATUSES or attempt == ATTEMPTS:
                    return response
            self.retries += 1
            await asyncio.sleep(0.25 * 2 ** (attempt - 1))
        raise AssertionError("unreachable")

    async def post(self, service: str, path: str, body: dict[str, Any], actor: Actor) -> dict[str, Any]:
        """A command that must be accepted; its result (stream, version, appended events)."""
        response = await self._send("POST", service, path, actor, body=body)
        if response.status_code not in (200, 201):
            code, detail = _problem(response)
            raise DemoError(f"POST {service} {path} as {actor}: {response.status_code} {code}: {detail}")
        result: dict[str, Any] = response.json()
        return result

    async def refused(
        self, what: str, service: str, path: str, body: dict[str, Any], actor: Actor, expect: str
    ) -> Refusal:
        """A command the rules must refuse with the problem code ``expect``."""
        response = await self._send("POST", service, path, actor, body=body)
        code, detail = _problem(response)
        if response.status_code < 400:
            raise DemoError(f"{what}: expected the refusal {expect}, but {service} accepted it")
        if code != expect:
            raise DemoError(f"{what}: expected the refusal {expect}, got {response.status_code} {code}: {detail}")
        return Refusal(what, actor, response.status_code, code, detail)

    async def get(
        self, service: str, path: str, actor: Actor | None = None, params: dict[str, Any] | None = None
    ) -> tuple[int, Any]:
        response = await self._send("GET", service, path, actor, params=params)
        try:
            return response.status_code, response.json()
        except ValueError:
            return response.status_code, response.text

    async def read(self, service: str, path: str, actor: Actor | None = None, **params: Any) -> Any:
        """A GET that must succeed."""
        status, body = await self.get(service, path, actor, params or None)
        if status != 200:
            raise DemoError(f"GET {service} {path}: {status} {str(body)[:300]}")
        return body

    async def wait(
        self,
        what: str,
        probe: Callable[[], Awaitable[tuple[bool, Any]]],
        timeout: float = WAIT_TIMEOUT_S,
    ) -> Any:
        """Poll ``probe`` until it says done; fail after ``timeout`` naming what was awaited."""
        deadline = time.monotonic() + timeout
        while True:
            done, seen = await probe()
            if done:
                return seen
            if time.monotonic() > deadline:
                raise DemoError(f"timed out after {timeout:.0f} s waiting for {what}; last seen: {str(seen)[:300]}")
            await asyncio.sleep(POLL_INTERVAL_S)


# --- progress and outcome -------------------------------------------------------------------


class Progress:
    """Counts done items of one kind and prints a line at each quarter and at the end."""

    def __init__(self, echo: Echo, prefix: str, what: str, total: int, verb: str) -> None:
        self.echo, self.prefix, self.what, self.total, self.verb = echo, prefix, what, total, verb
        self.done = 0
        self._shown = 0

    def tick(self) -> None:
        self.done += 1
        quarter = self.done * 4 // max(self.total, 1)
        if self.done == self.total or (self.total >= 8 and quarter > self._shown):
            self._shown = quarter
            self.echo(f"{self.prefix} {self.what}: {self.done}/{self.total} {self.verb}")


@dataclass
class StepTiming:
    label: str
    title: str
    seconds: float
    requests: int


@dataclass
class FigureCheck:
    figure: Figure
    disclosed: Any

    @property
    def ok(self) -> bool:
        return _as_number(self.disclosed) == self.figure.value


@dataclass
class Outcome:
    ok: bool
    seconds: float = 0.0
    error: str | None = None
    aborted: bool = False
    figures: list[FigureCheck] = field(default_factory=list)
    refusals: list[Refusal] = field(default_factory=list)
    portal: str = ""


def _as_number(value: Any) -> Decimal | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return None


def _lookup(document: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(document, dict) or part not in document:
            return None
        document = document[part]
    return document


def _today() -> datetime:
    return datetime.now(UTC)


def _in_days(days: int) -> str:
    return (_today() + timedelta(days=days)).date().isoformat()


# --- the run ---------------------------------------------------------------------------------


@dataclass
class Case:
    """A project the scenario carries: its function, level, and the case the supervision opened."""

    level: Level
    function: FunctionSpec
    project_id: str = ""
    rank: int | None = None
    applicants: int = 0
    grade: str | None = None


class Demo:
    """Runs the scenario step by step; ``run`` returns the outcome."""

    def __init__(self, scenario: Scenario, api: Api, echo: Echo) -> None:
        self.s = scenario
        self.t = scenario.templates
        self.api = api
        self.echo = echo
        self.cases: dict[str, Case] = {}
        self.refusals: list[Refusal] = []
        self.timings: list[StepTiming] = []
        self.society_names = {s.id: s.name for level in scenario.levels for s in level.societies}
        self.department_names = {d.id: d.name for level in scenario.levels for d in level.departments}
        self.prefix = ""
        self.figure_checks: list[FigureCheck] = []
        self.rollup: dict[str, Any] = {}

    # principals ---------------------------------------------------------------------------

    def association(self, level: Level) -> Actor:
        return Actor(Role.ASSOCIATION, level.association.id, level.code)

    def department(self, level: Level, department_id: str) -> Actor:
        return Actor(Role.DEPARTMENT, department_id, level.code)

    def society(self, level: Level, society_id: str) -> Actor:
        return Actor(Role.SOCIETY, society_id, level.code)

    def finance(self, level: Level) -> Actor:
        if level.finance_bureau is None:
            raise ScenarioError(f"{level.name} has no finance bureau but a project there is evaluated")
        return Actor(Role.FINANCE_BUREAU, level.finance_bureau.id, level.code)

    def evaluator(self, level: Level) -> Actor:
        if not level.evaluators:
            raise ScenarioError(f"{level.name} has no evaluator but a project there needs a third-party evaluation")
        return Actor(Role.EVALUATOR, level.evaluators[0].id, level.code)

    def proposer(self, level: Level, org: str) -> Actor:
        if org == level.association.id:
            return self.association(level)
        if org in {d.id for d in level.departments}:
            return self.department(level, org)
        return self.society(level, org)

    def names(self, case: Case) -> dict[str, str]:
        f = case.function
        return {
            "title": f.title,
            "society": self.society_names.get(f.undertaken_by or "", f.undertaken_by or ""),
            "department": self.department_names.get(f.department, f.department),
            "association": case.level.association.name,
        }

    # orchestration ------------------------------------------------------------------------

    async def run(self) -> Outcome:
        steps: list[tuple[str, Callable[[], Awaitable[None]]]] = [
            ("organisations and tokens", self.organisations),
            ("societies: register, survey, governance, assessment, classification", self.societies),
            ("functions: propose, consult, review, list", self.functions),
            ("selection: open, apply, rank, recommend, assign; the cases open", self.selection),
            ("preparation and deployment: plan, leader, tripartite agreement", self.deployment),
            ("implementation: progress, supervision, rectification, evaluation", self.implementation),
            ("systematic summary: summary reports, typical case, list versions", self.summary),
            ("disclosure: waiting for the public statistics to count every fact", self.disclosure),
        ]
        started = time.monotonic()
        outcome = Outcome(ok=False)
        try:
            for index, (title, step) in enumerate(steps, start=1):
                self.prefix = f"[{index}/{len(steps)}]"
                self.echo(f"{self.prefix} {title}")
                begun, requests = time.monotonic(), self.api.requests
                await step()
                self.timings.append(
                    StepTiming(self.prefix, title.split(":")[0], time.monotonic() - begun, self.api.requests - requests)
                )
            outcome.figures = self.figure_checks
            outcome.ok = all(check.ok for check in outcome.figures)
        except DemoAborted as exc:
            outcome.aborted, outcome.error = True, str(exc)
        except (DemoError, ScenarioError) as exc:
            outcome.error = str(exc)
        outcome.seconds = time.monotonic() - started
        outcome.refusals = list(self.refusals)
        outcome.portal = f"{self.api.urls['disclosure']}/portal/j/{self.s.report.jurisdiction}"
        if not outcome.aborted:
            self.print_summary(outcome)
        return outcome

    async def each(self, items: Iterable[T], work: Callable[[T], Awaitable[None]]) -> None:
        """Run ``work`` for every item concurrently (the API bounds what is in flight)."""
        tasks = [asyncio.ensure_future(work(item)) for item in items]
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise

    def refused(self, refusal: Refusal) -> None:
        self.refusals.append(refusal)
        self.echo(f"{self.prefix} refused, as the rules require: {refusal.what} -> {refusal.status} {refusal.code}")

    # [1] organisations ----------------------------------------------------------------------

    async def organisations(self) -> None:
        for service in ("registry", "capability", "supervision", "disclosure"):
            await self.api.read(service, "/health")
        for level in self.s.levels:
            actors = [self.association(level)]
            actors += [self.department(level, d.id) for d in level.departments]
            actors += [self.society(level, s.id) for s in level.societies]
            if level.finance_bureau:
                actors.append(self.finance(level))
            actors += [Actor(Role.EVALUATOR, e.id, level.code) for e in level.evaluators]
            for actor in actors:
                self.api.token(actor)
            departments = _count(len(level.departments), "department")
            societies = _count(len(level.societies), "society", "societies")
            self.echo(
                f"{self.prefix} {level.name} ({level.code}): {level.association.name}, {departments}, {societies}; "
                f"{_count(len(actors), 'token')} signed"
            )

    # [2] societies --------------------------------------------------------------------------

    async def societies(self) -> None:
        pairs = [(level, i, s) for level in self.s.levels for i, s in enumerate(level.societies, start=1)]
        registered = Progress(self.echo, self.prefix, "societies", len(pairs), "registered")
        profiled = Progress(self.echo, self.prefix, "society records", len(pairs), "complete")

        async def register(item: tuple[Level, int, SocietySpec]) -> None:
            level, index, s = item
            body = {
                "society_id": s.id,
                "name": s.name,
                "level": level.society_level,
                "jurisdiction": level.code,
                "relation": s.relation,
                "association": level.association.id,
                "disciplines": s.disciplines,
                "registration_number": f"{level.registration.number_prefix}{index:03d}",
                "registered_on": level.registration.registered_on,
                "reconfirmation_due": level.registration.reconfirmation_due,
            }
            await self.api.post("capability", "/societies", body, self.association(level))
            registered.tick()

        async def profile(item: tuple[Level, int, SocietySpec]) -> None:
            level, _, s = item
            base, own, cast = f"/societies/{s.id}", self.society(level, s.id), self.association(level)
            if s.willingness and s.capacity:
                survey = {
                    "willingness": s.willingness,
                    "self_assessment": s.capacity,
                    "preferred_modes": self.t.survey.preferred_modes.get(s.willingness, []),
                    "survey_reference": self.t.survey.reference,
                }
                await self.api.post("capability", f"{base}/survey-answers", survey, own)
            if s.governance:
                await self.api.post("capability", f"{base}/governance", s.governance.model_dump(), own)
            for line, status in s.decoupling.items():
                await self.api.post("capability", f"{base}/decoupling", {"line": line, "status": status}, own)
            if s.scores:
                assessment = {
                    "assessment_id": self.t.assessment.assessment_id,
                    "scores": dict(
                        zip(("comprehensive_strength", "management_quality", "service_level"), s.scores, strict=True)
                    ),
                    "evidence": self.t.assessment.evidence,
                    "evaluation_grade": s.grade,
                }
                await self.api.post("capability", f"{base}/assessments", assessment, cast)
            if s.society_class:
                rationale = self.t.class_rationales[s.society_class]
                body = {"society_class": s.society_class, "rationale": rationale}
                await self.api.post("capability", f"{base}/classification", body, cast)
            if s.brand:
                await self.api.post("capability", f"{base}/brand-designation", {"rationale": s.brand}, cast)
            profiled.tick()

        await self.each(pairs, register)
        await self.each(pairs, profile)
        classes: dict[str, int] = {}
        for level in self.s.levels:
            for s in level.societies:
                if s.society_class:
                    classes[s.society_class] = classes.get(s.society_class, 0) + 1
        self.echo(f"{self.prefix} classified: " + ", ".join(f"{k} {v}" for k, v in sorted(classes.items())))

    # [3] functions --------------------------------------------------------------------------

    async def functions(self) -> None:
        for level in self.s.levels:
            refusal = level.refusals.access_type
            if refusal is not None:
                f = refusal.function
                what = f"access-type (行业准入类) qualification function “{f.title}” proposed by {f.proposer}"
                self.refused(
                    await self.api.refused(
                        what,
                        "registry",
                        "/functions",
                        self.proposal(level, f),
                        self.proposer(level, f.proposer),
                        refusal.expect,
                    )
                )
        counters: dict[str, tuple[Progress, Progress, Progress]] = {}
        for level in self.s.levels:
            label = f"{level.name} functions"
            beyond = [f for f in level.functions if STAGE_ORDER[f.stage] >= STAGE_ORDER["consultation"]]
            on_list = [f for f in level.functions if STAGE_ORDER[f.stage] >= STAGE_ORDER["listed"]]
            counters[level.code] = (
                Progress(self.echo, self.prefix, label, len(level.functions), "proposed"),
                Progress(self.echo, self.prefix, label, len(beyond), "in consultation with their department"),
                Progress(self.echo, self.prefix, label, len(on_list), "listed by their department"),
            )
        work = [(level, f) for level in self.s.levels for f in level.functions]
        await self.each(work, lambda item: self.advance(item[0], item[1], *counters[item[0].code]))
        for level in self.s.levels:
            if any(STAGE_ORDER[f.stage] >= STAGE_ORDER["listed"] for f in level.functions):
                await self.publish_list(level, self.t.list_notes[0])

    async def advance(
        self, level: Level, f: FunctionSpec, proposed: Progress, consulted: Progress, listed: Progress
    ) -> None:
        """Propose one function and carry it as far as its stage: consultation, review, listing."""
        base = f"/functions/{f.id}"
        await self.api.post("registry", "/functions", self.proposal(level, f), self.proposer(level, f.proposer))
        proposed.tick()
        if STAGE_ORDER[f.stage] >= STAGE_ORDER["consultation"]:
            note = f"{level.association.name}就“{f.title}”与{self.department_names[f.department]}沟通"
            await self.api.post("registry", f"{base}/consultation", {"note": note}, self.association(level))
            consulted.tick()
        if STAGE_ORDER[f.stage] >= STAGE_ORDER["listed"]:
            owner = self.department(level, f.department)
            if f.category == "qualification_certification":
                reference = f.review or fill(self.t.review, department=self.department_names[f.department])
                await self.api.post("registry", f"{base}/department-review", {"reference": reference}, owner)
            await self.api.post("registry", f"{base}/listing", {}, owner)
            listed.tick()

    def proposal(self, level: Level, f: FunctionSpec) -> dict[str, Any]:
        return {
            "function_id": f.id,
            "jurisdiction": level.code,
            "title": f.title,
            "description": f.description,
            "category": f.category,
            "sub_kind": f.sub_kind,
            "scope": f.scope,
            "entrustment_mode": f.entrustment_mode,
            "department": f.department,
        }

    async def publish_list(self, level: Level, note: str) -> None:
        path = f"/function-lists/{level.code}/versions"
        result = await self.api.post("registry", path, {"note": note}, self.association(level))
        self.echo(f"{self.prefix} {level.name}: transferable-function list published (version {result['version']})")

    # [4] selection --------------------------------------------------------------------------

    async def selection(self) -> None:
        chosen = [Case(level, f) for level in self.s.levels for f in level.functions if f.stage == "undertaken"]
        done = Progress(self.echo, self.prefix, "undertaken functions", len(chosen), "assigned, cases open")

        async def select(case: Case) -> None:
            await self.select(case)
            self.cases[case.function.id] = case
            done.tick()

        await self.each(chosen, select)
        competitive = [c for c in self.cases.values() if c.applicants > 1]
        self.echo(
            f"{self.prefix} {len(competitive)} selections had competing applicants; "
            + ", ".join(f"{c.function.id} won by {c.function.undertaken_by} (rank {c.rank})" for c in competitive)
        )
        allocated = [c for c in self.cases.values() if c.function.funding_fen]
        total = sum(c.function.funding_fen for c in allocated)
        self.echo(f"{self.prefix} earmarked funding allocated to {len(allocated)} projects: {total} fen")

    async def select(self, case: Case) -> None:
        level, f = case.level, case.function
        assert f.undertaken_by is not None
        cast, owner = self.association(level), self.department(level, f.department)
        base = f"/functions/{f.id}"
        current = await self.api.read("registry", base, cast)
        if current["status"] in ("assigned", "transferred") and current.get("society_id") == f.undertaken_by:
            case.project_id = self.project_id_from(current)  # a second run on the same home
        else:
            opening = self.t.opening
            body = {
                "qualification_conditions": opening.qualification_conditions,
                "thresholds": opening.thresholds,
                "min_applicants": f.min_applicants or opening.min_applicants,
                "application_deadline": _in_days(opening.application_days),
            }
            await self.api.post("registry", f"{base}/opening", body, owner)

            async def selection_open() -> tuple[bool, Any]:
                status, body = await self.api.get("capability", f"/selections/{f.id}", cast)
                return status == 200 and body.get("status") == "open", body

            await self.api.wait(
                f"the selection of {f.id} to open in capability (from the registry's FunctionOpened)", selection_open
            )
            for applicant in f.all_applicants:
                statement = fill(self.t.application_statement, title=f.title, society=self.society_names[applicant])
                await self.api.post(
                    "capability",
                    f"/selections/{f.id}/applications",
                    {"society_id": applicant, "statement": statement},
                    self.society(level, applicant),
                )
            await self.api.post("capability", f"/selections/{f.id}/ranking", {}, cast)
            ranking = (await self.api.read("capability", f"/selections/{f.id}", cast))["ranking"]
            ranked = {c["society_id"]: c["rank"] for c in ranking["candidates"]}
            if f.undertaken_by not in ranked:
                reasons = [e["reason"] for e in ranking["exclusions"] if e["society_id"] == f.undertaken_by]
                raise DemoError(f"{f.undertaken_by} was not ranked for {f.id}: {'; '.join(reasons)}")
            case.rank, case.applicants = ranked[f.undertaken_by], len(f.all_applicants)
            recommendation: dict[str, Any] = {"society_ids": [f.undertaken_by]}
            if ranking["insufficient_competition"]:
                recommendation["justification"] = self.t.justification
            await self.api.post("capability", f"/selections/{f.id}/recommendation", recommendation, cast)

            async def registry_learned() -> tuple[bool, Any]:
                body = await self.api.read("registry", base, cast)
                return f.undertaken_by in body["recommended_society_ids"], body["recommended_society_ids"]

            await self.api.wait(
                f"the registry to learn the recommendation for {f.id} (from capability's SocietiesRecommended)",
                registry_learned,
            )
            body = {"society_id": f.undertaken_by, "society_name": self.society_names[f.undertaken_by]}
            assigned = await self.api.post("registry", f"{base}/assignment", body, owner)
            versions = [e["stream_version"] for e in assigned["appended"] if e["event_type"] == "FunctionAssigned"]
            case.project_id = (
                f"{f.id}-{versions[0]}"
                if versions
                else self.project_id_from(await self.api.read("registry", base, cast))
            )

        async def case_open() -> tuple[bool, Any]:
            status, _ = await self.api.get("supervision", f"/cases/{case.project_id}", cast)
            return status == 200, f"HTTP {status}"

        await self.api.wait(
            f"the supervision case {case.project_id} to open (from the registry's FunctionAssigned)", case_open
        )
        if f.funding_fen:
            body = {"amount_fen": f.funding_fen, "source": self.t.funding_source, "basis": self.t.funding_basis}
            await self.api.post("supervision", f"/cases/{case.project_id}/funding-allocations", body, cast)

    @staticmethod
    def project_id_from(function: dict[str, Any]) -> str:
        """The case id: the function id and the stream version of its latest assignment."""
        versions = [e["stream_version"] for e in function["history"] if e["event_type"] == "FunctionAssigned"]
        if not versions:
            raise DemoError(f"function {function['function_id']} has no assignment in its history")
        return f"{function['function_id']}-{versions[-1]}"

    # [5] preparation and deployment -----------------------------------------------------------

    def indicators(self, case: Case) -> list[IndicatorSpec]:
        stale = case.level.refusals.stale_signature
        if stale is not None and stale.function == case.function.id:
            return stale.indicators
        return self.t.indicators[case.function.category]

    def agreement_terms(self, case: Case, indicators: list[IndicatorSpec]) -> dict[str, Any]:
        terms = fill(self.t.agreement.model_dump(exclude={"milestones"}), **self.names(case))
        terms["milestones"] = [
            {"milestone_id": m.milestone_id, "title": m.title, "due_date": _in_days(m.due_in_days)}
            for m in self.t.agreement.milestones
        ]
        terms["indicators"] = [i.model_dump(mode="json", exclude={"measured"}) for i in indicators]
        f = case.function
        terms["funding"] = [{"source": self.t.funding_source, "amount_fen": f.funding_fen}] if f.funding_fen else []
        return terms

    async def deployment(self) -> None:
        working = [c for c in self.cases.values() if c.function.reaches("implementation")]
        done = Progress(self.echo, self.prefix, "projects", len(working), "with their agreement in force, implementing")
        await self.each(working, lambda case: self.deploy(case, done))

    async def deploy(self, case: Case, done: Progress) -> None:
        level, f, names = case.level, case.function, self.names(case)
        assert f.undertaken_by is not None
        base = f"/cases/{case.project_id}"
        society, owner, cast = (
            self.society(level, f.undertaken_by),
            self.department(level, f.department),
            (self.association(level)),
        )
        parties = {"department": owner, "society": society, "association": cast}
        plan = fill(self.t.plan.model_dump(), **names)
        await self.api.post("supervision", f"{base}/plans", plan, society)
        version = (await self.api.read("supervision", base, cast))["plans"]
        latest = max(int(v) for v in version)
        await self.api.post("supervision", f"{base}/plan-submissions", {"version": latest}, society)
        await self.api.post(
            "supervision", f"{base}/plan-approvals", {"version": latest, "note": self.t.approval_note}, owner
        )
        await self.api.post("supervision", f"{base}/deployment", {"basis": self.t.deployment_basis}, cast)
        refusal = level.refusals.leader
        if refusal is not None and refusal.function == f.id:
            body = {
                "person_name": refusal.person_name,
                "rank": refusal.rank,
                "board_resolution_ref": refusal.board_resolution_ref,
            }
            what = f"project leader of {case.project_id} at rank {refusal.rank} (below secretary-general)"
            self.refused(await self.api.refused(what, "supervision", f"{base}/leader", body, society, refusal.expect))
        await self.api.post("supervision", f"{base}/leader", fill(self.t.leader.model_dump(), **names), society)
        if f.reaches("summary"):
            for i, member in enumerate(self.t.team, start=1):
                body = {"member_id": f"{case.project_id}-team-{i}", **fill(member.model_dump(), **names)}
                await self.api.post("supervision", f"{base}/team-members", body, parties[member.party])
        stale = level.refusals.stale_signature
        if stale is not None and stale.function == f.id:
            first = self.agreement_terms(case, self.t.indicators[f.category])
            signed = await self.draft_version(
                case, await self.api.post("supervision", f"{base}/agreements", first, cast)
            )
            await self.api.post(
                "supervision", f"{base}/agreement-signatures", {"version": signed}, parties[stale.signed_first_by]
            )
            redrafted = self.agreement_terms(case, stale.indicators)
            drafted = await self.api.post("supervision", f"{base}/agreements", redrafted, cast)
            what = (
                f"{stale.stale_party} signature of agreement v{signed} of {case.project_id} after it was redrafted "
                f"({stale.amendment_reason})"
            )
            self.refused(
                await self.api.refused(
                    what,
                    "supervision",
                    f"{base}/agreement-signatures",
                    {"version": signed},
                    parties[stale.stale_party],
                    stale.expect,
                )
            )
        else:
            terms = self.agreement_terms(case, self.indicators(case))
            drafted = await self.api.post("supervision", f"{base}/agreements", terms, cast)
        version_to_sign = await self.draft_version(case, drafted)
        for party in ("department", "society", "association"):
            await self.api.post(
                "supervision", f"{base}/agreement-signatures", {"version": version_to_sign}, parties[party]
            )
        await self.api.post("supervision", f"{base}/implementation", {"basis": self.t.implementation_basis}, cast)
        done.tick()

    async def draft_version(self, case: Case, drafted: dict[str, Any]) -> int:
        """The agreement version a drafting request recorded (a replayed request names the same event);
        the latest draft when the terms were already the latest."""
        body = await self.api.read("supervision", f"/cases/{case.project_id}", self.association(case.level))
        ids = {e["event_id"] for e in drafted["appended"] if e["event_type"] == "AgreementDrafted"}
        for event in body["timeline"]:
            if event["event_id"] in ids:
                return int(event["payload"]["version"])
        return int(body["agreement_draft"]["version"])

    # [6] implementation --------------------------------------------------------------------------

    async def implementation(self) -> None:
        active = [
            c
            for c in self.cases.values()
            if c.function.reaches("implementation")
            and (c.function.evaluated or c.function.third_party or c.function.reaches("summary") or self.rectifies(c))
        ]
        done = Progress(self.echo, self.prefix, "projects", len(active), "reported, supervised and evaluated")

        async def carry(case: Case) -> None:
            await self.implement(case)
            done.tick()

        await self.each(active, carry)
        grades: dict[str, int] = {}
        for c in active:
            if c.grade:
                grades[c.grade] = grades.get(c.grade, 0) + 1
        self.echo(
            f"{self.prefix} evaluation grades (performance-score-v1): "
            + ", ".join(f"{g} {n}" for g, n in sorted(grades.items()))
        )

    def rectifies(self, case: Case) -> bool:
        r = case.level.rectification
        return r is not None and r.function == case.function.id

    async def implement(self, case: Case) -> None:
        level, f, names = case.level, case.function, self.names(case)
        assert f.undertaken_by is not None
        base = f"/cases/{case.project_id}"
        society, owner, cast = (
            self.society(level, f.undertaken_by),
            self.department(level, f.department),
            (self.association(level)),
        )
        progress = self.t.progress
        report = {"milestone_id": progress.milestone, "status": "done", "evidence": progress.evidence}
        await self.api.post("supervision", f"{base}/milestone-reports", report, society)
        for indicator in self.indicators(case):
            body = {"name": indicator.name, "value": str(indicator.measured), "period": self.t.measurement_period}
            await self.api.post("supervision", f"{base}/indicator-measurements", body, society)
        await self.api.post("supervision", f"{base}/government-feedback", {"opinions": progress.feedback}, owner)
        meeting = {
            "meeting_id": f"{case.project_id}-meeting-1",
            "held_on": _today().date().isoformat(),
            **fill(progress.meeting.model_dump(), **names),
        }
        await self.api.post("supervision", f"{base}/supervision-meetings", meeting, cast)
        r = level.rectification
        if r is not None and r.function == f.id:
            order = {
                "rectification_id": r.rectification_id,
                "required_actions": r.required_actions,
                "deadline": _in_days(r.deadline_in_days),
                "basis": r.basis,
            }
            await self.api.post("supervision", f"{base}/rectification-orders", order, cast)
            done = {"rectification_id": r.rectification_id, "actions_taken": r.actions_taken, "evidence": r.evidence}
            await self.api.post("supervision", f"{base}/rectification-reports", done, society)
            accepted = {"rectification_id": r.rectification_id, "basis": r.acceptance_basis}
            await self.api.post("supervision", f"{base}/rectification-acceptances", accepted, cast)
            self.echo(
                f"{self.prefix} rectification {r.rectification_id} of {case.project_id}: ordered, reported, accepted"
            )
        evaluation = self.t.evaluation
        if f.evaluated:
            own = evaluation.self_evaluation
            body = {"report_ref": own.report_ref, "claimed_score": str(own.claimed_score)}
            await self.api.post("supervision", f"{base}/self-evaluation", body, society)
            for kind, finance_report in evaluation.finance.items():
                body = {"kind": kind, **finance_report.model_dump()}
                await self.api.post("supervision", f"{base}/finance-evaluations", body, self.finance(level))
            for group, count in evaluation.satisfaction.items():
                body = {"respondent_group": group, **count.model_dump()}
                await self.api.post("supervision", f"{base}/satisfaction-surveys", body, cast)
            if f.disbursed_fen:
                payment = {"amount_fen": f.disbursed_fen, "purpose": evaluation.disbursement_purpose}
                await self.api.post("supervision", f"{base}/disbursements", payment, self.finance(level))
        if f.third_party:
            evaluator = self.evaluator(level)
            await self.api.post("supervision", f"{base}/evaluator-commission", {"evaluator_org": evaluator.org}, cast)
            await self.api.post(
                "supervision",
                f"{base}/third-party-evaluations",
                fill(self.t.third_party.model_dump(), **names),
                evaluator,
            )
        if f.evaluated or f.third_party or f.reaches("summary"):
            await self.api.post("supervision", f"{base}/evaluation", {}, cast)
            case.grade = (await self.api.read("supervision", base, cast))["evaluation"]["grade"]

    # [7] summary ------------------------------------------------------------------------------------

    async def summary(self) -> None:
        summing = [c for c in self.cases.values() if c.function.reaches("summary")]
        done = Progress(self.echo, self.prefix, "projects", len(summing), "summarised")

        async def conclude(case: Case) -> None:
            await self.conclude(case)
            done.tick()

        await self.each(summing, conclude)
        for level in self.s.levels:
            if any(STAGE_ORDER[f.stage] >= STAGE_ORDER["listed"] for f in level.functions):
                await self.publish_list(level, self.t.list_notes[-1])

    async def conclude(self, case: Case) -> None:
        level, f, names = case.level, case.function, self.names(case)
        assert f.undertaken_by is not None
        base = f"/cases/{case.project_id}"
        society, cast = self.society(level, f.undertaken_by), self.association(level)
        summary = self.t.summary
        await self.api.post("supervision", f"{base}/summary", {"basis": summary.basis}, cast)
        report = {"report_ref": fill(summary.report_ref, **names), "replicable_models": summary.replicable_models}
        await self.api.post("supervision", f"{base}/summary-report", report, society)
        typical = level.typical_case
        if typical is not None and typical.function == f.id:
            if typical.commendation is not None:
                await self.api.post("supervision", f"{base}/commendation", typical.commendation.model_dump(), cast)
            await self.api.post("supervision", f"{base}/typical-case", {"rationale": typical.rationale}, cast)
            self.echo(f"{self.prefix} {case.project_id} ({f.title}) designated a typical case (典型案例)")
        if f.reaches("closed"):
            await self.api.post("supervision", f"{base}/closure", {"basis": summary.closure_basis}, cast)

    # [8] disclosure ----------------------------------------------------------------------------------

    async def disclosure(self) -> None:
        for level in self.s.levels:
            expected = sum(1 for f in level.functions if f.reaches("implementation"))
            if not expected:
                continue

            async def transferred(level: Level = level, expected: int = expected) -> tuple[bool, Any]:
                body = await self.api.read(
                    "registry", "/functions", self.association(level), jurisdiction=level.code, state="transferred"
                )
                return body["total"] >= expected, f"{body['total']} of {expected} transferred"

            seen = await self.api.wait(
                f"the registry to mark {expected} {level.name} functions transferred (from AgreementTookEffect)",
                transferred,
                timeout=CONVERGENCE_TIMEOUT_S,
            )
            self.echo(f"{self.prefix} registry: {seen} in {level.name} (the task agreements are in force)")
        code = self.s.report.jurisdiction
        began = time.monotonic()

        async def converged() -> tuple[bool, Any]:
            body = await self.api.read("disclosure", f"/public/jurisdictions/{code}/statistics")
            self.figure_checks = [FigureCheck(figure, _lookup(body, figure.path)) for figure in self.s.report.figures]
            differing = [
                f"{c.figure.key} {_plain(c.disclosed)} (report {_plain(c.figure.value)})"
                for c in self.figure_checks
                if not c.ok
            ]
            return not differing, "; ".join(differing)

        try:
            await self.api.wait(
                f"the disclosed statistics of {code} to count every fact", converged, timeout=CONVERGENCE_TIMEOUT_S
            )
            waited = time.monotonic() - began
            self.echo(
                f"{self.prefix} the disclosed statistics of {code} match the report (converged in {waited:.1f} s)"
            )
        except DemoAborted:
            raise
        except DemoError as exc:
            self.echo(f"{self.prefix} {exc}")
        for level in sorted(self.s.levels, key=lambda lv: lv.code):
            self.rollup[level.code] = await self.api.read(
                "disclosure", f"/public/jurisdictions/{level.code}/statistics"
            )

    # the summary -----------------------------------------------------------------------------------

    def print_summary(self, outcome: Outcome) -> None:
        echo = self.echo
        echo("")
        echo("Summary")
        echo(f"  {'step':<40} {'time':>8} {'requests':>9}")
        for t in self.timings:
            echo(f"  {t.label + ' ' + t.title:<40} {t.seconds:>6.1f} s {t.requests:>9}")
        echo(
            f"  {'scenario':<40} {outcome.seconds:>6.1f} s {self.api.requests:>9}"
            f"   ({self.api.retries} retried; at most {CONCURRENCY} in flight)"
        )
        if self.cases:
            phases: dict[str, int] = {}
            for level in self.s.levels:
                count = sum(1 for c in self.cases.values() if c.level.code == level.code)
                if count:
                    phases[level.name] = count
            echo("  cases: " + ", ".join(f"{name} {n}" for name, n in phases.items()))
        echo("")
        echo("Refused, as the rules require:")
        for r in outcome.refusals:
            echo(f"  refused  {r.code} ({r.status}): {r.what}")
            echo(f"           by {r.actor}; reason: {r.detail}")
        if not outcome.refusals:
            echo("  (none)")
        if outcome.error:
            echo("")
            echo(f"demo failed: {outcome.error}")
        if outcome.figures:
            code = self.s.report.jurisdiction
            echo("")
            echo(f"{self.s.report.title} ({code}): the report's figures against the disclosed statistics")
            echo(f"  {'figure':<30} {'report':>12} {'disclosed':>12}")
            for check in outcome.figures:
                mark = "ok" if check.ok else "DIFFERS"
                value = _plain(check.figure.value)
                echo(f"  {check.figure.key:<30} {value:>12} {_plain(check.disclosed):>12}  {mark:<7} {check.figure.zh}")
            differing = [c.figure.key for c in outcome.figures if not c.ok]
            if differing:
                echo(f"  {len(differing)} figure(s) differ from the report: {', '.join(differing)}")
            else:
                echo(f"  all {len(outcome.figures)} figures match the report")
        if self.rollup:
            echo("")
            echo("Roll-up of the disclosed statistics (each level counts everything below it):")
            header = ("societies", 9), ("proposed", 9), ("undertaken", 10), ("participating", 13), ("cases", 6)
            echo(f"  {'code':<8} " + " ".join(f"{name:>{width}}" for name, width in header) + "  jurisdiction")
            names = {level.code: level.name for level in self.s.levels}
            for code, figures in self.rollup.items():
                s, f, c = figures["societies"], figures["functions"], figures["cases"]
                values = (s["total"], f["proposed"], f["undertaken"], s["participating"], c["total"])
                row = " ".join(f"{value:>{width}}" for value, (_, width) in zip(values, header, strict=True))
                echo(f"  {code:<8} {row}  {names[code]}")
        echo("")
        echo(f"Portal:  {outcome.portal}   (statistics: {outcome.portal}/statistics)")
        verdict = "the disclosed figures match the report" if outcome.ok else "FAILED"
        echo(f"demo: scenario ran in {outcome.seconds:.1f} s — {verdict}")


def _count(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else many or one + 's'}"


def _plain(value: Any) -> str:
    number = _as_number(value)
    if number is None:
        return "—" if value is None else str(value)
    return format(number.normalize(), "f") if number == number.to_integral_value() else str(number)


async def run_async(
    urls: dict[str, str],
    private_key_path: Path,
    scenario: Scenario,
    echo: Echo,
    cancelled: Callable[[], bool] = lambda: False,
) -> Outcome:
    limits = httpx.Limits(max_connections=CONCURRENCY * 2, max_keepalive_connections=CONCURRENCY * 2)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        api = Api(client, urls, private_key_path, cancelled=cancelled)
        return await Demo(scenario, api, echo).run()


def run(
    urls: dict[str, str],
    private_key_path: Path,
    scenario: Scenario,
    echo: Echo = print,
    cancelled: Callable[[], bool] = lambda: False,
) -> Outcome:
    """Play ``scenario`` against the running services at ``urls``; see the module docstring."""
    return asyncio.run(run_async(urls, private_key_path, scenario, echo, cancelled))
