"""Society capability (学会承接能力) and selection (遴选推荐): a decider per society, one per opened function.

Read top to bottom: vocabulary, events (the stored contract), state and ``evolve``, the
scoring method (``rank``), then commands and ``decide``. Everything here is pure: ids and
time arrive with the commands, and the society facts a ranking uses arrive as snapshots.

The society stream holds what the association knows of one society: registration and its
reconfirmation (重新确认登记), governance (理事会, 秘书处, 监事会), decoupling (脱钩) along five
lines, the survey of willingness, capability assessments against the three standards
(综合实力、管理质量、服务水平), classified management (分类管理), brand status (品牌学会) and
its track record. The selection stream holds one round of selection for an opened
function: applications, rankings computed by ``SCORING_METHOD`` and the recommendation.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Context, Decimal
from enum import StrEnum
from typing import ClassVar, Final, Protocol

from pydantic import BaseModel, ConfigDict, Field, field_validator

from services.registry.domain import Category, EntrustmentMode, Threshold
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


class SocietyLevel(StrEnum):
    """The level a society belongs to (全国学会, 省级学会, 市级学会)."""

    NATIONAL = "national"
    PROVINCIAL = "provincial"
    CITY = "city"


class Relation(StrEnum):
    """How a society relates to its association."""

    SUPERVISED = "supervised"  # 主管学会
    GROUP_MEMBER = "group_member"  # 团体会员


class SocietyStatus(StrEnum):
    ACTIVE = "active"
    MERGED = "merged"
    DISSOLVED = "dissolved"


class DecouplingLine(StrEnum):
    """The five lines of decoupling from administrative organs (脱钩)."""

    INSTITUTION = "institution"  # 机构
    FUNCTIONS = "functions"  # 职能
    ASSETS_FINANCE = "assets_finance"  # 资产财务
    PERSONNEL = "personnel"  # 人员管理
    PARTY_BUILDING_FOREIGN_AFFAIRS = "party_building_foreign_affairs"  # 党建外事


class DecouplingStatus(StrEnum):
    NOT_STARTED = "not_started"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"


_DECOUPLING_ORDER: Final[dict[DecouplingStatus, int]] = {
    DecouplingStatus.NOT_STARTED: 0,
    DecouplingStatus.IN_PROGRESS: 1,
    DecouplingStatus.COMPLETED: 2,
}


class Willingness(StrEnum):
    """How willing the society says it is to undertake functions."""

    VERY_WILLING = "very_willing"
    WILLING = "willing"
    UNWILLING = "unwilling"


class SelfAssessment(StrEnum):
    """The society's own view of its capacity."""

    FULLY_CAPABLE = "fully_capable"
    PARTLY_CAPABLE = "partly_capable"
    NOT_CAPABLE = "not_capable"


class Standard(StrEnum):
    """The three performance-capacity standards."""

    COMPREHENSIVE_STRENGTH = "comprehensive_strength"  # 综合实力
    MANAGEMENT_QUALITY = "management_quality"  # 管理质量
    SERVICE_LEVEL = "service_level"  # 服务水平


class EvaluationGrade(StrEnum):
    """A social-organisation evaluation grade; 3A < 4A < 5A."""

    A3 = "3A"
    A4 = "4A"
    A5 = "5A"


_GRADE_ORDER: Final[dict[EvaluationGrade, int]] = {EvaluationGrade.A3: 3, EvaluationGrade.A4: 4, EvaluationGrade.A5: 5}


class SocietyClass(StrEnum):
    """Classified management (分类管理)."""

    STRENGTHEN = "strengthen"  # 固强
    NEWLY_ESTABLISH = "newly_establish"  # 新建
    STABILISE = "stabilise"  # 稳定
    EXIT = "exit"  # 退出


class ProjectOutcome(StrEnum):
    """An outcome of supervising or evaluating one of the society's projects."""

    EXCELLENT = "excellent"
    GOOD = "good"
    PASS = "pass"
    FAIL = "fail"
    COMMENDED = "commended"  # shown as an example (示范)
    RECTIFICATION_ORDERED = "rectification_ordered"  # 整改
    RECTIFICATION_ACCEPTED = "rectification_accepted"
    TERMINATED = "terminated"


class SelectionStatus(StrEnum):
    OPEN = "open"
    CLOSED = "closed"


_FROZEN = ConfigDict(frozen=True, extra="forbid")


class Governance(BaseModel):
    """One full snapshot of a society's governance."""

    model_config = _FROZEN

    has_board: bool  # 理事会
    has_secretariat: bool  # 秘书处
    has_supervisory_board: bool  # 监事会
    secretariat_real_entity: bool  # 秘书处实体化
    professional_secretary_general: bool  # 秘书长职业化
    full_time_staff: int = Field(ge=0)


class SocietySnapshot(BaseModel):
    """The facts of one society that a ranking uses, frozen into the ranking event."""

    model_config = _FROZEN

    society_id: str
    name: str
    status: SocietyStatus
    jurisdiction: str
    society_class: SocietyClass | None = None
    brand: bool = False
    scores: dict[Standard, float] | None = None
    assessment_id: str | None = None
    evaluation_grade: EvaluationGrade | None = None
    governance_recorded: bool = False
    has_board: bool = False
    has_secretariat: bool = False
    has_supervisory_board: bool = False
    secretariat_real_entity: bool = False
    professional_secretary_general: bool = False
    full_time_staff: int = Field(default=0, ge=0)
    decoupling: dict[DecouplingLine, DecouplingStatus] = Field(default_factory=dict)
    willingness: Willingness | None = None
    self_assessment: SelfAssessment | None = None
    track_record: list[ProjectOutcome] = Field(default_factory=list)

    @field_validator("jurisdiction")
    @classmethod
    def _valid_jurisdiction(cls, value: str) -> str:
        return jurisdictions.validate(value)


class Exclusion(BaseModel):
    """Why one society is not ranked; a society may have several."""

    model_config = _FROZEN

    society_id: str
    code: str
    reason: str


class ScoreComponent(BaseModel):
    """One part of a candidate's score: ``weighted`` = ``raw`` × ``weight``, rounded."""

    model_config = _FROZEN

    weight: Decimal
    raw: Decimal
    weighted: Decimal
    detail: str


class CandidateScore(BaseModel):
    """A ranked society with the breakdown of its total."""

    model_config = _FROZEN

    rank: int
    society_id: str
    name: str
    brand: bool
    total: Decimal
    capability: ScoreComponent
    governance_decoupling: ScoreComponent
    track_record: ScoreComponent
    willingness: ScoreComponent

    def components(self) -> list[ScoreComponent]:
        """The four components, in the order the method names them."""
        return [self.capability, self.governance_decoupling, self.track_record, self.willingness]


# ---------------------------------------------------------------------------------------
# 1. Events
#
# These shapes ARE the storage format. Once written, an event's shape is frozen for its
# schema_version: change a shape only by bumping the version and registering an upcaster
# on EVENTS. Time and actor live in the envelope, not in the payload.
# ---------------------------------------------------------------------------------------


class SocietyRegistered(Event):
    """The association registered a society it supervises or counts as a group member."""

    event_type: ClassVar[str] = "SocietyRegistered"

    society_id: str
    name: str
    level: SocietyLevel
    jurisdiction: str
    relation: Relation
    association: str
    disciplines: list[str]
    registration_number: str
    registered_on: str
    reconfirmation_due: str


