"""Project supervision (督导): one decider per pilot project (试点项目), the case.

Read top to bottom: vocabulary, events (the stored contract), state and ``evolve``, the
read-outs other parts need (``due_items``, ``satisfaction_rate``, ``ledger``), the scoring
method (``performance_score``), then commands and ``decide``. Everything here is pure: ids,
dates and time arrive with the commands.

A case opens when the registry assigns a function to a society. Its parties are the owning
department, the society and the association at the case's jurisdiction; a commissioned
third-party evaluator and the finance bureau take part in evaluation. The case runs
through four phases — preparation (筹备协调), deployment (部署动员), implementation (实施),
summary (系统总结) — and ends closed, or terminated. The tripartite task agreement (任务书)
takes effect only once all three parties have signed the same version.

Money is whole fen (分), never a float. Scores and rates are decimals rounded half to even
to 2 places, and travel as strings in JSON.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Context, Decimal
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Final

from pydantic import BaseModel, ConfigDict, Field, field_validator

from services.registry.domain import Category
from shared import jurisdiction as jurisdictions
from shared.errors import DomainRuleViolated, InvalidInput, NotFound, NotPermitted
from shared.messages import Aggregate, Command, Event, EventRegistry
from shared.principal import Principal, Role
from shared.rules import iso_date as _iso_date
from shared.rules import refuse_read_only as _refuse_read_only
from shared.rules import require_text as _require_text

# ---------------------------------------------------------------------------------------
# Vocabulary
# ---------------------------------------------------------------------------------------


class Phase(StrEnum):
    """Where a case stands; closed and terminated are final."""

    PREPARATION = "preparation"  # 筹备协调
    DEPLOYMENT = "deployment"  # 部署动员
    IMPLEMENTATION = "implementation"  # 实施
    SUMMARY = "summary"  # 系统总结
    CLOSED = "closed"
    SUSPENDED = "suspended"
    TERMINATED = "terminated"


ACTIVE_PHASES: Final = frozenset({Phase.PREPARATION, Phase.DEPLOYMENT, Phase.IMPLEMENTATION, Phase.SUMMARY})
"""The four working phases."""
OPEN_PHASES: Final = ACTIVE_PHASES | {Phase.SUSPENDED}
"""Every phase that is not final."""
ENDED_PHASES: Final = frozenset({Phase.CLOSED, Phase.TERMINATED})


class PlanStatus(StrEnum):
    """Where one version of the implementation plan (实施方案) stands."""

    DRAFTED = "drafted"
    SUBMITTED = "submitted"
    APPROVED = "approved"
    RETURNED = "returned"


class LeaderRank(StrEnum):
    """A rank in the society, lowest first; the project leader needs secretary-general or above."""

    MEMBER = "member"
    DIRECTOR = "director"  # 理事
    DEPUTY_SECRETARY_GENERAL = "deputy_secretary_general"  # 副秘书长
    SECRETARY_GENERAL = "secretary_general"  # 秘书长
    VICE_PRESIDENT = "vice_president"  # 副理事长
    PRESIDENT = "president"  # 理事长


_RANK_ORDER: Final[dict[LeaderRank, int]] = {rank: i for i, rank in enumerate(LeaderRank)}
MIN_LEADER_RANK: Final = LeaderRank.SECRETARY_GENERAL


def rank_at_least(rank: LeaderRank, least: LeaderRank) -> bool:
    """True when ``rank`` is ``least`` or above it."""
    return _RANK_ORDER[rank] >= _RANK_ORDER[least]


class Party(StrEnum):
    """The three parties that sign the task agreement and staff the team."""

    DEPARTMENT = "department"
    SOCIETY = "society"
    ASSOCIATION = "association"


class MilestoneProgress(StrEnum):
    """What the society reports about a milestone."""

    IN_PROGRESS = "in_progress"
    DONE = "done"


class RectificationStatus(StrEnum):
    """Where a rectification (整改) stands; after a rejection the society reports again."""

    ORDERED = "ordered"
    REPORTED = "reported"
    ACCEPTED = "accepted"
    REJECTED = "rejected"


class FinanceEvaluationKind(StrEnum):
    """The finance bureau's performance evaluations."""

    OVERALL = "overall"  # 整体评价
    ON_SITE = "on_site"  # 现场评价


class RespondentGroup(StrEnum):
    """Who answered a satisfaction survey."""

    DEPARTMENTS = "departments"
    SOCIETIES = "societies"
    PUBLIC = "public"


class Grade(StrEnum):
    """The grade of a completed evaluation (see ``grade_for``)."""

    EXCELLENT = "excellent"
    GOOD = "good"
    PASS = "pass"
    FAIL = "fail"


class DecisionKind(StrEnum):
    """A supervision decision, as kept in the case's list of decisions."""

    COMMENDED = "commended"  # 示范
    RECTIFICATION_ORDERED = "rectification_ordered"  # 整改
    RECTIFICATION_ACCEPTED = "rectification_accepted"
    RECTIFICATION_REJECTED = "rectification_rejected"
    WARNING = "warning"
    TERMINATED = "terminated"
    FUNDING_ADJUSTED = "funding_adjusted"
    AWARD_GRANTED = "award_granted"  # 以奖代补


class DueKind(StrEnum):
    """What kind of deadline a ``DueItem`` is."""

    MILESTONE = "milestone"
    RECTIFICATION = "rectification"


_FROZEN = ConfigDict(frozen=True, extra="forbid")

Fen = Annotated[int, Field(strict=True)]
"""An amount of money in whole fen (分); strict, so a float or a bool is refused."""


class Milestone(BaseModel):
    """One scheduled milestone of the task agreement; ``due_date`` is an ISO date."""

    model_config = _FROZEN

    milestone_id: str
    title: str
    due_date: str


class Indicator(BaseModel):
    """A quantitative assessment indicator (量化考核指标); the weights of an agreement sum to 100."""

    model_config = _FROZEN

    name: str
    unit: str
    target: Decimal
    weight: Decimal


class FundingSource(BaseModel):
    """Where the project's money comes from, as the agreement names it."""

    model_config = _FROZEN

    source: str
    amount_fen: Fen


class IndicatorInput(BaseModel):
    """One indicator as an evaluation used it: ``value`` is its latest measurement, if any."""

    model_config = _FROZEN

    name: str
    target: Decimal
    weight: Decimal
    value: Decimal | None
    period: str | None


# ---------------------------------------------------------------------------------------
# 1. Events
#
# These shapes ARE the storage format. Once written, an event's shape is frozen for its
# schema_version: change a shape only by bumping the version and registering an upcaster
# on EVENTS. Time and actor (the decider of a supervision decision) live in the envelope,
# not in the payload. Events that other services react to name society_id and function_id.
# ---------------------------------------------------------------------------------------


class CaseOpened(Event):
    """A pilot project began for a function the registry assigned to a society."""

    event_type: ClassVar[str] = "CaseOpened"

    project_id: str
    function_id: str
    society_id: str
    society_name: str
    department: str
    jurisdiction: str
    title: str
    category: Category


class PlanDrafted(Event):
    """The society drafted a version of its implementation plan (实施方案)."""

    event_type: ClassVar[str] = "PlanDrafted"

    project_id: str
    version: int
    content: str
    goals: list[str]


class PlanSubmitted(Event):
    """The society submitted a plan version to the owning department for review."""

    event_type: ClassVar[str] = "PlanSubmitted"

    project_id: str
    version: int


class PlanApproved(Event):
    """The owning department approved a submitted plan version."""

    event_type: ClassVar[str] = "PlanApproved"

    project_id: str
    version: int
    note: str


class PlanReturned(Event):
    """The owning department returned a submitted plan version; a new draft is needed."""

    event_type: ClassVar[str] = "PlanReturned"

    project_id: str
    version: int
    reasons: list[str]


class LeaderAppointed(Event):
    """The society appointed the project leader (项目负责人) by a board resolution."""

    event_type: ClassVar[str] = "LeaderAppointed"

    project_id: str
    person_name: str
    rank: LeaderRank
    board_resolution_ref: str


class MajorMatterDecided(Event):
    """The society's board or standing board decided a major matter of the project."""

    event_type: ClassVar[str] = "MajorMatterDecided"

    project_id: str
    matter: str
    board_resolution_ref: str


class TeamMemberAdded(Event):
    """A party put one of its own people on the project implementation team (项目实施团队)."""

    event_type: ClassVar[str] = "TeamMemberAdded"

    project_id: str
    member_id: str
    name: str
    party: Party
    role_in_team: str


class TeamMemberRemoved(Event):
    """A party took one of its people off the team."""

    event_type: ClassVar[str] = "TeamMemberRemoved"

    project_id: str
    member_id: str
    reason: str


class AgreementDrafted(Event):
    """A version of the tripartite task agreement (任务书); an amendment once one took effect."""

    event_type: ClassVar[str] = "AgreementDrafted"

    project_id: str
    version: int
    rights_and_obligations: str
    cooperation_mode: str
    goals: list[str]
    key_tasks: list[str]
    milestones: list[Milestone]
    quality_requirements: list[str]
    indicators: list[Indicator]
    funding: list[FundingSource]
    is_amendment: bool


class AgreementSigned(Event):
    """One party signed one version of the task agreement."""

    event_type: ClassVar[str] = "AgreementSigned"

    project_id: str
    version: int
    party: Party


class AgreementTookEffect(Event):
    """All three parties signed ``version``: it is now the agreement in force.

    It repeats the terms that the public and other services need (goals, key tasks,
    milestones, indicators, funding), so that they can act on this one event.
    """

    event_type: ClassVar[str] = "AgreementTookEffect"

    project_id: str
    function_id: str
    society_id: str
    version: int
    agreement_reference: str
    goals: list[str]
    key_tasks: list[str]
    milestones: list[Milestone]
    indicators: list[Indicator]
    funding: list[FundingSource]