class RegistrationReconfirmed(Event):
    """The society's registration was reconfirmed (重新确认登记) until ``next_due``."""

    event_type: ClassVar[str] = "RegistrationReconfirmed"

    society_id: str
    reconfirmed_on: str
    next_due: str


class SocietyMerged(Event):
    """The society was merged into another one; final."""

    event_type: ClassVar[str] = "SocietyMerged"

    society_id: str
    into_society_id: str
    reason: str


class SocietyDissolved(Event):
    """The society was dissolved; final."""

    event_type: ClassVar[str] = "SocietyDissolved"

    society_id: str
    reason: str


class GovernanceRecorded(Event):
    """A full snapshot of the society's governance, replacing the previous one."""

    event_type: ClassVar[str] = "GovernanceRecorded"

    society_id: str
    has_board: bool
    has_secretariat: bool
    has_supervisory_board: bool
    secretariat_real_entity: bool
    professional_secretary_general: bool
    full_time_staff: int = Field(ge=0)


class DecouplingProgressed(Event):
    """One line of decoupling (脱钩) reached a new status."""

    event_type: ClassVar[str] = "DecouplingProgressed"

    society_id: str
    line: DecouplingLine
    status: DecouplingStatus
    note: str


class SurveyAnswered(Event):
    """The society answered the survey of willingness and self-assessed capacity."""

    event_type: ClassVar[str] = "SurveyAnswered"

    society_id: str
    willingness: Willingness
    self_assessment: SelfAssessment
    preferred_modes: list[EntrustmentMode]
    survey_reference: str


class CapabilityAssessed(Event):
    """An assessment against the three standards; never edited, only superseded."""

    event_type: ClassVar[str] = "CapabilityAssessed"

    society_id: str
    assessment_id: str
    assessor_org: str
    assessor_role: Role
    scores: dict[Standard, float]
    evidence: list[str]
    evaluation_grade: EvaluationGrade | None
    supersedes: str | None
    reason: str


class SocietyClassified(Event):
    """The association put the society in a class of classified management."""

    event_type: ClassVar[str] = "SocietyClassified"

    society_id: str
    society_class: SocietyClass
    rationale: str


class BrandSocietyDesignated(Event):
    """The society was singled out as a brand society (品牌学会)."""

    event_type: ClassVar[str] = "BrandSocietyDesignated"

    society_id: str
    rationale: str


class BrandSocietyRevoked(Event):
    """The society is no longer a brand society."""

    event_type: ClassVar[str] = "BrandSocietyRevoked"

    society_id: str
    rationale: str


class TrackRecordNoted(Event):
    """An outcome of one of the society's projects, learnt from supervision."""

    event_type: ClassVar[str] = "TrackRecordNoted"

    society_id: str
    project_id: str
    function_id: str
    outcome: ProjectOutcome
    source_event_id: str


class FunctionUndertaken(Event):
    """The society was assigned a function (learnt from the registry)."""

    event_type: ClassVar[str] = "FunctionUndertaken"

    society_id: str
    function_id: str


class SelectionOpened(Event):
    """A function opened for undertaking; selection among applicants begins."""

    event_type: ClassVar[str] = "SelectionOpened"

    function_id: str
    jurisdiction: str
    title: str
    category: Category
    qualification_conditions: list[str]
    thresholds: list[Threshold]
    min_applicants: int = Field(ge=1)
    application_deadline: str | None


class ApplicationSubmitted(Event):
    """A society applied to undertake the function."""

    event_type: ClassVar[str] = "ApplicationSubmitted"

    function_id: str
    society_id: str
    statement: str


class ApplicationWithdrawn(Event):
    """A society withdrew its application."""

    event_type: ClassVar[str] = "ApplicationWithdrawn"

    function_id: str
    society_id: str
    reason: str


class RankingComputed(Event):
    """The applicants ranked by ``method``, with every input, so anyone can recompute it."""

    event_type: ClassVar[str] = "RankingComputed"

    function_id: str
    method: str
    candidates: list[CandidateScore]
    exclusions: list[Exclusion]
    manual_checks: list[str]
    eligible_count: int
    min_applicants: int
    insufficient_competition: bool
    inputs: list[SocietySnapshot]


class SocietiesRecommended(Event):
    """The association recommended these societies, from ranking ``ranking_version``."""

    event_type: ClassVar[str] = "SocietiesRecommended"

    function_id: str
    society_ids: list[str]
    ranking_version: int
    justification: str


class SelectionClosed(Event):
    """Selection ended: the function was assigned, withdrawn or otherwise left open no more."""

    event_type: ClassVar[str] = "SelectionClosed"

    function_id: str
    reason: str


_SOCIETY_EVENT_TYPES: Final[tuple[type[Event], ...]] = (
    SocietyRegistered,
    RegistrationReconfirmed,
    SocietyMerged,
    SocietyDissolved,
    GovernanceRecorded,
    DecouplingProgressed,
    SurveyAnswered,
    CapabilityAssessed,
    SocietyClassified,
    BrandSocietyDesignated,
    BrandSocietyRevoked,
    TrackRecordNoted,
    FunctionUndertaken,
)
_SELECTION_EVENT_TYPES: Final[tuple[type[Event], ...]] = (
    SelectionOpened,
    ApplicationSubmitted,
    ApplicationWithdrawn,
    RankingComputed,
    SocietiesRecommended,
    SelectionClosed,
)

SOCIETY_EVENTS = EventRegistry(*_SOCIETY_EVENT_TYPES)
"""Event types of a society stream."""
SELECTION_EVENTS = EventRegistry(*_SELECTION_EVENT_TYPES)
"""Event types of a selection stream."""
EVENTS = EventRegistry(*_SOCIETY_EVENT_TYPES, *_SELECTION_EVENT_TYPES)
"""Every event type of the capability service, for decoding stored events."""


# ---------------------------------------------------------------------------------------
# 2. State and evolve
# ---------------------------------------------------------------------------------------


class AssessmentRecord(BaseModel):
    """One assessment as recorded; ``superseded_by`` flags a corrected one."""

    model_config = _FROZEN

    assessment_id: str
    assessor_org: str
    assessor_role: Role
    scores: dict[Standard, float]
    evidence: list[str]
    evaluation_grade: EvaluationGrade | None
    supersedes: str | None
    reason: str
    superseded_by: str | None = None
    sequence: int = 0
    """1 for the society's first assessment, 2 for the next: the order they were recorded in."""


class SurveyAnswer(BaseModel):
    """The latest survey answer of a society."""

    model_config = _FROZEN

    willingness: Willingness
    self_assessment: SelfAssessment
    preferred_modes: list[EntrustmentMode]
    survey_reference: str


class TrackRecordEntry(BaseModel):
    model_config = _FROZEN

    project_id: str
    function_id: str
    outcome: ProjectOutcome
    source_event_id: str


class SocietyState(BaseModel):
    """What the decider knows about one society; ``status=None``: not registered."""

    model_config = _FROZEN

    status: SocietyStatus | None = None
    registration: SocietyRegistered | None = None
    society_id: str = ""
    name: str = ""
    level: SocietyLevel | None = None
    jurisdiction: str = ""
    relation: Relation | None = None
    association: str = ""
    disciplines: list[str] = Field(default_factory=list)
    registration_number: str = ""
    registered_on: str = ""
    reconfirmation_due: str = ""
    last_reconfirmed_on: str | None = None
    merged_into: str | None = None
    end_reason: str | None = None
    governance: Governance | None = None
    decoupling: dict[DecouplingLine, DecouplingStatus] = Field(default_factory=dict)
    survey: SurveyAnswer | None = None
    # insertion order is the order recorded
    assessments: dict[str, AssessmentRecord] = Field(default_factory=dict)
    society_class: SocietyClass | None = None
    brand: bool = False
    track_record: list[TrackRecordEntry] = Field(default_factory=list)
    functions_undertaken: list[str] = Field(default_factory=list)

    def current_assessment(self) -> AssessmentRecord | None:
        """The latest recorded assessment that no later one supersedes.

        Chosen by ``sequence``, not by dict order: stored state goes through jsonb, which
        does not keep key order.
        """
        current = [r for r in self.assessments.values() if r.superseded_by is None]
        return max(current, key=lambda r: r.sequence) if current else None