class PhaseChanged(Event):
    """The association moved the case from one phase to another."""

    event_type: ClassVar[str] = "PhaseChanged"

    project_id: str
    from_phase: Phase
    to_phase: Phase
    basis: str


class MilestoneReported(Event):
    """The society reported progress on a milestone, with evidence."""

    event_type: ClassVar[str] = "MilestoneReported"

    project_id: str
    milestone_id: str
    status: MilestoneProgress
    evidence: list[str]


class IndicatorMeasured(Event):
    """The society measured an indicator for a period."""

    event_type: ClassVar[str] = "IndicatorMeasured"

    project_id: str
    name: str
    value: Decimal
    period: str


class GovernmentFeedbackGiven(Event):
    """The owning department gave its opinions and suggestions (意见建议)."""

    event_type: ClassVar[str] = "GovernmentFeedbackGiven"

    project_id: str
    opinions: list[str]


class SupervisionMeetingHeld(Event):
    """The association held a regular supervision meeting (例会督导)."""

    event_type: ClassVar[str] = "SupervisionMeetingHeld"

    project_id: str
    meeting_id: str
    held_on: str
    attendees: list[str]
    progress: str
    stage_goals: list[str]
    next_priorities: list[str]
    issues_to_coordinate: list[str]


class MilestoneOverdue(Event):
    """The deadline processor found a milestone not done after its due date."""

    event_type: ClassVar[str] = "MilestoneOverdue"

    project_id: str
    milestone_id: str
    due_date: str
    detected_on: str


class RectificationOverdue(Event):
    """The deadline processor found a rectification not reported after its deadline."""

    event_type: ClassVar[str] = "RectificationOverdue"

    project_id: str
    rectification_id: str
    deadline: str
    detected_on: str


class ProjectCommended(Event):
    """The project was shown as an example (示范)."""

    event_type: ClassVar[str] = "ProjectCommended"

    project_id: str
    society_id: str
    function_id: str
    basis: str
    note: str


class RectificationOrdered(Event):
    """The society was told to rectify (整改) by ``deadline``."""

    event_type: ClassVar[str] = "RectificationOrdered"

    project_id: str
    society_id: str
    function_id: str
    rectification_id: str
    required_actions: list[str]
    deadline: str
    basis: str


class RectificationReported(Event):
    """The society reported what it did to rectify."""

    event_type: ClassVar[str] = "RectificationReported"

    project_id: str
    rectification_id: str
    actions_taken: list[str]
    evidence: list[str]


class RectificationAccepted(Event):
    """The association accepted the reported rectification."""

    event_type: ClassVar[str] = "RectificationAccepted"

    project_id: str
    society_id: str
    function_id: str
    rectification_id: str
    basis: str


class RectificationRejected(Event):
    """The association rejected the reported rectification; the society reports again."""

    event_type: ClassVar[str] = "RectificationRejected"

    project_id: str
    rectification_id: str
    reasons: list[str]
    basis: str


class WarningIssued(Event):
    """The association warned the society."""

    event_type: ClassVar[str] = "WarningIssued"

    project_id: str
    basis: str
    text: str


class ProjectTerminated(Event):
    """The association ended the project; the registry takes the function back."""

    event_type: ClassVar[str] = "ProjectTerminated"

    project_id: str
    society_id: str
    function_id: str
    basis: str
    reason: str


class FundingAdjusted(Event):
    """The project's funding was raised (positive) or cut (negative) by ``delta_fen``."""

    event_type: ClassVar[str] = "FundingAdjusted"

    project_id: str
    delta_fen: Fen
    basis: str


class AwardGranted(Event):
    """An award in place of a subsidy (以奖代补) was granted to the project."""

    event_type: ClassVar[str] = "AwardGranted"

    project_id: str
    amount_fen: Fen
    basis: str


class SelfEvaluationSubmitted(Event):
    """The society submitted its performance self-evaluation (绩效自评)."""

    event_type: ClassVar[str] = "SelfEvaluationSubmitted"

    project_id: str
    report_ref: str
    claimed_score: Decimal


class EvaluatorCommissioned(Event):
    """The association commissioned a third-party evaluator (第三方评估机构)."""

    event_type: ClassVar[str] = "EvaluatorCommissioned"

    project_id: str
    evaluator_org: str


class ThirdPartyEvaluationSubmitted(Event):
    """The commissioned evaluator submitted its evaluation report."""

    event_type: ClassVar[str] = "ThirdPartyEvaluationSubmitted"

    project_id: str
    evaluator_org: str
    report_ref: str
    findings: list[str]


class FinanceEvaluationSubmitted(Event):
    """The finance bureau's performance team evaluated the project's spending."""

    event_type: ClassVar[str] = "FinanceEvaluationSubmitted"

    project_id: str
    kind: FinanceEvaluationKind
    report_ref: str
    findings: list[str]


class SatisfactionSurveyed(Event):
    """A satisfaction survey's counts; the rate is computed (``satisfaction_rate``), never stored."""

    event_type: ClassVar[str] = "SatisfactionSurveyed"

    project_id: str
    respondent_group: RespondentGroup
    respondents: int
    satisfied: int


class EvaluationCompleted(Event):
    """The association completed the evaluation by ``method``, with every input it used."""

    event_type: ClassVar[str] = "EvaluationCompleted"

    project_id: str
    society_id: str
    function_id: str
    score: Decimal
    grade: Grade
    method: str
    inputs: list[IndicatorInput]


class SummaryReportSubmitted(Event):
    """The society submitted the project summary report, with replicable models."""

    event_type: ClassVar[str] = "SummaryReportSubmitted"

    project_id: str
    report_ref: str
    replicable_models: list[str]


class TypicalCaseDesignated(Event):
    """The association designated the project a typical case (典型案例) for others to learn from."""

    event_type: ClassVar[str] = "TypicalCaseDesignated"

    project_id: str
    society_id: str
    function_id: str
    rationale: str


class FundingAllocated(Event):
    """Money was earmarked for the project."""

    event_type: ClassVar[str] = "FundingAllocated"

    project_id: str
    amount_fen: Fen
    source: str
    basis: str


class FundingDisbursed(Event):
    """Money was paid out to the project."""

    event_type: ClassVar[str] = "FundingDisbursed"

    project_id: str
    amount_fen: Fen
    purpose: str


EVENTS = EventRegistry(
    CaseOpened,
    PlanDrafted,
    PlanSubmitted,
    PlanApproved,
    PlanReturned,
    LeaderAppointed,
    MajorMatterDecided,
    TeamMemberAdded,
    TeamMemberRemoved,
    AgreementDrafted,
    AgreementSigned,
    AgreementTookEffect,
    PhaseChanged,
    MilestoneReported,
    IndicatorMeasured,
    GovernmentFeedbackGiven,
    SupervisionMeetingHeld,
    MilestoneOverdue,
    RectificationOverdue,
    ProjectCommended,
    RectificationOrdered,
    RectificationReported,
    RectificationAccepted,
    RectificationRejected,
    WarningIssued,
    ProjectTerminated,
    FundingAdjusted,
    AwardGranted,
    SelfEvaluationSubmitted,
    EvaluatorCommissioned,
    ThirdPartyEvaluationSubmitted,
    FinanceEvaluationSubmitted,
    SatisfactionSurveyed,
    EvaluationCompleted,
    SummaryReportSubmitted,
    TypicalCaseDesignated,
    FundingAllocated,
    FundingDisbursed,
)
"""Every event type of the supervision service, for decoding stored events."""


# ---------------------------------------------------------------------------------------
# 2. State and evolve
# ---------------------------------------------------------------------------------------


class PlanVersion(BaseModel):
    """One version of the implementation plan and where it stands."""

    model_config = _FROZEN

    version: int
    content: str
    goals: list[str]
    status: PlanStatus = PlanStatus.DRAFTED
    note: str = ""
    reasons: list[str] = Field(default_factory=list)


class Leader(BaseModel):
    model_config = _FROZEN

    person_name: str
    rank: LeaderRank
    board_resolution_ref: str


class MajorMatter(BaseModel):
    model_config = _FROZEN

    matter: str
    board_resolution_ref: str


class TeamMember(BaseModel):
    model_config = _FROZEN

    member_id: str
    name: str
    party: Party
    role_in_team: str


class MilestoneState(BaseModel):
    """A milestone of the agreement in force; ``progress=None``: nothing reported yet."""

    model_config = _FROZEN

    milestone_id: str
    title: str
    due_date: str
    progress: MilestoneProgress | None = None
    evidence: list[str] = Field(default_factory=list)
    overdue: bool = False


class Measurement(BaseModel):
    model_config = _FROZEN

    value: Decimal
    period: str


class IndicatorState(BaseModel):
    """An indicator of the agreement in force with its latest measurement."""

    model_config = _FROZEN

    name: str
    unit: str
    target: Decimal
    weight: Decimal
    latest: Measurement | None = None


class Decision(BaseModel):
    """One supervision decision; who decided is in the event's envelope."""

    model_config = _FROZEN

    kind: DecisionKind
    basis: str
    text: str = ""


class Rectification(BaseModel):
    model_config = _FROZEN

    rectification_id: str
    required_actions: list[str]
    deadline: str
    basis: str
    status: RectificationStatus = RectificationStatus.ORDERED
    overdue: bool = False
    actions_taken: list[str] = Field(default_factory=list)
    evidence: list[str] = Field(default_factory=list)
    rejection_reasons: list[str] = Field(default_factory=list)


class SatisfactionCount(BaseModel):
    """The latest survey counts of one respondent group."""

    model_config = _FROZEN

    respondents: int
    satisfied: int


class CaseState(BaseModel):
    """What the decider knows about one case; ``phase=None``: not opened."""

    model_config = _FROZEN

    phase: Phase | None = None
    suspended_from: Phase | None = None
    project_id: str = ""
    function_id: str = ""
    society_id: str = ""
    society_name: str = ""
    department: str = ""
    jurisdiction: str = ""
    title: str = ""
    category: Category | None = None
    plans: dict[int, PlanVersion] = Field(default_factory=dict)
    leader: Leader | None = None
    major_matters: list[MajorMatter] = Field(default_factory=list)
    team: dict[str, TeamMember] = Field(default_factory=dict)
    agreement_draft: AgreementDrafted | None = None
    """The latest drafted version; the same as the one in force unless an amendment is pending."""
    signatures: list[Party] = Field(default_factory=list)
    """Who signed ``agreement_draft``."""
    effective_agreement: AgreementDrafted | None = None
    milestones: dict[str, MilestoneState] = Field(default_factory=dict)
    indicators: dict[str, IndicatorState] = Field(default_factory=dict)
    feedback: list[GovernmentFeedbackGiven] = Field(default_factory=list)
    meetings: dict[str, SupervisionMeetingHeld] = Field(default_factory=dict)
    decisions: list[Decision] = Field(default_factory=list)
    rectifications: dict[str, Rectification] = Field(default_factory=dict)
    self_evaluation: SelfEvaluationSubmitted | None = None
    evaluator_org: str | None = None
    third_party_evaluations: list[ThirdPartyEvaluationSubmitted] = Field(default_factory=list)
    finance_evaluations: list[FinanceEvaluationSubmitted] = Field(default_factory=list)
    satisfaction: dict[RespondentGroup, SatisfactionCount] = Field(default_factory=dict)
    evaluation: EvaluationCompleted | None = None
    summary_report: SummaryReportSubmitted | None = None
    typical_case: TypicalCaseDesignated | None = None
    allocated_fen: int = 0
    adjusted_fen: int = 0
    awarded_fen: int = 0
    disbursed_fen: int = 0

    @property
    def latest_plan(self) -> PlanVersion | None:
        return self.plans[max(self.plans)] if self.plans else None

    @property
    def plan_approved(self) -> bool:
        """True when the latest plan version is approved."""
        latest = self.latest_plan
        return latest is not None and latest.status is PlanStatus.APPROVED

    @property
    def effective_version(self) -> int | None:
        return self.effective_agreement.version if self.effective_agreement is not None else None


def initial_case() -> CaseState:
    """The state of a case stream before its first event."""
    return CaseState()


def _with_plan(state: CaseState, version: int, **update: Any) -> CaseState:
    plan = state.plans.get(version)
    if plan is None:
        return state
    return state.model_copy(update={"plans": {**state.plans, version: plan.model_copy(update=update)}})


def _with_rectification(state: CaseState, rectification_id: str, **update: Any) -> CaseState:
    r = state.rectifications.get(rectification_id)
    if r is None:
        return state
    return state.model_copy(
        update={"rectifications": {**state.rectifications, rectification_id: r.model_copy(update=update)}}
    )


def _decided(state: CaseState, kind: DecisionKind, basis: str, text: str = "", **update: Any) -> CaseState:
    decision = Decision(kind=kind, basis=basis, text=text)
    return state.model_copy(update={"decisions": [*state.decisions, decision], **update})


def _in_force(state: CaseState, terms: AgreementDrafted) -> CaseState:
    """The state once ``terms`` took effect: progress on milestones and indicators that remain carries over."""
    milestones: dict[str, MilestoneState] = {}
    for m in terms.milestones:
        before = state.milestones.get(m.milestone_id)
        milestones[m.milestone_id] = MilestoneState(
            milestone_id=m.milestone_id,
            title=m.title,
            due_date=m.due_date,
            progress=before.progress if before is not None else None,
            evidence=list(before.evidence) if before is not None else [],
            # a milestone given a new due date is no longer overdue
            overdue=before is not None and before.overdue and before.due_date == m.due_date,
        )
    indicators = {
        i.name: IndicatorState(
            name=i.name,
            unit=i.unit,
            target=i.target,
            weight=i.weight,
            latest=state.indicators[i.name].latest if i.name in state.indicators else None,
        )
        for i in terms.indicators
    }
    return state.model_copy(update={"effective_agreement": terms, "milestones": milestones, "indicators": indicators})


def evolve_case(state: CaseState, event: Event) -> CaseState:
    """Apply one stored fact; no validation, since events record what already happened."""
    match event:
        case CaseOpened():
            return CaseState(
                phase=Phase.PREPARATION,
                project_id=event.project_id,
                function_id=event.function_id,
                society_id=event.society_id,
                society_name=event.society_name,
                department=event.department,
                jurisdiction=event.jurisdiction,
                title=event.title,
                category=event.category,
            )
        case PlanDrafted():
            plan = PlanVersion(version=event.version, content=event.content, goals=list(event.goals))
            return state.model_copy(update={"plans": {**state.plans, event.version: plan}})
        case PlanSubmitted():
            return _with_plan(state, event.version, status=PlanStatus.SUBMITTED)
        case PlanApproved():
            return _with_plan(state, event.version, status=PlanStatus.APPROVED, note=event.note)
        case PlanReturned():
            return _with_plan(state, event.version, status=PlanStatus.RETURNED, reasons=list(event.reasons))
        case LeaderAppointed():
            leader = Leader(
                person_name=event.person_name, rank=event.rank, board_resolution_ref=event.board_resolution_ref
            )
            return state.model_copy(update={"leader": leader})
        case MajorMatterDecided():
            matter = MajorMatter(matter=event.matter, board_resolution_ref=event.board_resolution_ref)
            return state.model_copy(update={"major_matters": [*state.major_matters, matter]})
        case TeamMemberAdded():
            member = TeamMember(
                member_id=event.member_id, name=event.name, party=event.party, role_in_team=event.role_in_team
            )
            return state.model_copy(update={"team": {**state.team, event.member_id: member}})
        case TeamMemberRemoved():
            return state.model_copy(update={"team": {k: v for k, v in state.team.items() if k != event.member_id}})
        case AgreementDrafted():
            return state.model_copy(update={"agreement_draft": event, "signatures": []})
        case AgreementSigned():
            if state.agreement_draft is None or state.agreement_draft.version != event.version:
                return state
            return state.model_copy(update={"signatures": [*state.signatures, event.party]})
        case AgreementTookEffect():
            if state.agreement_draft is None or state.agreement_draft.version != event.version:
                return state
            return _in_force(state, state.agreement_draft)
        case PhaseChanged():
            suspended_from = event.from_phase if event.to_phase is Phase.SUSPENDED else None
            return state.model_copy(update={"phase": event.to_phase, "suspended_from": suspended_from})
        case MilestoneReported():
            m = state.milestones.get(event.milestone_id)
            if m is None:
                return state
            m = m.model_copy(update={"progress": event.status, "evidence": list(event.evidence)})
            return state.model_copy(update={"milestones": {**state.milestones, m.milestone_id: m}})
        case IndicatorMeasured():
            i = state.indicators.get(event.name)
            if i is None:
                return state
            i = i.model_copy(update={"latest": Measurement(value=event.value, period=event.period)})
            return state.model_copy(update={"indicators": {**state.indicators, i.name: i}})
        case GovernmentFeedbackGiven():
            return state.model_copy(update={"feedback": [*state.feedback, event]})
        case SupervisionMeetingHeld():
            return state.model_copy(update={"meetings": {**state.meetings, event.meeting_id: event}})
        case MilestoneOverdue():
            m = state.milestones.get(event.milestone_id)
            if m is None:
                return state
            m = m.model_copy(update={"overdue": True})
            return state.model_copy(update={"milestones": {**state.milestones, m.milestone_id: m}})
        case RectificationOverdue():
            return _with_rectification(state, event.rectification_id, overdue=True)
        case ProjectCommended():
            return _decided(state, DecisionKind.COMMENDED, event.basis, event.note)
        case RectificationOrdered():
            r = Rectification(
                rectification_id=event.rectification_id,
                required_actions=list(event.required_actions),
                deadline=event.deadline,
                basis=event.basis,
            )
            state = state.model_copy(update={"rectifications": {**state.rectifications, r.rectification_id: r}})
            return _decided(state, DecisionKind.RECTIFICATION_ORDERED, event.basis, event.rectification_id)
        case RectificationReported():
            return _with_rectification(
                state,
                event.rectification_id,
                status=RectificationStatus.REPORTED,
                actions_taken=list(event.actions_taken),
                evidence=list(event.evidence),
            )
        case RectificationAccepted():
            state = _with_rectification(state, event.rectification_id, status=RectificationStatus.ACCEPTED)
            return _decided(state, DecisionKind.RECTIFICATION_ACCEPTED, event.basis, event.rectification_id)
        case RectificationRejected():
            state = _with_rectification(
                state,
                event.rectification_id,
                status=RectificationStatus.REJECTED,
                rejection_reasons=list(event.reasons),
            )
            return _decided(state, DecisionKind.RECTIFICATION_REJECTED, event.basis, event.rectification_id)
        case WarningIssued():
            return _decided(state, DecisionKind.WARNING, event.basis, event.text)
        case ProjectTerminated():
            return _decided(
                state, DecisionKind.TERMINATED, event.basis, event.reason, phase=Phase.TERMINATED, suspended_from=None
            )
        case FundingAdjusted():
            return _decided(
                state,
                DecisionKind.FUNDING_ADJUSTED,
                event.basis,
                f"{event.delta_fen:+d} fen",
                adjusted_fen=state.adjusted_fen + event.delta_fen,
            )
        case AwardGranted():
            return _decided(
                state,
                DecisionKind.AWARD_GRANTED,
                event.basis,
                f"{event.amount_fen} fen",
                awarded_fen=state.awarded_fen + event.amount_fen,
            )
        case SelfEvaluationSubmitted():
            return state.model_copy(update={"self_evaluation": event})
        case EvaluatorCommissioned():
            return state.model_copy(update={"evaluator_org": event.evaluator_org})
        case ThirdPartyEvaluationSubmitted():
            return state.model_copy(update={"third_party_evaluations": [*state.third_party_evaluations, event]})
        case FinanceEvaluationSubmitted():
            return state.model_copy(update={"finance_evaluations": [*state.finance_evaluations, event]})
        case SatisfactionSurveyed():
            count = SatisfactionCount(respondents=event.respondents, satisfied=event.satisfied)
            return state.model_copy(update={"satisfaction": {**state.satisfaction, event.respondent_group: count}})
        case EvaluationCompleted():
            return state.model_copy(update={"evaluation": event})
        case SummaryReportSubmitted():
            return state.model_copy(update={"summary_report": event})
        case TypicalCaseDesignated():
            return state.model_copy(update={"typical_case": event})
        case FundingAllocated():
            return state.model_copy(update={"allocated_fen": state.allocated_fen + event.amount_fen})
        case FundingDisbursed():
            return state.model_copy(update={"disbursed_fen": state.disbursed_fen + event.amount_fen})
    return state