def initial_society() -> SocietyState:
    """The state of a society stream before its first event."""
    return SocietyState()


def evolve_society(state: SocietyState, event: Event) -> SocietyState:
    """Apply one stored fact; no validation, since events record what already happened."""
    match event:
        case SocietyRegistered():
            return SocietyState(
                status=SocietyStatus.ACTIVE,
                registration=event,
                society_id=event.society_id,
                name=event.name,
                level=event.level,
                jurisdiction=event.jurisdiction,
                relation=event.relation,
                association=event.association,
                disciplines=list(event.disciplines),
                registration_number=event.registration_number,
                registered_on=event.registered_on,
                reconfirmation_due=event.reconfirmation_due,
            )
        case RegistrationReconfirmed():
            return state.model_copy(
                update={"last_reconfirmed_on": event.reconfirmed_on, "reconfirmation_due": event.next_due}
            )
        case SocietyMerged():
            return state.model_copy(
                update={
                    "status": SocietyStatus.MERGED,
                    "merged_into": event.into_society_id,
                    "end_reason": event.reason,
                }
            )
        case SocietyDissolved():
            return state.model_copy(update={"status": SocietyStatus.DISSOLVED, "end_reason": event.reason})
        case GovernanceRecorded():
            governance = Governance(
                has_board=event.has_board,
                has_secretariat=event.has_secretariat,
                has_supervisory_board=event.has_supervisory_board,
                secretariat_real_entity=event.secretariat_real_entity,
                professional_secretary_general=event.professional_secretary_general,
                full_time_staff=event.full_time_staff,
            )
            return state.model_copy(update={"governance": governance})
        case DecouplingProgressed():
            return state.model_copy(update={"decoupling": {**state.decoupling, event.line: event.status}})
        case SurveyAnswered():
            survey = SurveyAnswer(
                willingness=event.willingness,
                self_assessment=event.self_assessment,
                preferred_modes=list(event.preferred_modes),
                survey_reference=event.survey_reference,
            )
            return state.model_copy(update={"survey": survey})
        case CapabilityAssessed():
            assessments = dict(state.assessments)
            earlier = assessments.get(event.supersedes) if event.supersedes is not None else None
            if earlier is not None:
                assessments[earlier.assessment_id] = earlier.model_copy(update={"superseded_by": event.assessment_id})
            assessments[event.assessment_id] = AssessmentRecord(
                assessment_id=event.assessment_id,
                assessor_org=event.assessor_org,
                assessor_role=event.assessor_role,
                scores=dict(event.scores),
                evidence=list(event.evidence),
                evaluation_grade=event.evaluation_grade,
                supersedes=event.supersedes,
                reason=event.reason,
                sequence=len(state.assessments) + 1,
            )
            return state.model_copy(update={"assessments": assessments})
        case SocietyClassified():
            return state.model_copy(update={"society_class": event.society_class})
        case BrandSocietyDesignated():
            return state.model_copy(update={"brand": True})
        case BrandSocietyRevoked():
            return state.model_copy(update={"brand": False})
        case TrackRecordNoted():
            entry = TrackRecordEntry(
                project_id=event.project_id,
                function_id=event.function_id,
                outcome=event.outcome,
                source_event_id=event.source_event_id,
            )
            return state.model_copy(update={"track_record": [*state.track_record, entry]})
        case FunctionUndertaken():
            return state.model_copy(update={"functions_undertaken": [*state.functions_undertaken, event.function_id]})
    return state


class SelectionState(BaseModel):
    """One function's selection round; ``status=None``: never opened."""

    model_config = _FROZEN

    status: SelectionStatus | None = None
    function_id: str = ""
    jurisdiction: str = ""
    title: str = ""
    category: Category | None = None
    qualification_conditions: list[str] = Field(default_factory=list)
    thresholds: list[Threshold] = Field(default_factory=list)
    min_applicants: int = 1
    application_deadline: str | None = None
    applicants: list[str] = Field(default_factory=list)
    ranking_version: int = 0
    ranking: RankingComputed | None = None
    applications_changed_since_ranking: bool = False
    recommended: list[str] = Field(default_factory=list)
    recommended_ranking_version: int | None = None
    close_reason: str | None = None


def initial_selection() -> SelectionState:
    """The state of a selection stream before its first event."""
    return SelectionState()


def evolve_selection(state: SelectionState, event: Event) -> SelectionState:
    """Apply one stored fact of a selection round."""
    match event:
        case SelectionOpened():
            # a re-opened function starts a new round; ranking versions keep counting
            return SelectionState(
                status=SelectionStatus.OPEN,
                function_id=event.function_id,
                jurisdiction=event.jurisdiction,
                title=event.title,
                category=event.category,
                qualification_conditions=list(event.qualification_conditions),
                thresholds=list(event.thresholds),
                min_applicants=event.min_applicants,
                application_deadline=event.application_deadline,
                ranking_version=state.ranking_version,
            )
        case ApplicationSubmitted():
            return state.model_copy(
                update={
                    "applicants": [*state.applicants, event.society_id],
                    "applications_changed_since_ranking": True,
                }
            )
        case ApplicationWithdrawn():
            return state.model_copy(
                update={
                    "applicants": [s for s in state.applicants if s != event.society_id],
                    "applications_changed_since_ranking": True,
                }
            )
        case RankingComputed():
            return state.model_copy(
                update={
                    "ranking_version": state.ranking_version + 1,
                    "ranking": event,
                    "applications_changed_since_ranking": False,
                }
            )
        case SocietiesRecommended():
            return state.model_copy(
                update={"recommended": list(event.society_ids), "recommended_ranking_version": event.ranking_version}
            )
        case SelectionClosed():
            return state.model_copy(update={"status": SelectionStatus.CLOSED, "close_reason": event.reason})
    return state


# ---------------------------------------------------------------------------------------
# 3. The scoring method
# ---------------------------------------------------------------------------------------

SCORING_METHOD: Final = "capability-score-v1"
"""The name recorded with every ranking; a change to ``rank`` is a new name."""