# ---------------------------------------------------------------------------------------
# 3. Read-outs: deadlines, satisfaction, the funding ledger
# ---------------------------------------------------------------------------------------


class DueItem(BaseModel):
    """An open deadline the deadline processor watches."""

    model_config = _FROZEN

    kind: DueKind
    item_id: str
    due_date: str


def due_items(state: CaseState) -> list[DueItem]:
    """Open milestones (not done, not yet overdue) and open rectifications, earliest first."""
    if state.phase is None or state.phase in ENDED_PHASES:
        return []
    items = [
        DueItem(kind=DueKind.MILESTONE, item_id=m.milestone_id, due_date=m.due_date)
        for m in state.milestones.values()
        if m.progress is not MilestoneProgress.DONE and not m.overdue
    ]
    items += [
        DueItem(kind=DueKind.RECTIFICATION, item_id=r.rectification_id, due_date=r.deadline)
        for r in state.rectifications.values()
        if r.status in (RectificationStatus.ORDERED, RectificationStatus.REJECTED) and not r.overdue
    ]
    return sorted(items, key=lambda i: (i.due_date, i.kind.value, i.item_id))


_CTX: Final = Context(prec=28, rounding=ROUND_HALF_EVEN)
_CENT: Final = Decimal("0.01")


def _round(value: Decimal) -> Decimal:
    return value.quantize(_CENT, rounding=ROUND_HALF_EVEN, context=_CTX)


def satisfaction_rate(state: CaseState) -> dict[RespondentGroup, Decimal]:
    """Percent satisfied per surveyed group: round(100 × satisfied / respondents, 2), half to even."""
    return {
        group: _round(_CTX.divide(Decimal(100 * count.satisfied), Decimal(count.respondents)))
        for group in RespondentGroup
        if (count := state.satisfaction.get(group)) is not None
    }


class Ledger(BaseModel):
    """The project's money in fen; ``balance = allocated + adjusted + awarded - disbursed`` always."""

    model_config = _FROZEN

    allocated: int
    adjusted: int
    awarded: int
    disbursed: int
    balance: int


def ledger(state: CaseState) -> Ledger:
    """The funding ledger (in fen) as the case's events leave it."""
    return Ledger(
        allocated=state.allocated_fen,
        adjusted=state.adjusted_fen,
        awarded=state.awarded_fen,
        disbursed=state.disbursed_fen,
        balance=state.allocated_fen + state.adjusted_fen + state.awarded_fen - state.disbursed_fen,
    )


# ---------------------------------------------------------------------------------------
# 4. The scoring method
# ---------------------------------------------------------------------------------------

SCORING_METHOD: Final = "performance-score-v1"
"""The name recorded with every evaluation; a change to ``performance_score`` is a new name."""

GRADE_BANDS: Final[tuple[tuple[Decimal, Grade], ...]] = (
    (Decimal(90), Grade.EXCELLENT),
    (Decimal(75), Grade.GOOD),
    (Decimal(60), Grade.PASS),
)


def grade_for(score: Decimal) -> Grade:
    """The grade of a (rounded) score: excellent ≥ 90, good ≥ 75, pass ≥ 60, else fail."""
    for least, grade in GRADE_BANDS:
        if score >= least:
            return grade
    return Grade.FAIL


def evaluation_inputs(state: CaseState) -> list[IndicatorInput]:
    """The indicators of the agreement in force, each with its latest measurement, in agreement order."""
    return [
        IndicatorInput(
            name=i.name,
            target=i.target,
            weight=i.weight,
            value=i.latest.value if i.latest is not None else None,
            period=i.latest.period if i.latest is not None else None,
        )
        for i in state.indicators.values()
    ]


def performance_score(inputs: list[IndicatorInput]) -> Decimal:
    """Score a project by method ``performance-score-v1`` (绩效评价).

    Inputs: the indicators of the task agreement in force — each with a target t > 0 and a
    weight w, the weights summing to exactly 100 — and, for each, its latest measured value
    v (the last ``IndicatorMeasured`` for that name, whatever its period; v ≥ 0).

    1. achievement a = min(v / t, 1) for a measured indicator; a = 0 if it was never measured.
    2. score = 100 × Σ(w × a) / 100, which is Σ(w × a) because the weights sum to 100.
       All arithmetic is decimal with 28 significant digits; nothing is rounded until the
       end, where the score is rounded once to 2 decimals, half to even (ROUND_HALF_EVEN).
    3. The grade follows from the rounded score (``grade_for``): excellent ≥ 90,
       good ≥ 75, pass ≥ 60, fail < 60.

    Example: weights 50, 30, 20; targets 200, 10, 3; latest values 180, 12, none →
    a = 0.9, 1 (capped), 0 → score = 45 + 30 + 0 = 75.00, grade good. A total of exactly
    80.125 rounds to 80.12 (half to even), not 80.13.
    """
    total = Decimal(0)
    for i in inputs:
        achievement = Decimal(0) if i.value is None else min(_CTX.divide(i.value, i.target), Decimal(1))
        total = _CTX.add(total, _CTX.multiply(i.weight, achievement))
    return _round(total)


# ---------------------------------------------------------------------------------------
# 5. Commands and decide
# ---------------------------------------------------------------------------------------


class CaseCommand(Command):
    """A command addressed to one case's stream."""

    project_id: str


class OpenCase(CaseCommand):
    """A policy opens the case when the registry assigns the function to a society."""

    function_id: str
    society_id: str
    society_name: str
    department: str
    jurisdiction: str
    title: str
    category: Category

    @field_validator("jurisdiction")
    @classmethod
    def _valid_jurisdiction(cls, value: str) -> str:
        return jurisdictions.validate(value)


class DraftPlan(CaseCommand):
    """The society drafts the next version of its implementation plan."""

    content: str
    goals: list[str] = Field(default_factory=list)


class SubmitPlan(CaseCommand):
    version: int


class ApprovePlan(CaseCommand):
    version: int
    note: str = ""


class ReturnPlan(CaseCommand):
    version: int
    reasons: list[str]


class AppointLeader(CaseCommand):
    person_name: str
    rank: LeaderRank
    board_resolution_ref: str


class DecideMajorMatter(CaseCommand):
    matter: str
    board_resolution_ref: str


class AddTeamMember(CaseCommand):
    """A party adds one of its own people: ``party`` must be the issuer's own."""

    member_id: str
    name: str
    party: Party
    role_in_team: str


class RemoveTeamMember(CaseCommand):
    member_id: str
    reason: str = ""


class DraftAgreement(CaseCommand):
    """The association or the owning department drafts the next version of the task agreement."""

    rights_and_obligations: str
    cooperation_mode: str
    goals: list[str] = Field(default_factory=list)
    key_tasks: list[str] = Field(default_factory=list)
    milestones: list[Milestone] = Field(default_factory=list)
    quality_requirements: list[str] = Field(default_factory=list)
    indicators: list[Indicator]
    funding: list[FundingSource] = Field(default_factory=list)


class SignAgreement(CaseCommand):
    """The issuer signs ``version`` for its own party."""

    version: int


class StartDeployment(CaseCommand):
    basis: str = ""


class StartImplementation(CaseCommand):
    basis: str = ""


class StartSummary(CaseCommand):
    basis: str = ""


class CloseCase(CaseCommand):
    basis: str = ""


class SuspendCase(CaseCommand):
    basis: str


class ResumeCase(CaseCommand):
    basis: str = ""


class ReportMilestone(CaseCommand):
    milestone_id: str
    status: MilestoneProgress
    evidence: list[str] = Field(default_factory=list)


class MeasureIndicator(CaseCommand):
    name: str
    value: Decimal
    period: str


class GiveGovernmentFeedback(CaseCommand):
    opinions: list[str]


class HoldSupervisionMeeting(CaseCommand):
    meeting_id: str
    held_on: str
    attendees: list[str] = Field(default_factory=list)
    progress: str = ""
    stage_goals: list[str] = Field(default_factory=list)
    next_priorities: list[str] = Field(default_factory=list)
    issues_to_coordinate: list[str] = Field(default_factory=list)


class MarkMilestoneOverdue(CaseCommand):
    """The deadline processor reports a milestone past its due date."""

    milestone_id: str
    detected_on: str


class MarkRectificationOverdue(CaseCommand):
    """The deadline processor reports a rectification past its deadline."""

    rectification_id: str
    detected_on: str


class CommendProject(CaseCommand):
    basis: str
    note: str = ""


class OrderRectification(CaseCommand):
    rectification_id: str
    required_actions: list[str]
    deadline: str
    basis: str


class ReportRectification(CaseCommand):
    rectification_id: str
    actions_taken: list[str]
    evidence: list[str] = Field(default_factory=list)