WEIGHTS: Final[dict[str, Decimal]] = {
    "capability": Decimal("0.5"),
    "governance_decoupling": Decimal("0.2"),
    "track_record": Decimal("0.2"),
    "willingness": Decimal("0.1"),
}
TRACK_RECORD_START: Final = 60
TRACK_RECORD_POINTS: Final[dict[ProjectOutcome, int]] = {
    ProjectOutcome.EXCELLENT: 15,
    ProjectOutcome.GOOD: 8,
    ProjectOutcome.PASS: 0,
    ProjectOutcome.FAIL: -20,
    ProjectOutcome.COMMENDED: 10,
    ProjectOutcome.RECTIFICATION_ORDERED: -10,
    ProjectOutcome.RECTIFICATION_ACCEPTED: 5,
    ProjectOutcome.TERMINATED: -30,
}
WILLINGNESS_POINTS: Final[dict[Willingness | None, int]] = {
    Willingness.VERY_WILLING: 100,
    Willingness.WILLING: 70,
    Willingness.UNWILLING: 0,
    None: 50,
}
GOVERNANCE_FIELDS: Final[tuple[str, ...]] = (
    "has_board",
    "has_secretariat",
    "has_supervisory_board",
    "secretariat_real_entity",
    "professional_secretary_general",
)
KNOWN_THRESHOLDS: Final[frozenset[str]] = frozenset(
    {
        "min_comprehensive_strength",
        "min_management_quality",
        "min_service_level",
        "min_total_capability",
        "min_full_time_staff",
        "min_evaluation_grade",
        "decoupling_completed",
        "professional_secretary_general",
        "secretariat_real_entity",
    }
)
"""Threshold names ``rank`` checks by machine; any other name goes to ``manual_checks``."""

_CTX: Final = Context(prec=28, rounding=ROUND_HALF_EVEN)
_CENT: Final = Decimal("0.01")


def _round(value: Decimal) -> Decimal:
    return value.quantize(_CENT, rounding=ROUND_HALF_EVEN, context=_CTX)


def _decimal(value: float) -> Decimal:
    # the shortest decimal that reads back as the same float: what a person sees
    return Decimal(repr(float(value)))


def capability_mean(scores: dict[Standard, float]) -> Decimal:
    """The mean of the three standard scores, rounded to 2 decimals half to even."""
    total = sum((_decimal(scores[s]) for s in Standard), Decimal(0))
    return _round(_CTX.divide(total, Decimal(3)))


class OpeningFacts(Protocol):
    """What ``rank`` needs to know of the opened function (a ``SelectionOpened`` or state)."""

    @property
    def jurisdiction(self) -> str: ...

    @property
    def qualification_conditions(self) -> list[str]: ...

    @property
    def thresholds(self) -> list[Threshold]: ...

    @property
    def min_applicants(self) -> int: ...


class Ranking(BaseModel):
    """The outcome of ``rank``."""

    model_config = _FROZEN

    method: str = SCORING_METHOD
    candidates: list[CandidateScore]
    exclusions: list[Exclusion]
    manual_checks: list[str]
    eligible_count: int
    insufficient_competition: bool


@dataclass(frozen=True)
class _Check:
    """A threshold the machine can check: ``failure`` says why a society fails, else None."""

    threshold: Threshold
    needs_assessment: bool
    failure: Callable[[SocietySnapshot], str | None]


_AT_LEAST_NUMBER = re.compile(r"(?:>=\s*)?([0-9]+(?:\.[0-9]+)?)")
_AT_LEAST_WHOLE = re.compile(r"(?:>=\s*)?([0-9]{1,9})")  # a staff count, not a 5000-digit int() refuses
_AT_LEAST_GRADE = re.compile(r"(?:>=\s*)?([345]A)")
_SCORE_THRESHOLDS: Final[dict[str, Standard | None]] = {
    "min_comprehensive_strength": Standard.COMPREHENSIVE_STRENGTH,
    "min_management_quality": Standard.MANAGEMENT_QUALITY,
    "min_service_level": Standard.SERVICE_LEVEL,
    "min_total_capability": None,  # the mean of the three
}


def _not_met(t: Threshold, what: str) -> str:
    return f"threshold {t.name} ({t.requirement}) not met: {what}"


def _parse_threshold(t: Threshold) -> _Check | None:
    """The machine check for ``t``, or None when a person must check it."""
    requirement = t.requirement.strip()
    if t.name in _SCORE_THRESHOLDS:
        m = _AT_LEAST_NUMBER.fullmatch(requirement)
        if m is None or Decimal(m.group(1)) > 100:
            return None
        least = Decimal(m.group(1))
        standard = _SCORE_THRESHOLDS[t.name]

        def score_failure(s: SocietySnapshot) -> str | None:
            scores = s.scores or {}
            if standard is None:
                value, label = capability_mean(scores), "capability mean"
            else:
                value, label = _decimal(scores[standard]), standard.value
            return None if value >= least else _not_met(t, f"{label} is {value}")

        return _Check(t, True, score_failure)
    if t.name == "min_full_time_staff":
        m = _AT_LEAST_WHOLE.fullmatch(requirement)
        if m is None:
            return None
        staff = int(m.group(1))

        def staff_failure(s: SocietySnapshot) -> str | None:
            return None if s.full_time_staff >= staff else _not_met(t, f"full-time staff is {s.full_time_staff}")

        return _Check(t, False, staff_failure)
    if t.name == "min_evaluation_grade":
        m = _AT_LEAST_GRADE.fullmatch(requirement)
        if m is None:
            return None
        grade = EvaluationGrade(m.group(1))

        def grade_failure(s: SocietySnapshot) -> str | None:
            if s.evaluation_grade is not None and _GRADE_ORDER[s.evaluation_grade] >= _GRADE_ORDER[grade]:
                return None
            held = s.evaluation_grade.value if s.evaluation_grade is not None else "none"
            return _not_met(t, f"evaluation grade is {held}")

        return _Check(t, False, grade_failure)
    if t.name == "decoupling_completed":
        if requirement == "all":
            lines = list(DecouplingLine)
        else:
            names = [n.strip() for n in requirement.split(",")]
            if not names or not set(names) <= {line.value for line in DecouplingLine}:
                return None
            lines = [DecouplingLine(n) for n in names]

        def decoupling_failure(s: SocietySnapshot) -> str | None:
            open_lines = [line.value for line in lines if s.decoupling.get(line) is not DecouplingStatus.COMPLETED]
            return _not_met(t, f"not completed: {', '.join(open_lines)}") if open_lines else None

        return _Check(t, False, decoupling_failure)
    if t.name in ("professional_secretary_general", "secretariat_real_entity"):
        if requirement != "yes":
            return None
        name = t.name

        def governance_failure(s: SocietySnapshot) -> str | None:
            return None if getattr(s, name) else _not_met(t, f"{name} is no")

        return _Check(t, False, governance_failure)
    return None


def _component(name: str, raw: Decimal, detail: str) -> ScoreComponent:
    weight = WEIGHTS[name]
    return ScoreComponent(weight=weight, raw=_round(raw), weighted=_round(raw * weight), detail=detail)


def _yes_no(flag: bool) -> str:
    return "yes" if flag else "no"


def _score(s: SocietySnapshot) -> CandidateScore:
    scores = s.scores or {}
    capability = _component(
        "capability",
        capability_mean(scores),
        "mean of " + ", ".join(f"{st.value} {_decimal(scores[st])}" for st in Standard),
    )
    governance = sum(10 for f in GOVERNANCE_FIELDS if getattr(s, f))
    completed = [line.value for line in DecouplingLine if s.decoupling.get(line) is DecouplingStatus.COMPLETED]
    governance_decoupling = _component(
        "governance_decoupling",
        Decimal(governance + 10 * len(completed)),
        f"governance {governance} ("
        + ", ".join(f"{f} {_yes_no(getattr(s, f))}" for f in GOVERNANCE_FIELDS)
        + f"); decoupling {10 * len(completed)} (completed: {', '.join(completed) or 'none'})",
    )
    points = [TRACK_RECORD_POINTS[o] for o in s.track_record]
    unclamped = TRACK_RECORD_START + sum(points)
    track_record = _component(
        "track_record",
        Decimal(min(100, max(0, unclamped))),
        f"{TRACK_RECORD_START}"
        + "".join(f" {p:+d} ({o.value})" for p, o in zip(points, s.track_record, strict=True))
        + f" = {unclamped}, clamped to 0..100",
    )
    willingness = _component(
        "willingness",
        Decimal(WILLINGNESS_POINTS[s.willingness]),
        s.willingness.value if s.willingness is not None else "not answered",
    )
    parts = [capability, governance_decoupling, track_record, willingness]
    return CandidateScore(
        rank=0,
        society_id=s.society_id,
        name=s.name,
        brand=s.brand,
        total=sum((p.weighted for p in parts), Decimal(0)),
        capability=capability,
        governance_decoupling=governance_decoupling,
        track_record=track_record,
        willingness=willingness,
    )