class AcceptRectification(CaseCommand):
    rectification_id: str
    basis: str


class RejectRectification(CaseCommand):
    rectification_id: str
    reasons: list[str]
    basis: str


class IssueWarning(CaseCommand):
    basis: str
    text: str


class TerminateProject(CaseCommand):
    basis: str
    reason: str


class AdjustFunding(CaseCommand):
    """Raise or cut the funding; each command is a new movement (retries use an Idempotency-Key)."""

    delta_fen: Fen
    basis: str


class GrantAward(CaseCommand):
    """Grant an award in place of a subsidy; each command is a new movement."""

    amount_fen: Fen
    basis: str


class AllocateFunding(CaseCommand):
    """Earmark money for the project; each command is a new movement."""

    amount_fen: Fen
    source: str
    basis: str


class DisburseFunding(CaseCommand):
    """Pay money out to the project; each command is a new movement."""

    amount_fen: Fen
    purpose: str


class SubmitSelfEvaluation(CaseCommand):
    report_ref: str
    claimed_score: Decimal


class CommissionEvaluator(CaseCommand):
    evaluator_org: str


class SubmitThirdPartyEvaluation(CaseCommand):
    """The commissioned evaluator submits its report; it is recorded under the issuer's organisation."""

    report_ref: str
    findings: list[str] = Field(default_factory=list)


class SubmitFinanceEvaluation(CaseCommand):
    kind: FinanceEvaluationKind
    report_ref: str
    findings: list[str] = Field(default_factory=list)


class SurveySatisfaction(CaseCommand):
    """Record survey counts; there is no field for a rate, which is always computed."""

    respondent_group: RespondentGroup
    respondents: int
    satisfied: int


class CompleteEvaluation(CaseCommand):
    """Compute and record the evaluation by ``SCORING_METHOD``."""


class SubmitSummaryReport(CaseCommand):
    report_ref: str
    replicable_models: list[str] = Field(default_factory=list)


class DesignateTypicalCase(CaseCommand):
    rationale: str


# --- guards ------------------------------------------------------------------------------


def _require_items(values: list[str], code: str, detail: str) -> None:
    if not values or not all(v.strip() for v in values):
        raise DomainRuleViolated(code, detail)


def _require_basis(basis: str) -> None:
    _require_text(basis, "basis_required", "a supervision decision names its legal or plan basis")


def _require_positive(amount_fen: int) -> None:
    if amount_fen <= 0:
        raise InvalidInput("invalid_amount", f"amount must be a positive number of fen, not {amount_fen}")


def _require_phase(state: CaseState, command: Command, allowed: frozenset[Phase]) -> None:
    if state.phase not in allowed:
        current = state.phase.value if state.phase is not None else "not opened"
        raise DomainRuleViolated(
            "invalid_phase",
            f"{type(command).__name__} is not allowed while the case is {current}",
            phase=current,
            command=type(command).__name__,
            allowed=sorted(p.value for p in allowed),
        )


def _require_case_department(state: CaseState, principal: Principal) -> None:
    principal.require_role(Role.DEPARTMENT)
    if principal.organisation != state.department:
        raise NotPermitted("not_case_department", f"only the owning department {state.department} may do this")


def _require_case_society(state: CaseState, principal: Principal) -> None:
    principal.require_role(Role.SOCIETY)
    if principal.organisation != state.society_id:
        raise NotPermitted("not_case_society", f"only society {state.society_id}, which runs this project, may do this")


def _party_of(state: CaseState, principal: Principal) -> Party:
    """The party the principal acts for on this case."""
    principal.require_role(Role.DEPARTMENT, Role.SOCIETY, Role.ASSOCIATION)
    if principal.role is Role.DEPARTMENT:
        _require_case_department(state, principal)
        return Party.DEPARTMENT
    if principal.role is Role.SOCIETY:
        _require_case_society(state, principal)
        return Party.SOCIETY
    return Party.ASSOCIATION


def _available_fen(state: CaseState) -> int:
    return ledger(state).balance


_PLANNING: Final = frozenset({Phase.PREPARATION})
_AGREEING: Final = frozenset({Phase.PREPARATION, Phase.DEPLOYMENT, Phase.IMPLEMENTATION})
_IMPLEMENTING: Final = frozenset({Phase.IMPLEMENTATION})
_EVALUATING: Final = frozenset({Phase.IMPLEMENTATION, Phase.SUMMARY})
_REVIEWING: Final = frozenset({Phase.IMPLEMENTATION, Phase.SUMMARY, Phase.CLOSED})
_AFTER_CLOSE: Final = OPEN_PHASES | {Phase.CLOSED}


# --- opening ------------------------------------------------------------------------------


def _open_case(state: CaseState, c: OpenCase) -> list[Event]:
    p = c.issued_by
    p.require_role(Role.SYSTEM)
    p.require_jurisdiction(c.jurisdiction)
    event = CaseOpened(
        project_id=c.project_id,
        function_id=c.function_id,
        society_id=c.society_id,
        society_name=c.society_name,
        department=c.department,
        jurisdiction=c.jurisdiction,
        title=c.title,
        category=c.category,
    )
    if state.phase is not None:
        opened = (
            state.project_id,
            state.function_id,
            state.society_id,
            state.society_name,
            state.department,
            state.jurisdiction,
            state.title,
            state.category,
        )
        if opened == (
            event.project_id,
            event.function_id,
            event.society_id,
            event.society_name,
            event.department,
            event.jurisdiction,
            event.title,
            event.category,
        ):
            return []
        raise DomainRuleViolated("case_exists", f"case {c.project_id} is already open on other terms")
    return [event]


# --- the implementation plan ------------------------------------------------------------


def _latest_plan_version(state: CaseState, c: SubmitPlan | ApprovePlan | ReturnPlan) -> PlanVersion:
    latest = state.latest_plan
    if latest is None or c.version != latest.version:
        current = latest.version if latest is not None else "none"
        raise DomainRuleViolated(
            "stale_plan_version",
            f"only the latest plan version can be submitted or reviewed; latest is {current}, not {c.version}",
            latest=current,
        )
    return latest


def _draft_plan(state: CaseState, c: DraftPlan) -> list[Event]:
    _require_case_society(state, c.issued_by)
    _require_text(c.content, "content_required", "a plan needs content")
    latest = state.latest_plan
    if (
        latest is not None
        and latest.status is not PlanStatus.RETURNED
        and (latest.content, latest.goals) == (c.content, c.goals)
    ):
        return []
    _require_phase(state, c, _PLANNING)
    if latest is not None and latest.status is PlanStatus.SUBMITTED:
        raise DomainRuleViolated(
            "plan_under_review", f"plan version {latest.version} is with the department; wait for its review"
        )
    version = latest.version + 1 if latest is not None else 1
    return [PlanDrafted(project_id=c.project_id, version=version, content=c.content, goals=list(c.goals))]


def _submit_plan(state: CaseState, c: SubmitPlan) -> list[Event]:
    _require_case_society(state, c.issued_by)
    latest = _latest_plan_version(state, c)
    if latest.status in (PlanStatus.SUBMITTED, PlanStatus.APPROVED):
        return []
    _require_phase(state, c, _PLANNING)
    if latest.status is PlanStatus.RETURNED:
        raise DomainRuleViolated("new_draft_required", f"plan version {c.version} was returned; draft a new version")
    return [PlanSubmitted(project_id=c.project_id, version=c.version)]


def _require_submitted(plan: PlanVersion) -> None:
    if plan.status is not PlanStatus.SUBMITTED:
        raise DomainRuleViolated(
            "plan_not_submitted", f"plan version {plan.version} is {plan.status.value}, not submitted"
        )


def _approve_plan(state: CaseState, c: ApprovePlan) -> list[Event]:
    _require_case_department(state, c.issued_by)
    latest = _latest_plan_version(state, c)
    if latest.status is PlanStatus.APPROVED:
        return []
    _require_phase(state, c, _PLANNING)
    _require_submitted(latest)
    return [PlanApproved(project_id=c.project_id, version=c.version, note=c.note)]


def _return_plan(state: CaseState, c: ReturnPlan) -> list[Event]:
    _require_case_department(state, c.issued_by)
    _require_items(c.reasons, "reasons_required", "a returned plan states its reasons, each non-empty")
    latest = _latest_plan_version(state, c)
    if latest.status is PlanStatus.RETURNED:
        return []
    _require_phase(state, c, _PLANNING)
    _require_submitted(latest)
    return [PlanReturned(project_id=c.project_id, version=c.version, reasons=list(c.reasons))]


# --- leader and team ----------------------------------------------------------------------


def _appoint_leader(state: CaseState, c: AppointLeader) -> list[Event]:
    _require_case_society(state, c.issued_by)
    if not rank_at_least(c.rank, MIN_LEADER_RANK):
        raise DomainRuleViolated(
            "leader_rank_too_low",
            f"the project leader must be at least {MIN_LEADER_RANK.value}; {c.rank.value} is below it",
            rank=c.rank.value,
        )
    _require_text(
        c.board_resolution_ref,
        "board_resolution_required",
        "the project leader is approved by the board or standing board: cite its resolution",
    )
    _require_text(c.person_name, "name_required", "the project leader needs a name")
    leader = Leader(person_name=c.person_name, rank=c.rank, board_resolution_ref=c.board_resolution_ref)
    if state.leader == leader:
        return []
    _require_phase(state, c, ACTIVE_PHASES)
    return [LeaderAppointed(project_id=c.project_id, **leader.model_dump())]


def _decide_major_matter(state: CaseState, c: DecideMajorMatter) -> list[Event]:
    _require_case_society(state, c.issued_by)
    _require_text(c.matter, "matter_required", "name the major matter decided")
    _require_text(
        c.board_resolution_ref,
        "board_resolution_required",
        "major matters are decided by the board or standing board: cite its resolution",
    )
    matter = MajorMatter(matter=c.matter, board_resolution_ref=c.board_resolution_ref)
    if matter in state.major_matters:
        return []
    _require_phase(state, c, ACTIVE_PHASES)
    return [MajorMatterDecided(project_id=c.project_id, **matter.model_dump())]


def _add_team_member(state: CaseState, c: AddTeamMember) -> list[Event]:
    party = _party_of(state, c.issued_by)
    if c.party is not party:
        raise NotPermitted("not_own_party", f"a {party.value} adds only its own people, not the {c.party.value}'s")
    _require_text(c.name, "name_required", "a team member needs a name")
    member = TeamMember(member_id=c.member_id, name=c.name, party=c.party, role_in_team=c.role_in_team)
    existing = state.team.get(c.member_id)
    if existing == member:
        return []
    if existing is not None:
        raise DomainRuleViolated("member_exists", f"team member {c.member_id} is already on the team")
    _require_phase(state, c, ACTIVE_PHASES)
    return [TeamMemberAdded(project_id=c.project_id, **member.model_dump())]


def _remove_team_member(state: CaseState, c: RemoveTeamMember) -> list[Event]:
    party = _party_of(state, c.issued_by)
    existing = state.team.get(c.member_id)
    if existing is None:
        return []
    if existing.party is not party:
        raise NotPermitted("not_own_party", f"a {party.value} removes only its own people")
    _require_phase(state, c, ACTIVE_PHASES)
    return [TeamMemberRemoved(project_id=c.project_id, member_id=c.member_id, reason=c.reason)]


# --- the task agreement -------------------------------------------------------------------


def _validate_terms(c: DraftAgreement) -> None:
    ids = [m.milestone_id for m in c.milestones]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise InvalidInput("duplicate_milestone", f"milestone ids repeat: {', '.join(duplicates)}", ids=duplicates)
    for m in c.milestones:
        _iso_date(m.due_date, f"due date of milestone {m.milestone_id}")
    if not c.indicators:
        raise DomainRuleViolated("indicators_required", "a task agreement has quantitative assessment indicators")
    names = [i.name for i in c.indicators]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise InvalidInput("duplicate_indicator", f"indicator names repeat: {', '.join(repeated)}", names=repeated)
    for i in c.indicators:
        if not (i.target.is_finite() and i.target > 0 and i.weight.is_finite() and i.weight > 0):
            raise InvalidInput("invalid_indicator", f"indicator {i.name} needs a target > 0 and a weight > 0")
    total = sum((i.weight for i in c.indicators), Decimal(0))
    if total != 100:
        raise DomainRuleViolated(
            "indicator_weights", f"indicator weights must sum to exactly 100, not {total}", total=str(total)
        )
    for f in c.funding:
        if f.amount_fen < 0:
            raise InvalidInput("invalid_amount", f"funding from {f.source} cannot be negative")


_TERMS: Final = (
    "rights_and_obligations",
    "cooperation_mode",
    "goals",
    "key_tasks",
    "milestones",
    "quality_requirements",
    "indicators",
    "funding",
)


def _draft_agreement(state: CaseState, c: DraftAgreement) -> list[Event]:
    p = c.issued_by
    p.require_role(Role.ASSOCIATION, Role.DEPARTMENT)
    if p.role is Role.DEPARTMENT:
        _require_case_department(state, p)
    _validate_terms(c)
    latest = state.agreement_draft
    if latest is not None and all(getattr(latest, t) == getattr(c, t) for t in _TERMS):
        return []
    _require_phase(state, c, _AGREEING)
    return [
        AgreementDrafted(
            project_id=c.project_id,
            version=latest.version + 1 if latest is not None else 1,
            is_amendment=state.effective_agreement is not None,
            **{t: getattr(c, t) for t in _TERMS},
        )
    ]


def _sign_agreement(state: CaseState, c: SignAgreement) -> list[Event]:
    party = _party_of(state, c.issued_by)
    draft = state.agreement_draft
    if draft is None or c.version != draft.version:
        latest = draft.version if draft is not None else "none"
        raise DomainRuleViolated(
            "stale_agreement_version",
            f"only the latest drafted version can be signed; latest is {latest}, not {c.version}",
            latest=latest,
        )
    if party in state.signatures:
        return []
    _require_phase(state, c, _AGREEING)
    events: list[Event] = [AgreementSigned(project_id=c.project_id, version=c.version, party=party)]
    if {*state.signatures, party} == set(Party):
        events.append(
            AgreementTookEffect(
                project_id=c.project_id,
                function_id=state.function_id,
                society_id=state.society_id,
                version=c.version,
                agreement_reference=f"{c.project_id}/v{c.version}",
                goals=list(draft.goals),
                key_tasks=list(draft.key_tasks),
                milestones=list(draft.milestones),
                indicators=list(draft.indicators),
                funding=list(draft.funding),
            )
        )
    return events


# --- phases ---------------------------------------------------------------------------------


def _changed(state: CaseState, c: CaseCommand, to: Phase, basis: str) -> list[Event]:
    assert state.phase is not None
    return [PhaseChanged(project_id=c.project_id, from_phase=state.phase, to_phase=to, basis=basis)]


def _start_deployment(state: CaseState, c: StartDeployment) -> list[Event]:
    c.issued_by.require_role(Role.ASSOCIATION)
    if state.phase is Phase.DEPLOYMENT:
        return []
    _require_phase(state, c, frozenset({Phase.PREPARATION}))
    if not state.plan_approved:
        raise DomainRuleViolated("plan_not_approved", "deployment needs an implementation plan the department approved")
    return _changed(state, c, Phase.DEPLOYMENT, c.basis)


def _start_implementation(state: CaseState, c: StartImplementation) -> list[Event]:
    c.issued_by.require_role(Role.ASSOCIATION)
    if state.phase is Phase.IMPLEMENTATION:
        return []
    _require_phase(state, c, frozenset({Phase.DEPLOYMENT}))
    if state.effective_agreement is None:
        raise DomainRuleViolated(
            "agreement_not_in_effect",
            "implementation needs a task agreement signed by the department, the society and the association",
            signatures=sorted(p.value for p in state.signatures),
        )
    if state.leader is None:
        raise DomainRuleViolated("leader_required", "implementation needs an appointed project leader")
    return _changed(state, c, Phase.IMPLEMENTATION, c.basis)


def _start_summary(state: CaseState, c: StartSummary) -> list[Event]:
    c.issued_by.require_role(Role.ASSOCIATION)
    if state.phase is Phase.SUMMARY:
        return []
    _require_phase(state, c, _IMPLEMENTING)
    return _changed(state, c, Phase.SUMMARY, c.basis)


def _close_case(state: CaseState, c: CloseCase) -> list[Event]:
    c.issued_by.require_role(Role.ASSOCIATION)
    if state.phase is Phase.CLOSED:
        return []
    _require_phase(state, c, frozenset({Phase.SUMMARY}))
    if state.summary_report is None:
        raise DomainRuleViolated("summary_report_required", "a case closes only after the summary report")
    return _changed(state, c, Phase.CLOSED, c.basis)


def _suspend_case(state: CaseState, c: SuspendCase) -> list[Event]:
    c.issued_by.require_role(Role.ASSOCIATION)
    _require_basis(c.basis)
    if state.phase is Phase.SUSPENDED:
        return []
    _require_phase(state, c, _AGREEING)
    return _changed(state, c, Phase.SUSPENDED, c.basis)


def _resume_case(state: CaseState, c: ResumeCase) -> list[Event]:
    c.issued_by.require_role(Role.ASSOCIATION)
    if state.phase in ACTIVE_PHASES:
        return []
    _require_phase(state, c, frozenset({Phase.SUSPENDED}))
    return _changed(state, c, state.suspended_from or Phase.PREPARATION, c.basis)


# --- progress -------------------------------------------------------------------------------


def _report_milestone(state: CaseState, c: ReportMilestone) -> list[Event]:
    _require_case_society(state, c.issued_by)
    if c.status is MilestoneProgress.DONE:
        _require_items(c.evidence, "evidence_required", "a milestone reported done names its evidence")
    m = state.milestones.get(c.milestone_id)
    if m is not None and (m.progress, m.evidence) == (c.status, c.evidence):
        return []
    _require_phase(state, c, _IMPLEMENTING)
    if m is None:
        raise DomainRuleViolated("unknown_milestone", f"the agreement in force has no milestone {c.milestone_id}")
    if m.progress is MilestoneProgress.DONE and c.status is MilestoneProgress.IN_PROGRESS:
        raise DomainRuleViolated("milestone_already_done", f"milestone {c.milestone_id} was reported done")
    return [
        MilestoneReported(
            project_id=c.project_id, milestone_id=c.milestone_id, status=c.status, evidence=list(c.evidence)
        )
    ]


def _measure_indicator(state: CaseState, c: MeasureIndicator) -> list[Event]:
    _require_case_society(state, c.issued_by)
    if not c.value.is_finite() or c.value < 0:
        raise InvalidInput("invalid_value", f"a measured value is a number >= 0, not {c.value}")
    _require_text(c.period, "period_required", "a measurement names the period it covers")
    i = state.indicators.get(c.name)
    if i is not None and i.latest == Measurement(value=c.value, period=c.period):
        return []
    _require_phase(state, c, _IMPLEMENTING)
    if i is None:
        raise DomainRuleViolated("unknown_indicator", f"the agreement in force has no indicator {c.name!r}")
    return [IndicatorMeasured(project_id=c.project_id, name=c.name, value=c.value, period=c.period)]