def order_key(c: CandidateScore) -> tuple[Decimal, bool, Decimal, str]:
    """Sort key of the documented order: smaller sorts first."""
    return (-c.total, not c.brand, -c.capability.raw, c.society_id)


def rank(snapshots: Sequence[SocietySnapshot], opening: OpeningFacts) -> Ranking:
    """Rank applicants by method ``capability-score-v1`` (遴选推荐, 适度竞争).

    All arithmetic is decimal. A score given as a float is read as its shortest decimal
    form (Python ``repr``); "round" means round to 2 decimals, half to even (ROUND_HALF_EVEN).

    1. Exclusion. A society is not ranked, with one exclusion (``code``, ``reason``) for
       each reason that applies:
       - its status is not active (``not_active``);
       - its class is exit, 退出 (``class_exit``);
       - its jurisdiction is not inside the function's jurisdiction subtree
         (``outside_jurisdiction``);
       - it has no current capability assessment (``no_assessment``);
       - it fails a threshold (``threshold_not_met``, one per failed threshold; the reason
         names the threshold, its requirement and the society's value).
       Thresholds checked by machine (requirement, surrounding spaces ignored → rule):
       - ``min_comprehensive_strength``, ``min_management_quality``, ``min_service_level``:
         "N" or ">= N", N a plain decimal number 0..100 → that standard's score >= N;
       - ``min_total_capability``: the same form → the capability mean (step 2) >= N;
       - ``min_full_time_staff``: "N" or ">= N", N a whole number → full-time staff >= N
         (no governance recorded counts as 0);
       - ``min_evaluation_grade``: "3A", "4A" or "5A", optionally after ">=" → the grade
         is at least that (3A < 4A < 5A); no grade fails;
       - ``decoupling_completed``: "all", or a comma-separated list of decoupling lines →
         each of those lines is completed;
       - ``professional_secretary_general``, ``secretariat_real_entity``: "yes" → the
         recorded governance says so.
       The four score thresholds are skipped for a society without an assessment (it is
       already excluded). A threshold of any other name, or with a requirement not of the
       form above, is never ignored and never excludes anyone: it is listed in
       ``manual_checks`` for a person to verify, after every qualification condition.
    2. Score of each society not excluded: four components, each a raw value 0..100 and a
       weighted value = round(raw × weight); total = the sum of the weighted values.
       - capability, weight 0.5: raw = round(mean of the three standard scores);
       - governance and decoupling, weight 0.2: raw = 10 for each of board, secretariat,
         supervisory board, secretariat a real entity, professional secretary-general
         (at most 50) + 10 for each completed decoupling line (at most 50);
       - track record, weight 0.2: raw = 60 + the sum over every noted outcome of
         excellent +15, good +8, pass 0, fail -20, commended +10, rectification_ordered
         -10, rectification_accepted +5, terminated -30; clamped to 0..100 once, at the end;
       - willingness, weight 0.1: very_willing 100, willing 70, unwilling 0, not answered 50.
    3. Order: total descending; then brand societies (品牌学会) first; then capability raw
       descending; then society_id ascending. Ranks run 1..n in that order.
    4. insufficient_competition: fewer societies are ranked than ``min_applicants``.
    """
    checks: list[_Check] = []
    manual = [f"qualification condition: {q}" for q in opening.qualification_conditions]
    for t in opening.thresholds:
        check = _parse_threshold(t)
        if check is not None:
            checks.append(check)
        elif t.name in KNOWN_THRESHOLDS:
            manual.append(f"threshold {t.name} ({t.requirement}): requirement not understood, check by hand")
        else:
            manual.append(f"threshold {t.name} ({t.requirement}): unknown threshold, check by hand")
    candidates: list[CandidateScore] = []
    exclusions: list[Exclusion] = []
    for s in sorted(snapshots, key=lambda snap: snap.society_id):
        found: list[tuple[str, str]] = []
        if s.status is not SocietyStatus.ACTIVE:
            found.append(("not_active", f"society is {s.status.value}"))
        if s.society_class is SocietyClass.EXIT:
            found.append(("class_exit", "society is in the exit class (退出)"))
        if not jurisdictions.covers(opening.jurisdiction, s.jurisdiction):
            found.append(
                ("outside_jurisdiction", f"jurisdiction {s.jurisdiction} is outside {opening.jurisdiction}'s subtree")
            )
        if s.scores is None:
            found.append(("no_assessment", "society has no current capability assessment"))
        for check in checks:
            if check.needs_assessment and s.scores is None:
                continue
            failure = check.failure(s)
            if failure is not None:
                found.append(("threshold_not_met", failure))
        if found:
            exclusions.extend(Exclusion(society_id=s.society_id, code=code, reason=why) for code, why in found)
        else:
            candidates.append(_score(s))
    ordered = [c.model_copy(update={"rank": i}) for i, c in enumerate(sorted(candidates, key=order_key), start=1)]
    return Ranking(
        candidates=ordered,
        exclusions=exclusions,
        manual_checks=manual,
        eligible_count=len(ordered),
        insufficient_competition=len(ordered) < opening.min_applicants,
    )


def snapshot_of(state: SocietyState) -> SocietySnapshot:
    """The facts of a registered society that a ranking uses, as they stand."""
    if state.status is None:
        raise NotFound("society_not_found", "the society has not been registered")
    current = state.current_assessment()
    governance = state.governance
    return SocietySnapshot(
        society_id=state.society_id,
        name=state.name,
        status=state.status,
        jurisdiction=state.jurisdiction,
        society_class=state.society_class,
        brand=state.brand,
        scores=dict(current.scores) if current is not None else None,
        assessment_id=current.assessment_id if current is not None else None,
        evaluation_grade=current.evaluation_grade if current is not None else None,
        governance_recorded=governance is not None,
        has_board=governance is not None and governance.has_board,
        has_secretariat=governance is not None and governance.has_secretariat,
        has_supervisory_board=governance is not None and governance.has_supervisory_board,
        secretariat_real_entity=governance is not None and governance.secretariat_real_entity,
        professional_secretary_general=governance is not None and governance.professional_secretary_general,
        full_time_staff=governance.full_time_staff if governance is not None else 0,
        decoupling=dict(state.decoupling),
        willingness=state.survey.willingness if state.survey is not None else None,
        self_assessment=state.survey.self_assessment if state.survey is not None else None,
        track_record=[e.outcome for e in state.track_record],
    )


# ---------------------------------------------------------------------------------------
# 4. Commands and decide
# ---------------------------------------------------------------------------------------


class SocietyCommand(Command):
    """A command addressed to one society's stream."""

    society_id: str


class RegisterSociety(SocietyCommand):
    """The association registers a society; ``association`` must be the issuer's organisation."""

    name: str
    level: SocietyLevel
    jurisdiction: str
    relation: Relation
    association: str
    disciplines: list[str] = Field(default_factory=list)
    registration_number: str
    registered_on: str
    reconfirmation_due: str

    @field_validator("jurisdiction")
    @classmethod
    def _valid_jurisdiction(cls, value: str) -> str:
        return jurisdictions.validate(value)


class ReconfirmRegistration(SocietyCommand):
    """Record that the registration was reconfirmed (重新确认登记)."""

    reconfirmed_on: str
    next_due: str


class MergeSociety(SocietyCommand):
    into_society_id: str
    reason: str


class DissolveSociety(SocietyCommand):
    reason: str


class RecordGovernance(SocietyCommand):
    """Record the society's governance as it now stands (a full snapshot)."""

    has_board: bool
    has_secretariat: bool
    has_supervisory_board: bool
    secretariat_real_entity: bool
    professional_secretary_general: bool
    full_time_staff: int


class RecordDecoupling(SocietyCommand):
    """Record progress of one decoupling line; a line never moves backwards."""

    line: DecouplingLine
    status: DecouplingStatus
    note: str = ""


class AnswerSurvey(SocietyCommand):
    willingness: Willingness
    self_assessment: SelfAssessment
    preferred_modes: list[EntrustmentMode] = Field(default_factory=list)
    survey_reference: str = ""


class AssessCapability(SocietyCommand):
    """Assess the society against the three standards; a correction names what it supersedes."""

    assessment_id: str
    scores: dict[Standard, float]
    evidence: list[str]
    evaluation_grade: EvaluationGrade | None = None
    supersedes: str | None = None
    reason: str = ""


class ClassifySociety(SocietyCommand):
    society_class: SocietyClass
    rationale: str


class DesignateBrandSociety(SocietyCommand):
    rationale: str


class RevokeBrandSociety(SocietyCommand):
    rationale: str


class NoteTrackRecord(SocietyCommand):
    """A policy notes a supervision outcome; ``source_event_id`` makes it idempotent."""

    project_id: str
    function_id: str
    outcome: ProjectOutcome
    source_event_id: str


class NoteFunctionUndertaken(SocietyCommand):
    """A policy notes that the society was assigned a function."""

    function_id: str


def _require_active(state: SocietyState, command: Command) -> None:
    if state.status is not SocietyStatus.ACTIVE:
        current = state.status.value if state.status is not None else "not registered"
        raise DomainRuleViolated(
            "society_not_active",
            f"{type(command).__name__} needs an active society; this one is {current}",
            status=current,
        )


def _require_society_itself(principal: Principal, society_id: str) -> None:
    if principal.role is Role.SOCIETY and principal.organisation != society_id:
        raise NotPermitted("not_the_society", f"only society {society_id} itself may do this")


def _require_association_or_itself(state: SocietyState, principal: Principal) -> None:
    principal.require_role(Role.ASSOCIATION, Role.SOCIETY)
    _require_society_itself(principal, state.society_id)


def _register(state: SocietyState, c: RegisterSociety) -> list[Event]:
    p = c.issued_by
    p.require_role(Role.ASSOCIATION)
    p.require_jurisdiction(c.jurisdiction)
    if c.association != p.organisation:
        raise NotPermitted("not_own_association", f"{p.organisation} may not register societies for {c.association}")
    registered = _iso_date(c.registered_on, "registered_on")
    due = _iso_date(c.reconfirmation_due, "reconfirmation_due")
    if due <= registered:
        raise InvalidInput("invalid_date", "reconfirmation_due must come after registered_on")
    _require_text(c.name, "name_required", "a society needs a name")
    event = SocietyRegistered(
        society_id=c.society_id,
        name=c.name,
        level=c.level,
        jurisdiction=c.jurisdiction,
        relation=c.relation,
        association=c.association,
        disciplines=list(c.disciplines),
        registration_number=c.registration_number,
        registered_on=c.registered_on,
        reconfirmation_due=c.reconfirmation_due,
    )
    if state.status is not None:
        if state.registration == event:
            return []
        raise DomainRuleViolated("society_exists", f"society {c.society_id} is already registered")
    return [event]


def _reconfirm(state: SocietyState, c: ReconfirmRegistration) -> list[Event]:
    c.issued_by.require_role(Role.ASSOCIATION)
    on = _iso_date(c.reconfirmed_on, "reconfirmed_on")
    if _iso_date(c.next_due, "next_due") <= on:
        raise InvalidInput("invalid_date", "next_due must come after reconfirmed_on")
    if (state.last_reconfirmed_on, state.reconfirmation_due) == (c.reconfirmed_on, c.next_due):
        return []
    _require_active(state, c)
    return [RegistrationReconfirmed(society_id=c.society_id, reconfirmed_on=c.reconfirmed_on, next_due=c.next_due)]


def _merge(state: SocietyState, c: MergeSociety) -> list[Event]:
    c.issued_by.require_role(Role.ASSOCIATION)
    if c.into_society_id == c.society_id:
        raise DomainRuleViolated("merge_into_itself", "a society cannot be merged into itself")
    if state.status is SocietyStatus.MERGED and state.merged_into == c.into_society_id:
        return []
    _require_active(state, c)
    return [SocietyMerged(society_id=c.society_id, into_society_id=c.into_society_id, reason=c.reason)]


def _dissolve(state: SocietyState, c: DissolveSociety) -> list[Event]:
    c.issued_by.require_role(Role.ASSOCIATION)
    if state.status is SocietyStatus.DISSOLVED:
        return []
    _require_active(state, c)
    return [SocietyDissolved(society_id=c.society_id, reason=c.reason)]


def _record_governance(state: SocietyState, c: RecordGovernance) -> list[Event]:
    _require_association_or_itself(state, c.issued_by)
    if c.full_time_staff < 0:
        raise InvalidInput("invalid_staff_count", "full-time staff cannot be negative")
    governance = Governance(
        has_board=c.has_board,
        has_secretariat=c.has_secretariat,
        has_supervisory_board=c.has_supervisory_board,
        secretariat_real_entity=c.secretariat_real_entity,
        professional_secretary_general=c.professional_secretary_general,
        full_time_staff=c.full_time_staff,
    )
    if state.governance == governance:
        return []
    _require_active(state, c)
    return [GovernanceRecorded(society_id=c.society_id, **governance.model_dump())]


def _record_decoupling(state: SocietyState, c: RecordDecoupling) -> list[Event]:
    _require_association_or_itself(state, c.issued_by)
    current = state.decoupling.get(c.line, DecouplingStatus.NOT_STARTED)
    if current is c.status and c.line in state.decoupling:
        return []
    if _DECOUPLING_ORDER[c.status] < _DECOUPLING_ORDER[current]:
        raise DomainRuleViolated(
            "decoupling_regression",
            f"decoupling of {c.line.value} is {current.value} and cannot go back to {c.status.value}",
        )
    _require_active(state, c)
    return [DecouplingProgressed(society_id=c.society_id, line=c.line, status=c.status, note=c.note)]


def _answer_survey(state: SocietyState, c: AnswerSurvey) -> list[Event]:
    _require_association_or_itself(state, c.issued_by)
    answer = SurveyAnswer(
        willingness=c.willingness,
        self_assessment=c.self_assessment,
        preferred_modes=list(c.preferred_modes),
        survey_reference=c.survey_reference,
    )
    if state.survey == answer:
        return []
    _require_active(state, c)
    return [SurveyAnswered(society_id=c.society_id, **answer.model_dump())]