def _give_feedback(state: CaseState, c: GiveGovernmentFeedback) -> list[Event]:
    p = c.issued_by
    # The owning department gives its feedback; the policy-support departments (中央编办、发改委、
    # 民政部、财政部) are consulted on every project in their subtree, and feedback is their one command.
    p.require_role(Role.DEPARTMENT, Role.POLICY_SUPPORT)
    if p.role is Role.DEPARTMENT:
        _require_case_department(state, p)
    _require_items(c.opinions, "opinions_required", "feedback gives at least one opinion, each non-empty")
    if state.feedback and state.feedback[-1].opinions == c.opinions:
        return []
    _require_phase(state, c, _IMPLEMENTING)
    return [GovernmentFeedbackGiven(project_id=c.project_id, opinions=list(c.opinions))]


def _hold_meeting(state: CaseState, c: HoldSupervisionMeeting) -> list[Event]:
    c.issued_by.require_role(Role.ASSOCIATION)
    _iso_date(c.held_on, "held_on")
    event = SupervisionMeetingHeld(
        project_id=c.project_id,
        meeting_id=c.meeting_id,
        held_on=c.held_on,
        attendees=list(c.attendees),
        progress=c.progress,
        stage_goals=list(c.stage_goals),
        next_priorities=list(c.next_priorities),
        issues_to_coordinate=list(c.issues_to_coordinate),
    )
    existing = state.meetings.get(c.meeting_id)
    if existing == event:
        return []
    if existing is not None:
        raise DomainRuleViolated("meeting_exists", f"meeting {c.meeting_id} is already recorded")
    _require_phase(state, c, _IMPLEMENTING)
    return [event]


# --- deadlines ------------------------------------------------------------------------------


def _mark_milestone_overdue(state: CaseState, c: MarkMilestoneOverdue) -> list[Event]:
    c.issued_by.require_role(Role.SYSTEM)
    detected = _iso_date(c.detected_on, "detected_on")
    if state.phase in ENDED_PHASES:
        return []  # deadlines of an ended case no longer matter
    m = state.milestones.get(c.milestone_id)
    # The deadline processor works from a copy of the case that may lag behind it: a milestone
    # an amendment removed or moved later is not overdue, and that is no error.
    if m is None or m.progress is MilestoneProgress.DONE or m.overdue:
        return []
    if detected <= _iso_date(m.due_date, "due_date"):
        return []
    return [
        MilestoneOverdue(
            project_id=c.project_id, milestone_id=c.milestone_id, due_date=m.due_date, detected_on=c.detected_on
        )
    ]


def _mark_rectification_overdue(state: CaseState, c: MarkRectificationOverdue) -> list[Event]:
    c.issued_by.require_role(Role.SYSTEM)
    detected = _iso_date(c.detected_on, "detected_on")
    if state.phase in ENDED_PHASES:
        return []
    r = _rectification(state, c.rectification_id)
    if r.overdue or r.status in (RectificationStatus.REPORTED, RectificationStatus.ACCEPTED):
        return []
    if detected <= _iso_date(r.deadline, "deadline"):
        return []  # not (or no longer) past its deadline on the case itself
    return [
        RectificationOverdue(
            project_id=c.project_id, rectification_id=r.rectification_id, deadline=r.deadline, detected_on=c.detected_on
        )
    ]


# --- supervision decisions ------------------------------------------------------------------


def _rectification(state: CaseState, rectification_id: str) -> Rectification:
    r = state.rectifications.get(rectification_id)
    if r is None:
        raise DomainRuleViolated("unknown_rectification", f"no rectification {rectification_id} was ordered")
    return r


def _commend(state: CaseState, c: CommendProject) -> list[Event]:
    c.issued_by.require_role(Role.ASSOCIATION)
    _require_basis(c.basis)
    if Decision(kind=DecisionKind.COMMENDED, basis=c.basis, text=c.note) in state.decisions:
        return []
    _require_phase(state, c, _REVIEWING)
    return [
        ProjectCommended(
            project_id=c.project_id,
            society_id=state.society_id,
            function_id=state.function_id,
            basis=c.basis,
            note=c.note,
        )
    ]


def _order_rectification(state: CaseState, c: OrderRectification) -> list[Event]:
    c.issued_by.require_role(Role.ASSOCIATION)
    _require_basis(c.basis)
    _require_text(c.rectification_id, "rectification_id_required", "a rectification needs an id")
    _require_items(c.required_actions, "actions_required", "a rectification lists the required actions")
    _iso_date(c.deadline, "deadline")
    existing = state.rectifications.get(c.rectification_id)
    if existing is not None:
        if (existing.required_actions, existing.deadline, existing.basis) == (c.required_actions, c.deadline, c.basis):
            return []
        raise DomainRuleViolated("rectification_exists", f"rectification {c.rectification_id} was already ordered")
    _require_phase(state, c, OPEN_PHASES)
    return [
        RectificationOrdered(
            project_id=c.project_id,
            society_id=state.society_id,
            function_id=state.function_id,
            rectification_id=c.rectification_id,
            required_actions=list(c.required_actions),
            deadline=c.deadline,
            basis=c.basis,
        )
    ]


def _report_rectification(state: CaseState, c: ReportRectification) -> list[Event]:
    _require_case_society(state, c.issued_by)
    _require_items(c.actions_taken, "actions_required", "a rectification report lists the actions taken")
    r = _rectification(state, c.rectification_id)
    if r.status is RectificationStatus.ACCEPTED:
        return []
    if r.status is RectificationStatus.REPORTED:
        if (r.actions_taken, r.evidence) == (c.actions_taken, c.evidence):
            return []
        raise DomainRuleViolated(
            "rectification_under_review", f"rectification {r.rectification_id} is reported and awaits review"
        )
    _require_phase(state, c, OPEN_PHASES)
    return [
        RectificationReported(
            project_id=c.project_id,
            rectification_id=c.rectification_id,
            actions_taken=list(c.actions_taken),
            evidence=list(c.evidence),
        )
    ]


def _require_reported(r: Rectification) -> None:
    if r.status is not RectificationStatus.REPORTED:
        raise DomainRuleViolated(
            "rectification_not_reported",
            f"rectification {r.rectification_id} is {r.status.value}; only a reported one can be reviewed",
        )


def _accept_rectification(state: CaseState, c: AcceptRectification) -> list[Event]:
    c.issued_by.require_role(Role.ASSOCIATION)
    _require_basis(c.basis)
    r = _rectification(state, c.rectification_id)
    if r.status is RectificationStatus.ACCEPTED:
        return []
    _require_phase(state, c, OPEN_PHASES)
    _require_reported(r)
    return [
        RectificationAccepted(
            project_id=c.project_id,
            society_id=state.society_id,
            function_id=state.function_id,
            rectification_id=c.rectification_id,
            basis=c.basis,
        )
    ]


def _reject_rectification(state: CaseState, c: RejectRectification) -> list[Event]:
    c.issued_by.require_role(Role.ASSOCIATION)
    _require_basis(c.basis)
    _require_items(c.reasons, "reasons_required", "a rejection states its reasons, each non-empty")
    r = _rectification(state, c.rectification_id)
    if r.status is RectificationStatus.REJECTED:
        return []
    _require_phase(state, c, OPEN_PHASES)
    _require_reported(r)
    return [
        RectificationRejected(
            project_id=c.project_id, rectification_id=c.rectification_id, reasons=list(c.reasons), basis=c.basis
        )
    ]


def _issue_warning(state: CaseState, c: IssueWarning) -> list[Event]:
    c.issued_by.require_role(Role.ASSOCIATION)
    _require_basis(c.basis)
    _require_text(c.text, "text_required", "a warning says what it warns about")
    if Decision(kind=DecisionKind.WARNING, basis=c.basis, text=c.text) in state.decisions:
        return []
    _require_phase(state, c, OPEN_PHASES)
    return [WarningIssued(project_id=c.project_id, basis=c.basis, text=c.text)]


def _terminate(state: CaseState, c: TerminateProject) -> list[Event]:
    c.issued_by.require_role(Role.ASSOCIATION)
    _require_basis(c.basis)
    _require_text(c.reason, "reason_required", "a termination states its reason")
    if state.phase is Phase.TERMINATED:
        return []
    _require_phase(state, c, OPEN_PHASES)
    return [
        ProjectTerminated(
            project_id=c.project_id,
            society_id=state.society_id,
            function_id=state.function_id,
            basis=c.basis,
            reason=c.reason,
        )
    ]


# --- funding --------------------------------------------------------------------------------


def _adjust_funding(state: CaseState, c: AdjustFunding) -> list[Event]:
    c.issued_by.require_role(Role.ASSOCIATION)
    _require_basis(c.basis)
    if c.delta_fen == 0:
        raise InvalidInput("invalid_amount", "an adjustment changes the funding by a non-zero number of fen")
    _require_phase(state, c, OPEN_PHASES)
    if _available_fen(state) + c.delta_fen < 0:
        raise DomainRuleViolated(
            "funding_exceeded",
            f"a cut of {-c.delta_fen} fen would leave less than the {state.disbursed_fen} fen already disbursed",
            balance=_available_fen(state),
        )
    return [FundingAdjusted(project_id=c.project_id, delta_fen=c.delta_fen, basis=c.basis)]


def _grant_award(state: CaseState, c: GrantAward) -> list[Event]:
    c.issued_by.require_role(Role.ASSOCIATION, Role.FINANCE_BUREAU)
    _require_basis(c.basis)
    _require_positive(c.amount_fen)
    _require_phase(state, c, _AFTER_CLOSE)
    return [AwardGranted(project_id=c.project_id, amount_fen=c.amount_fen, basis=c.basis)]


def _allocate_funding(state: CaseState, c: AllocateFunding) -> list[Event]:
    c.issued_by.require_role(Role.ASSOCIATION, Role.FINANCE_BUREAU)
    _require_basis(c.basis)
    _require_positive(c.amount_fen)
    _require_text(c.source, "source_required", "an allocation names where the money comes from")
    _require_phase(state, c, OPEN_PHASES)
    return [FundingAllocated(project_id=c.project_id, amount_fen=c.amount_fen, source=c.source, basis=c.basis)]