def _assess(state: SocietyState, c: AssessCapability) -> list[Event]:
    p = c.issued_by
    p.require_role(Role.ASSOCIATION, Role.EVALUATOR)
    missing = [s.value for s in Standard if s not in c.scores]
    if missing:
        raise InvalidInput("missing_standard", f"scores missing for {', '.join(missing)}", standards=missing)
    invalid = [s.value for s in Standard if not (math.isfinite(c.scores[s]) and 0 <= c.scores[s] <= 100)]
    if invalid:
        raise InvalidInput("invalid_score", f"scores must lie in 0..100: {', '.join(invalid)}", standards=invalid)
    if not c.evidence or not all(e.strip() for e in c.evidence):
        raise DomainRuleViolated("evidence_required", "an assessment names its evidence, each item non-empty")
    event = CapabilityAssessed(
        society_id=c.society_id,
        assessment_id=c.assessment_id,
        assessor_org=p.organisation,
        assessor_role=p.role,
        scores={s: c.scores[s] for s in Standard},
        evidence=list(c.evidence),
        evaluation_grade=c.evaluation_grade,
        supersedes=c.supersedes,
        reason=c.reason,
    )
    existing = state.assessments.get(c.assessment_id)
    if existing is not None:
        recorded = (existing.assessor_org, existing.scores, existing.evidence, existing.evaluation_grade)
        if recorded == (event.assessor_org, event.scores, event.evidence, event.evaluation_grade) and (
            existing.supersedes,
            existing.reason,
        ) == (event.supersedes, event.reason):
            return []
        raise DomainRuleViolated("assessment_exists", f"assessment {c.assessment_id} is already recorded")
    _require_active(state, c)
    if c.supersedes is not None:
        earlier = state.assessments.get(c.supersedes)
        if earlier is None:
            raise DomainRuleViolated("unknown_assessment", f"no assessment {c.supersedes} to supersede")
        if earlier.superseded_by is not None:
            raise DomainRuleViolated(
                "already_superseded",
                f"assessment {c.supersedes} is already superseded by {earlier.superseded_by}",
            )
        _require_text(c.reason, "reason_required", "a correction states why it supersedes the earlier assessment")
    return [event]


def _classify(state: SocietyState, c: ClassifySociety) -> list[Event]:
    c.issued_by.require_role(Role.ASSOCIATION)
    _require_text(c.rationale, "rationale_required", "classification states its rationale")
    if state.society_class is c.society_class:
        return []
    _require_active(state, c)
    return [SocietyClassified(society_id=c.society_id, society_class=c.society_class, rationale=c.rationale)]


def _designate_brand(state: SocietyState, c: DesignateBrandSociety) -> list[Event]:
    c.issued_by.require_role(Role.ASSOCIATION)
    _require_text(c.rationale, "rationale_required", "designating a brand society states its rationale")
    if state.brand:
        return []
    _require_active(state, c)
    return [BrandSocietyDesignated(society_id=c.society_id, rationale=c.rationale)]


def _revoke_brand(state: SocietyState, c: RevokeBrandSociety) -> list[Event]:
    c.issued_by.require_role(Role.ASSOCIATION)
    _require_text(c.rationale, "rationale_required", "revoking a brand society states its rationale")
    if not state.brand:
        return []
    return [BrandSocietyRevoked(society_id=c.society_id, rationale=c.rationale)]


def _note_track_record(state: SocietyState, c: NoteTrackRecord) -> list[Event]:
    c.issued_by.require_role(Role.SYSTEM)
    if any(e.source_event_id == c.source_event_id for e in state.track_record):
        return []
    return [
        TrackRecordNoted(
            society_id=c.society_id,
            project_id=c.project_id,
            function_id=c.function_id,
            outcome=c.outcome,
            source_event_id=c.source_event_id,
        )
    ]


def _note_function_undertaken(state: SocietyState, c: NoteFunctionUndertaken) -> list[Event]:
    c.issued_by.require_role(Role.SYSTEM)
    if c.function_id in state.functions_undertaken:
        return []
    return [FunctionUndertaken(society_id=c.society_id, function_id=c.function_id)]


def decide_society(state: SocietyState, command: Command) -> list[Event]:
    """Decide what a command on one society records; ``[]`` when its effect already holds."""
    if not isinstance(command, SocietyCommand):
        raise TypeError(f"{type(command).__name__} is not a society command")
    _refuse_read_only(command.issued_by)
    if isinstance(command, RegisterSociety):
        return _register(state, command)
    if state.status is None:
        raise NotFound("society_not_found", f"society {command.society_id} is not registered")
    if command.society_id != state.society_id:
        raise InvalidInput("society_id_mismatch", f"command for {command.society_id} applied to {state.society_id}")
    command.issued_by.require_jurisdiction(state.jurisdiction)
    match command:
        case ReconfirmRegistration():
            return _reconfirm(state, command)
        case MergeSociety():
            return _merge(state, command)
        case DissolveSociety():
            return _dissolve(state, command)
        case RecordGovernance():
            return _record_governance(state, command)
        case RecordDecoupling():
            return _record_decoupling(state, command)
        case AnswerSurvey():
            return _answer_survey(state, command)
        case AssessCapability():
            return _assess(state, command)
        case ClassifySociety():
            return _classify(state, command)
        case DesignateBrandSociety():
            return _designate_brand(state, command)
        case RevokeBrandSociety():
            return _revoke_brand(state, command)
        case NoteTrackRecord():
            return _note_track_record(state, command)
        case NoteFunctionUndertaken():
            return _note_function_undertaken(state, command)
    raise TypeError(f"no decision for {type(command).__name__}")


class SelectionCommand(Command):
    """A command addressed to one function's selection stream."""

    function_id: str


class OpenSelection(SelectionCommand):
    """A policy opens selection when the registry opens the function (``FunctionOpened``)."""

    jurisdiction: str
    title: str
    category: Category
    qualification_conditions: list[str] = Field(default_factory=list)
    thresholds: list[Threshold] = Field(default_factory=list)
    min_applicants: int = 1
    application_deadline: str | None = None

    @field_validator("jurisdiction")
    @classmethod
    def _valid_jurisdiction(cls, value: str) -> str:
        return jurisdictions.validate(value)


class SubmitApplication(SelectionCommand):
    society_id: str
    statement: str = ""


class WithdrawApplication(SelectionCommand):
    society_id: str
    reason: str = ""


class ComputeRanking(SelectionCommand):
    """Rank the applicants; ``snapshots`` holds exactly one ``snapshot_of`` each applicant."""

    snapshots: list[SocietySnapshot]


class IssueRecommendation(SelectionCommand):
    """Recommend ranked societies; with too little competition a justification is required."""

    society_ids: list[str]
    justification: str = ""


class CloseSelection(SelectionCommand):
    reason: str


def _require_open(state: SelectionState, command: Command) -> None:
    if state.status is not SelectionStatus.OPEN:
        current = state.status.value if state.status is not None else "not opened"
        raise DomainRuleViolated(
            "selection_not_open",
            f"{type(command).__name__} needs an open selection; this one is {current}",
            status=current,
        )


def _require_applying_society(state: SelectionState, principal: Principal, society_id: str) -> None:
    principal.require_role(Role.SOCIETY)
    _require_society_itself(principal, society_id)
    # the society's own jurisdiction must lie inside the function's
    if not jurisdictions.covers(state.jurisdiction, principal.jurisdiction):
        raise NotPermitted(
            "outside_jurisdiction",
            f"jurisdiction {principal.jurisdiction} is outside {state.jurisdiction}'s subtree",
        )