def _disburse_funding(state: CaseState, c: DisburseFunding) -> list[Event]:
    c.issued_by.require_role(Role.FINANCE_BUREAU, Role.ASSOCIATION)
    _require_positive(c.amount_fen)
    _require_text(c.purpose, "purpose_required", "a disbursement states its purpose")
    _require_phase(state, c, _AFTER_CLOSE)
    if c.amount_fen > _available_fen(state):
        raise DomainRuleViolated(
            "funding_exceeded",
            f"{c.amount_fen} fen exceeds the {_available_fen(state)} fen available",
            balance=_available_fen(state),
        )
    return [FundingDisbursed(project_id=c.project_id, amount_fen=c.amount_fen, purpose=c.purpose)]


# --- evaluation -----------------------------------------------------------------------------


def _self_evaluate(state: CaseState, c: SubmitSelfEvaluation) -> list[Event]:
    _require_case_society(state, c.issued_by)
    if not (c.claimed_score.is_finite() and 0 <= c.claimed_score <= 100):
        raise InvalidInput("invalid_score", f"a claimed score lies in 0..100, not {c.claimed_score}")
    _require_text(c.report_ref, "report_required", "a self-evaluation cites its report")
    event = SelfEvaluationSubmitted(project_id=c.project_id, report_ref=c.report_ref, claimed_score=c.claimed_score)
    if state.self_evaluation == event:
        return []
    _require_phase(state, c, _EVALUATING)
    return [event]


def _commission_evaluator(state: CaseState, c: CommissionEvaluator) -> list[Event]:
    c.issued_by.require_role(Role.ASSOCIATION)
    _require_text(c.evaluator_org, "evaluator_required", "name the evaluator commissioned")
    if state.evaluator_org == c.evaluator_org:
        return []
    _require_phase(state, c, _EVALUATING)
    return [EvaluatorCommissioned(project_id=c.project_id, evaluator_org=c.evaluator_org)]


def _third_party_evaluation(state: CaseState, c: SubmitThirdPartyEvaluation) -> list[Event]:
    p = c.issued_by
    p.require_role(Role.EVALUATOR)
    if state.evaluator_org is None or p.organisation != state.evaluator_org:
        raise NotPermitted(
            "evaluator_not_commissioned", f"{p.organisation} was not commissioned to evaluate {state.project_id}"
        )
    _require_text(c.report_ref, "report_required", "an evaluation cites its report")
    event = ThirdPartyEvaluationSubmitted(
        project_id=c.project_id, evaluator_org=p.organisation, report_ref=c.report_ref, findings=list(c.findings)
    )
    if event in state.third_party_evaluations:
        return []
    _require_phase(state, c, _REVIEWING)
    return [event]


def _finance_evaluation(state: CaseState, c: SubmitFinanceEvaluation) -> list[Event]:
    c.issued_by.require_role(Role.FINANCE_BUREAU)
    _require_text(c.report_ref, "report_required", "an evaluation cites its report")
    event = FinanceEvaluationSubmitted(
        project_id=c.project_id, kind=c.kind, report_ref=c.report_ref, findings=list(c.findings)
    )
    if event in state.finance_evaluations:
        return []
    _require_phase(state, c, _REVIEWING)
    return [event]


def _survey_satisfaction(state: CaseState, c: SurveySatisfaction) -> list[Event]:
    c.issued_by.require_role(Role.ASSOCIATION)
    if c.respondents <= 0 or not 0 <= c.satisfied <= c.respondents:
        raise InvalidInput(
            "invalid_survey",
            f"need respondents > 0 and 0 <= satisfied <= respondents; got {c.satisfied}/{c.respondents}",
        )
    if state.satisfaction.get(c.respondent_group) == SatisfactionCount(
        respondents=c.respondents, satisfied=c.satisfied
    ):
        return []
    _require_phase(state, c, _REVIEWING)
    return [
        SatisfactionSurveyed(
            project_id=c.project_id,
            respondent_group=c.respondent_group,
            respondents=c.respondents,
            satisfied=c.satisfied,
        )
    ]


def _complete_evaluation(state: CaseState, c: CompleteEvaluation) -> list[Event]:
    c.issued_by.require_role(Role.ASSOCIATION)
    _require_phase(state, c, _REVIEWING)
    if state.effective_agreement is None:
        raise DomainRuleViolated("agreement_not_in_effect", "an evaluation measures against the agreement in force")
    inputs = evaluation_inputs(state)
    score = performance_score(inputs)
    event = EvaluationCompleted(
        project_id=c.project_id,
        society_id=state.society_id,
        function_id=state.function_id,
        score=score,
        grade=grade_for(score),
        method=SCORING_METHOD,
        inputs=inputs,
    )
    if state.evaluation == event:
        return []
    return [event]


# --- summary --------------------------------------------------------------------------------


def _submit_summary_report(state: CaseState, c: SubmitSummaryReport) -> list[Event]:
    _require_case_society(state, c.issued_by)
    _require_text(c.report_ref, "report_required", "a summary report cites its document")
    event = SummaryReportSubmitted(
        project_id=c.project_id, report_ref=c.report_ref, replicable_models=list(c.replicable_models)
    )
    if state.summary_report == event:
        return []
    _require_phase(state, c, frozenset({Phase.SUMMARY}))
    return [event]


def _designate_typical_case(state: CaseState, c: DesignateTypicalCase) -> list[Event]:
    c.issued_by.require_role(Role.ASSOCIATION)
    _require_text(c.rationale, "rationale_required", "a typical case states why others should learn from it")
    if state.typical_case is not None:
        return []
    _require_phase(state, c, frozenset({Phase.SUMMARY, Phase.CLOSED}))
    if state.summary_report is None:
        raise DomainRuleViolated("summary_report_required", "a typical case is designated after the summary report")
    return [
        TypicalCaseDesignated(
            project_id=c.project_id, society_id=state.society_id, function_id=state.function_id, rationale=c.rationale
        )
    ]


def decide_case(state: CaseState, command: Command) -> list[Event]:
    """Decide what a command on one case records; ``[]`` when its effect already holds."""
    if not isinstance(command, CaseCommand):
        raise TypeError(f"{type(command).__name__} is not a case command")
    _refuse_read_only(command.issued_by)
    if isinstance(command, OpenCase):
        return _open_case(state, command)
    if state.phase is None:
        raise NotFound("case_not_found", f"case {command.project_id} does not exist")
    if command.project_id != state.project_id:
        raise InvalidInput("project_id_mismatch", f"command for {command.project_id} applied to {state.project_id}")
    command.issued_by.require_jurisdiction(state.jurisdiction)
    match command:
        case DraftPlan():
            return _draft_plan(state, command)
        case SubmitPlan():
            return _submit_plan(state, command)
        case ApprovePlan():
            return _approve_plan(state, command)
        case ReturnPlan():
            return _return_plan(state, command)
        case AppointLeader():
            return _appoint_leader(state, command)
        case DecideMajorMatter():
            return _decide_major_matter(state, command)
        case AddTeamMember():
            return _add_team_member(state, command)
        case RemoveTeamMember():
            return _remove_team_member(state, command)
        case DraftAgreement():
            return _draft_agreement(state, command)
        case SignAgreement():
            return _sign_agreement(state, command)
        case StartDeployment():
            return _start_deployment(state, command)
        case StartImplementation():
            return _start_implementation(state, command)
        case StartSummary():
            return _start_summary(state, command)
        case CloseCase():
            return _close_case(state, command)
        case SuspendCase():
            return _suspend_case(state, command)
        case ResumeCase():
            return _resume_case(state, command)
        case ReportMilestone():
            return _report_milestone(state, command)
        case MeasureIndicator():
            return _measure_indicator(state, command)
        case GiveGovernmentFeedback():
            return _give_feedback(state, command)
        case HoldSupervisionMeeting():
            return _hold_meeting(state, command)
        case MarkMilestoneOverdue():
            return _mark_milestone_overdue(state, command)
        case MarkRectificationOverdue():
            return _mark_rectification_overdue(state, command)
        case CommendProject():
            return _commend(state, command)
        case OrderRectification():
            return _order_rectification(state, command)
        case ReportRectification():
            return _report_rectification(state, command)
        case AcceptRectification():
            return _accept_rectification(state, command)
        case RejectRectification():
            return _reject_rectification(state, command)
        case IssueWarning():
            return _issue_warning(state, command)
        case TerminateProject():
            return _terminate(state, command)
        case AdjustFunding():
            return _adjust_funding(state, command)
        case GrantAward():
            return _grant_award(state, command)
        case AllocateFunding():
            return _allocate_funding(state, command)
        case DisburseFunding():
            return _disburse_funding(state, command)
        case SubmitSelfEvaluation():
            return _self_evaluate(state, command)
        case CommissionEvaluator():
            return _commission_evaluator(state, command)
        case SubmitThirdPartyEvaluation():
            return _third_party_evaluation(state, command)
        case SubmitFinanceEvaluation():
            return _finance_evaluation(state, command)
        case SurveySatisfaction():
            return _survey_satisfaction(state, command)
        case CompleteEvaluation():
            return _complete_evaluation(state, command)
        case SubmitSummaryReport():
            return _submit_summary_report(state, command)
        case DesignateTypicalCase():
            return _designate_typical_case(state, command)
    raise TypeError(f"no decision for {type(command).__name__}")


# ---------------------------------------------------------------------------------------
# Streams: how the service stores and finds the case decider's events
# ---------------------------------------------------------------------------------------

CASE = Aggregate(
    stream_type="case",
    initial=initial_case,
    evolve=evolve_case,
    decide=decide_case,
    jurisdiction_of=lambda state, command: state.jurisdiction or command.jurisdiction,
    state_model=CaseState,
)


def case_stream(project_id: str) -> str:
    return f"case-{project_id}"