def _open_selection(state: SelectionState, c: OpenSelection) -> list[Event]:
    p = c.issued_by
    p.require_role(Role.SYSTEM)
    p.require_jurisdiction(c.jurisdiction)
    if c.min_applicants < 1:
        raise InvalidInput("invalid_min_applicants", "at least one applicant must be required")
    if c.application_deadline is not None:
        _iso_date(c.application_deadline, "application_deadline")
    if state.status is not None and state.function_id != c.function_id:
        raise InvalidInput("function_id_mismatch", f"command for {c.function_id} applied to {state.function_id}")
    event = SelectionOpened(
        function_id=c.function_id,
        jurisdiction=c.jurisdiction,
        title=c.title,
        category=c.category,
        qualification_conditions=list(c.qualification_conditions),
        thresholds=list(c.thresholds),
        min_applicants=c.min_applicants,
        application_deadline=c.application_deadline,
    )
    if state.status is SelectionStatus.OPEN:
        terms = ("jurisdiction", "title", "category", "qualification_conditions", "thresholds", "min_applicants")
        if all(getattr(state, t) == getattr(event, t) for t in terms) and (
            state.application_deadline == event.application_deadline
        ):
            return []
        raise DomainRuleViolated("selection_open", "selection is already open on other terms; close it first")
    return [event]


def _submit(state: SelectionState, c: SubmitApplication) -> list[Event]:
    _require_applying_society(state, c.issued_by, c.society_id)
    if state.status is SelectionStatus.OPEN and c.society_id in state.applicants:
        return []
    _require_open(state, c)
    if state.application_deadline is not None:
        deadline = _iso_date(state.application_deadline, "application_deadline")
        if c.issued_at.date() > deadline:
            raise DomainRuleViolated(
                "deadline_passed", f"applications closed on {deadline}; it is {c.issued_at.date()}"
            )
    return [ApplicationSubmitted(function_id=c.function_id, society_id=c.society_id, statement=c.statement)]


def _withdraw_application(state: SelectionState, c: WithdrawApplication) -> list[Event]:
    _require_applying_society(state, c.issued_by, c.society_id)
    if c.society_id not in state.applicants:
        return []
    _require_open(state, c)
    return [ApplicationWithdrawn(function_id=c.function_id, society_id=c.society_id, reason=c.reason)]


def _compute_ranking(state: SelectionState, c: ComputeRanking) -> list[Event]:
    c.issued_by.require_role(Role.ASSOCIATION)
    _require_open(state, c)
    ids = [s.society_id for s in c.snapshots]
    if len(set(ids)) != len(ids) or not set(ids) <= set(state.applicants):
        raise DomainRuleViolated(
            "snapshot_mismatch",
            "supply at most one snapshot for each applicant, and none for anyone else",
            applicants=list(state.applicants),
            snapshots=ids,
        )
    by_id = {s.society_id: s for s in c.snapshots}
    inputs = [by_id[a] for a in state.applicants if a in by_id]
    # An applicant with no society record (never registered) is excluded, never silently dropped.
    unregistered = [
        Exclusion(society_id=a, code="not_registered", reason=f"{a} has no society record with the association")
        for a in state.applicants
        if a not in by_id
    ]
    fresh = state.ranking is not None and not state.applications_changed_since_ranking
    if fresh and state.ranking is not None and state.ranking.inputs == inputs:
        return []
    ranking = rank(inputs, state)
    return [
        RankingComputed(
            function_id=c.function_id,
            method=ranking.method,
            candidates=ranking.candidates,
            exclusions=[*ranking.exclusions, *unregistered],
            manual_checks=ranking.manual_checks,
            eligible_count=ranking.eligible_count,
            min_applicants=state.min_applicants,
            insufficient_competition=ranking.insufficient_competition,
            inputs=inputs,
        )
    ]


def _issue_recommendation(state: SelectionState, c: IssueRecommendation) -> list[Event]:
    c.issued_by.require_role(Role.ASSOCIATION)
    _require_open(state, c)
    ranking = state.ranking
    if ranking is None or state.applications_changed_since_ranking:
        raise DomainRuleViolated(
            "ranking_stale", "compute a ranking after the last application change before recommending"
        )
    if not c.society_ids:
        raise DomainRuleViolated("recommendation_empty", "recommend at least one society")
    duplicates = sorted({s for s in c.society_ids if c.society_ids.count(s) > 1})
    if duplicates:
        raise InvalidInput("duplicate_society", f"recommended more than once: {', '.join(duplicates)}")
    ranked = {candidate.society_id for candidate in ranking.candidates}
    not_ranked = [s for s in c.society_ids if s not in ranked]
    if not_ranked:
        raise DomainRuleViolated(
            "not_eligible",
            f"not a ranked candidate of the latest ranking: {', '.join(not_ranked)}",
            society_ids=not_ranked,
        )
    if ranking.insufficient_competition:
        _require_text(
            c.justification,
            "justification_required",
            f"only {ranking.eligible_count} eligible of {ranking.min_applicants} required: justify the recommendation",
        )
    if state.recommended == c.society_ids and state.recommended_ranking_version == state.ranking_version:
        return []
    return [
        SocietiesRecommended(
            function_id=c.function_id,
            society_ids=list(c.society_ids),
            ranking_version=state.ranking_version,
            justification=c.justification,
        )
    ]


def _close_selection(state: SelectionState, c: CloseSelection) -> list[Event]:
    c.issued_by.require_role(Role.SYSTEM)
    if state.status is SelectionStatus.CLOSED:
        return []
    return [SelectionClosed(function_id=c.function_id, reason=c.reason)]


def decide_selection(state: SelectionState, command: Command) -> list[Event]:
    """Decide what a command on one selection records; ``[]`` when its effect already holds."""
    if not isinstance(command, SelectionCommand):
        raise TypeError(f"{type(command).__name__} is not a selection command")
    _refuse_read_only(command.issued_by)
    if isinstance(command, OpenSelection):
        return _open_selection(state, command)
    if state.status is None:
        raise NotFound("selection_not_found", f"no selection was opened for {command.function_id}")
    if command.function_id != state.function_id:
        raise InvalidInput("function_id_mismatch", f"command for {command.function_id} applied to {state.function_id}")
    if not isinstance(command, SubmitApplication | WithdrawApplication):
        # societies are checked against the function's subtree from below, in _require_applying_society
        command.issued_by.require_jurisdiction(state.jurisdiction)
    match command:
        case SubmitApplication():
            return _submit(state, command)
        case WithdrawApplication():
            return _withdraw_application(state, command)
        case ComputeRanking():
            return _compute_ranking(state, command)
        case IssueRecommendation():
            return _issue_recommendation(state, command)
        case CloseSelection():
            return _close_selection(state, command)
    raise TypeError(f"no decision for {type(command).__name__}")


# ---------------------------------------------------------------------------------------
# Streams: how the service stores and finds each decider's events
# ---------------------------------------------------------------------------------------

SOCIETY = Aggregate(
    stream_type="society",
    initial=initial_society,
    evolve=evolve_society,
    decide=decide_society,
    jurisdiction_of=lambda state, command: state.jurisdiction or command.jurisdiction,
)
SELECTION = Aggregate(
    stream_type="selection",
    initial=initial_selection,
    evolve=evolve_selection,
    decide=decide_selection,
    jurisdiction_of=lambda state, command: state.jurisdiction or command.jurisdiction,
)


def society_stream(society_id: str) -> str:
    return f"society-{society_id}"


def selection_stream(function_id: str) -> str:
    return f"selection-{function_id}"
