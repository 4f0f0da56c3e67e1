"""The registry of transferable functions (可转移职能清单): one decider per function, one per list.

Read top to bottom: events (the stored contract), then state and ``evolve``, then commands
and ``decide``. Everything here is pure: ids and time arrive with the commands.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date
from enum import StrEnum
from typing import Any, ClassVar, Final

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
)

from shared import jurisdiction as jurisdictions
from shared.errors import DomainRuleViolated, InvalidInput, NotFound, NotPermitted
from shared.messages import Aggregate, Command, Event, EventRegistry
from shared.principal import Principal, Role
from shared.rules import refuse_read_only as _refuse_read_only

# ---------------------------------------------------------------------------------------
# Vocabulary
# ---------------------------------------------------------------------------------------


class Category(StrEnum):
    """The five kinds of function a department may transfer to a society."""

    SCIENCE_EVALUATION = "science_evaluation"  # 相关科技评估
    # 工程技术领域职业资格认定
    QUALIFICATION_CERTIFICATION = "qualification_certification"
    TECHNICAL_STANDARD = "technical_standard"  # 技术标准研制
    AWARD_NOMINATION = "award_nomination"  # 国家科技奖励推荐
    PUBLIC_SERVICE = "public_service"  # 科技类社会化公共服务


class SubKind(StrEnum):
    """The finer kind inside a category; only some pairs exist (see ``SUB_KINDS``)."""

    RESEARCH_BASE_EVALUATION = "research_base_evaluation"  # 国家科研和创新基地评估
    PROGRAMME_EVALUATION = "programme_evaluation"  # 科技计划实施情况的整体评估
    PROJECT_POST_EVALUATION = "project_post_evaluation"  # 科研项目完成情况评估
    LEVEL_EVALUATION = "level_evaluation"  # 水平评价类
    ACCESS = "access"  # 行业准入类: named so that it can be refused
    PROFESSIONAL_TITLE = "professional_title"  # 非公有制经济组织职称评定
    GROUP_STANDARD = "group_standard"  # 团体标准
    NATIONAL_AWARD_NOMINATION = "national_award_nomination"
    PURCHASED_SERVICE = "purchased_service"  # 政府购买服务
    OTHER = "other"


SUB_KINDS: Final[Mapping[Category, frozenset[SubKind]]] = {
    Category.SCIENCE_EVALUATION: frozenset(
        {
            SubKind.RESEARCH_BASE_EVALUATION,
            SubKind.PROGRAMME_EVALUATION,
            SubKind.PROJECT_POST_EVALUATION,
        }
    ),
    Category.QUALIFICATION_CERTIFICATION: frozenset(
        {SubKind.LEVEL_EVALUATION, SubKind.ACCESS, SubKind.PROFESSIONAL_TITLE}
    ),
    Category.TECHNICAL_STANDARD: frozenset({SubKind.GROUP_STANDARD}),
    Category.AWARD_NOMINATION: frozenset({SubKind.NATIONAL_AWARD_NOMINATION}),
    Category.PUBLIC_SERVICE: frozenset({SubKind.PURCHASED_SERVICE, SubKind.OTHER}),
}
"""Which sub-kinds belong to which category; any other pair is refused."""


class Scope(StrEnum):
    """Whether the function is transferred whole or in part (整体或部分)."""

    WHOLE = "whole"
    PARTIAL = "partial"


class EntrustmentMode(StrEnum):
    """How the department entrusts the function to the society."""

    CENTRALISED_PURCHASE = "centralised_purchase"  # 政府集中采购
    LONG_TERM_AGREEMENT = "long_term_agreement"  # 长期协议
    TRIPARTITE_TASK_AGREEMENT = "tripartite_task_agreement"  # 三方试点任务书
    DIRECTED_PURCHASE = "directed_purchase"  # 定向采购
    FISCAL_SUBSIDY = "fiscal_subsidy"  # 财政补贴
    PURCHASE_OF_SERVICES = "purchase_of_services"  # 政府购买服务
    # 取消后自律
    SELF_REGULATION_AFTER_CANCELLATION = "self_regulation_after_cancellation"


class Status(StrEnum):
    """Where a function stands in its lifecycle."""

    PROPOSED = "proposed"
    IN_CONSULTATION = "in_consultation"
    LISTED = "listed"
    OPEN = "open"
    ASSIGNED = "assigned"
    TRANSFERRED = "transferred"
    RETURNED = "returned"
    WITHDRAWN = "withdrawn"
    DELISTED = "delisted"


class Threshold(BaseModel):
    """An entry threshold (准入门槛) a society must meet to undertake an open function."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    requirement: str


class ListEntry(BaseModel):
    """One function as it appears in a published list; the unit that list diffs compare."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    function_id: str
    title: str
    category: Category
    sub_kind: SubKind
    scope: Scope
    entrustment_mode: EntrustmentMode
    department: str
    status: Status
    qualification_conditions: list[str] = Field(default_factory=list)
    thresholds: list[Threshold] = Field(default_factory=list)


# ---------------------------------------------------------------------------------------
# 1. Events
#
# These shapes ARE the storage format. Once written, an event's shape is frozen for its
# schema_version: change a shape only by bumping the version and registering an upcaster
# on EVENTS. Time and actor live in the envelope, not in the payload.
# ---------------------------------------------------------------------------------------


class FunctionProposed(Event):
    """A society, the association or a department proposed a function as transferable."""

    event_type: ClassVar[str] = "FunctionProposed"

    function_id: str
    jurisdiction: str
    title: str
    description: str
    category: Category
    sub_kind: SubKind
    scope: Scope
    entrustment_mode: EntrustmentMode
    department: str
    proposed_by_org: str
    proposer_role: Role


class ConsultationStarted(Event):
    """The association began consulting the owning department about the function."""

    event_type: ClassVar[str] = "ConsultationStarted"

    function_id: str
    department: str
    note: str


class DepartmentReviewRecorded(Event):
    """The owning department reviewed and confirmed (审核确认) the function."""

    event_type: ClassVar[str] = "DepartmentReviewRecorded"

    function_id: str
    department: str
    reference: str
    note: str


class FunctionListed(Event):
    """The owning department approved the function onto the transferable list."""

    event_type: ClassVar[str] = "FunctionListed"

    function_id: str
    department: str


class FunctionAmended(Event):
    """Some descriptive fields changed; ``changes`` holds only the fields that differ."""

    event_type: ClassVar[str] = "FunctionAmended"

    function_id: str
    changes: dict[str, Any]
    reason: str


class FunctionOpened(Event):
    """The function was opened for societies to undertake, on these conditions.

    It repeats what the function is (jurisdiction, title, category, department) so that
    other services can open a selection from this one event, without a copy of the rest.
    """

    event_type: ClassVar[str] = "FunctionOpened"

    function_id: str
    jurisdiction: str
    title: str
    category: Category
    sub_kind: SubKind
    department: str
    qualification_conditions: list[str]
    thresholds: list[Threshold]
    min_applicants: int = Field(ge=1)
    application_deadline: str | None


class RecommendationRecorded(Event):
    """The capability service recommended societies for the open function (遴选推荐).

    Recorded from the capability service's ``SocietiesRecommended`` event; only a
    recommended society may then be assigned the function.
    """

    event_type: ClassVar[str] = "RecommendationRecorded"

    function_id: str
    society_ids: list[str]
    ranking_version: int
    justification: str


class FunctionAssigned(Event):
    """A society was chosen to undertake the function.

    Like ``FunctionOpened`` it repeats what the function is, so that the supervision
    service can open the pilot-project case from this one event.
    """

    event_type: ClassVar[str] = "FunctionAssigned"

    function_id: str
    society_id: str
    society_name: str
    jurisdiction: str
    title: str
    category: Category
    sub_kind: SubKind
    department: str


class FunctionTransferred(Event):
    """The task agreement is in force: the society now carries out the function."""

    event_type: ClassVar[str] = "FunctionTransferred"

    function_id: str
    society_id: str
    agreement_reference: str


class FunctionReturned(Event):
    """The function came back from the society (it may be opened again)."""

    event_type: ClassVar[str] = "FunctionReturned"

    function_id: str
    society_id: str
    reason: str


class FunctionWithdrawn(Event):
    """The function will not be transferred after all; final."""

    event_type: ClassVar[str] = "FunctionWithdrawn"

    function_id: str
    reason: str


class FunctionDelisted(Event):
    """The department took the function off the transferable list; final."""

    event_type: ClassVar[str] = "FunctionDelisted"

    function_id: str
    reason: str


class FunctionListPublished(Event):
    """A new version of a jurisdiction's transferable-function list was published."""

    event_type: ClassVar[str] = "FunctionListPublished"

    jurisdiction: str
    version: int
    entries: list[ListEntry]
    note: str


EVENTS = EventRegistry(
    FunctionProposed,
    ConsultationStarted,
    DepartmentReviewRecorded,
    FunctionListed,
    FunctionAmended,
    FunctionOpened,
    RecommendationRecorded,
    FunctionAssigned,
    FunctionTransferred,
    FunctionReturned,
    FunctionWithdrawn,
    FunctionDelisted,
    FunctionListPublished,
)
"""Every event type of the registry service, for decoding stored events."""


# ---------------------------------------------------------------------------------------
# 2. State and evolve
# ---------------------------------------------------------------------------------------


class FunctionState(BaseModel):
    """What the decider needs to know about one function; ``status=None``: no stream yet."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    status: Status | None = None
    function_id: str = ""
    jurisdiction: str = ""
    title: str = ""
    description: str = ""
    category: Category | None = None
    sub_kind: SubKind | None = None
    scope: Scope | None = None
    entrustment_mode: EntrustmentMode | None = None
    department: str = ""
    proposed_by_org: str = ""
    proposer_role: Role | None = None
    qualification_conditions: list[str] = Field(default_factory=list)
    thresholds: list[Threshold] = Field(default_factory=list)
    min_applicants: int = 1
    application_deadline: str | None = None
    review_recorded: bool = False
    review_reference: str | None = None
    society_id: str | None = None
    society_name: str | None = None
    agreement_reference: str | None = None
    recommended_society_ids: list[str] = Field(default_factory=list)


# Fields FunctionAmended may change, with how a stored (JSON) value becomes a state value.
_AMENDABLE: Final[dict[str, TypeAdapter[Any]]] = {
    "title": TypeAdapter(str),
    "description": TypeAdapter(str),
    "scope": TypeAdapter(Scope),
    "entrustment_mode": TypeAdapter(EntrustmentMode),
    "qualification_conditions": TypeAdapter(list[str]),
    "thresholds": TypeAdapter(list[Threshold]),
}
AMENDABLE_FIELDS: Final[frozenset[str]] = frozenset(_AMENDABLE)
"""Names of the fields ``AmendFunction`` may change."""


def initial_function() -> FunctionState:
    """The state of a function stream before its first event."""
    return FunctionState()


def evolve_function(state: FunctionState, event: Event) -> FunctionState:
    """Apply one stored fact; no validation, since events record what already happened."""
    match event:
        case FunctionProposed():
            return FunctionState(
                status=Status.PROPOSED,
                function_id=event.function_id,
                jurisdiction=event.jurisdiction,
                title=event.title,
                description=event.description,
                category=event.category,
                sub_kind=event.sub_kind,
                scope=event.scope,
                entrustment_mode=event.entrustment_mode,
                department=event.department,
                proposed_by_org=event.proposed_by_org,
                proposer_role=event.proposer_role,
            )
        case ConsultationStarted():
            return state.model_copy(update={"status": Status.IN_CONSULTATION})
        case DepartmentReviewRecorded():
            return state.model_copy(update={"review_recorded": True, "review_reference": event.reference})
        case FunctionListed():
            return state.model_copy(update={"status": Status.LISTED})
        case FunctionAmended():
            update = {
                name: _AMENDABLE[name].validate_python(value)
                for name, value in event.changes.items()
                if name in _AMENDABLE
            }
            return state.model_copy(update=update)
        case FunctionOpened():
            return state.model_copy(
                update={
                    "status": Status.OPEN,
                    "qualification_conditions": list(event.qualification_conditions),
                    "thresholds": list(event.thresholds),
                    "min_applicants": event.min_applicants,
                    "application_deadline": event.application_deadline,
                    # a re-opened function starts afresh: the previous society is gone
                    "society_id": None,
                    "society_name": None,
                    "agreement_reference": None,
                    "recommended_society_ids": [],
                }
            )
        case RecommendationRecorded():
            return state.model_copy(update={"recommended_society_ids": list(event.society_ids)})
        case FunctionAssigned():
            return state.model_copy(
                update={
                    "status": Status.ASSIGNED,
                    "society_id": event.society_id,
                    "society_name": event.society_name,
                }
            )
        case FunctionTransferred():
            return state.model_copy(
                update={
                    "status": Status.TRANSFERRED,
                    "agreement_reference": event.agreement_reference,
                }
            )
        case FunctionReturned():
            # society_id stays, so the society that returned it can retry idempotently
            return state.model_copy(update={"status": Status.RETURNED})
        case FunctionWithdrawn():
            return state.model_copy(update={"status": Status.WITHDRAWN})
        case FunctionDelisted():
            return state.model_copy(update={"status": Status.DELISTED})
    return state


def list_entry_of(state: FunctionState) -> ListEntry:
    """The list entry describing a function as it stands, for callers publishing a list."""
    if (
        state.status is None
        or state.category is None
        or state.sub_kind is None
        or state.scope is None
        or state.entrustment_mode is None
    ):
        raise NotFound("function_not_found", "the function has not been proposed")
    return ListEntry(
        function_id=state.function_id,
        title=state.title,
        category=state.category,
        sub_kind=state.sub_kind,
        scope=state.scope,
        entrustment_mode=state.entrustment_mode,
        department=state.department,
        status=state.status,
        qualification_conditions=list(state.qualification_conditions),
        thresholds=list(state.thresholds),
    )


class FunctionListState(BaseModel):
    """The latest published version of one jurisdiction's list; version 0: none yet."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    jurisdiction: str | None = None
    version: int = 0
    entries: list[ListEntry] = Field(default_factory=list)


def initial_list() -> FunctionListState:
    """The state of a list stream before anything is published."""
    return FunctionListState()


def evolve_list(state: FunctionListState, event: Event) -> FunctionListState:
    """Apply one published version; the newest version replaces the previous one."""
    if isinstance(event, FunctionListPublished):
        return FunctionListState(
            jurisdiction=event.jurisdiction,
            version=event.version,
            entries=list(event.entries),
        )
    return state


# ---------------------------------------------------------------------------------------
# 3. Commands and decide
# ---------------------------------------------------------------------------------------


class FunctionCommand(Command):
    """A command addressed to one function's stream."""

    function_id: str


class ProposeFunction(FunctionCommand):
    """Propose a function as transferable; the proposer is whoever issues the command."""

    jurisdiction: str
    title: str
    description: str = ""
    category: Category
    sub_kind: SubKind
    scope: Scope
    entrustment_mode: EntrustmentMode
    department: str

    @field_validator("jurisdiction")
    @classmethod
    def _valid_jurisdiction(cls, value: str) -> str:
        return jurisdictions.validate(value)


class StartConsultation(FunctionCommand):
    """The association starts consulting the owning department."""

    note: str = ""


class RecordDepartmentReview(FunctionCommand):
    """The owning department records its review and confirmation (审核确认)."""

    reference: str
    note: str = ""


class ListFunction(FunctionCommand):
    """The owning department puts the function on the transferable list."""


class AmendFunction(FunctionCommand):
    """Change descriptive fields of a listed or open function."""

    changes: dict[str, Any]
    reason: str


class OpenForUndertaking(FunctionCommand):
    """Open the function to societies, stating qualification conditions and thresholds."""

    qualification_conditions: list[str] = Field(default_factory=list)
    thresholds: list[Threshold] = Field(default_factory=list)
    min_applicants: int = 1
    application_deadline: str | None = None


class AssignFunction(FunctionCommand):
    """Choose the society that will undertake an open function."""

    society_id: str
    society_name: str


class RecordRecommendation(FunctionCommand):
    """Record the capability service's recommendation (issued by the registry's policy)."""

    society_ids: list[str]
    ranking_version: int
    justification: str = ""


class MarkTransferred(FunctionCommand):
    """Record that the task agreement with the assigned society is in force."""

    agreement_reference: str


class ReturnFunction(FunctionCommand):
    """Take the function back from the society that holds it."""

    reason: str


class WithdrawFunction(FunctionCommand):
    """Give up on transferring the function."""

    reason: str


class DelistFunction(FunctionCommand):
    """Take the function off the transferable list."""

    reason: str


class PublishFunctionList(Command):
    """Publish the jurisdiction's list as it now stands; the decider numbers the version."""

    jurisdiction: str
    entries: list[ListEntry]
    note: str = ""

    @field_validator("jurisdiction")
    @classmethod
    def _valid_jurisdiction(cls, value: str) -> str:
        return jurisdictions.validate(value)


def _require_status(state: FunctionState, command: Command, *allowed: Status) -> None:
    if state.status not in allowed:
        current = state.status.value if state.status is not None else "not proposed"
        raise DomainRuleViolated(
            "invalid_transition",
            f"{type(command).__name__} is not allowed while the function is {current}",
            status=current,
            command=type(command).__name__,
        )


def _require_owning_department(state: FunctionState, principal: Principal) -> None:
    principal.require_role(Role.DEPARTMENT)
    if principal.organisation != state.department:
        raise NotPermitted(
            "not_owning_department",
            f"only the owning department {state.department} may do this",
        )


def _require_owner_or_association(state: FunctionState, principal: Principal) -> None:
    principal.require_role(Role.ASSOCIATION, Role.DEPARTMENT)
    if principal.role is Role.DEPARTMENT:
        _require_owning_department(state, principal)


def _propose(state: FunctionState, c: ProposeFunction) -> list[Event]:
    p = c.issued_by
    p.require_role(Role.SOCIETY, Role.ASSOCIATION, Role.DEPARTMENT)
    p.require_jurisdiction(c.jurisdiction)
    if state.status is not None:
        same = (
            state.proposed_by_org == p.organisation
            and (state.jurisdiction, state.title, state.description, state.department)
            == (c.jurisdiction, c.title, c.description, c.department)
            and (state.category, state.sub_kind, state.scope, state.entrustment_mode)
            == (c.category, c.sub_kind, c.scope, c.entrustment_mode)
        )
        if same:
            return []
        raise DomainRuleViolated("function_exists", f"function {c.function_id} already exists")
    if c.sub_kind not in SUB_KINDS[c.category]:
        raise DomainRuleViolated(
            "sub_kind_mismatch",
            f"{c.sub_kind.value} is not a kind of {c.category.value}",
        )
    if c.category is Category.QUALIFICATION_CERTIFICATION and c.sub_kind is SubKind.ACCESS:
        # the line that keeps societies apart from industry associations
        raise DomainRuleViolated(
            "access_type_qualification_refused",
            "only level-evaluation type (水平评价类) qualification certification may be "
            "transferred to a society; access-type (行业准入类) never may",
        )
    if not c.title.strip():
        raise DomainRuleViolated("title_required", "a function needs a title")
    if not c.department.strip():
        raise DomainRuleViolated("department_required", "a function needs an owning department")
    return [
        FunctionProposed(
            function_id=c.function_id,
            jurisdiction=c.jurisdiction,
            title=c.title,
            description=c.description,
            category=c.category,
            sub_kind=c.sub_kind,
            scope=c.scope,
            entrustment_mode=c.entrustment_mode,
            department=c.department,
            proposed_by_org=p.organisation,
            proposer_role=p.role,
        )
    ]


def _start_consultation(state: FunctionState, c: StartConsultation) -> list[Event]:
    c.issued_by.require_role(Role.ASSOCIATION)
    if state.status is Status.IN_CONSULTATION:
        return []
    _require_status(state, c, Status.PROPOSED)
    return [ConsultationStarted(function_id=c.function_id, department=state.department, note=c.note)]


def _record_review(state: FunctionState, c: RecordDepartmentReview) -> list[Event]:
    _require_owning_department(state, c.issued_by)
    if state.review_recorded and state.review_reference == c.reference:
        return []
    _require_status(state, c, Status.PROPOSED, Status.IN_CONSULTATION, Status.LISTED)
    return [
        DepartmentReviewRecorded(
            function_id=c.function_id,
            department=state.department,
            reference=c.reference,
            note=c.note,
        )
    ]


def _list(state: FunctionState, c: ListFunction) -> list[Event]:
    _require_owning_department(state, c.issued_by)
    if state.status is Status.LISTED:
        return []
    _require_status(state, c, Status.PROPOSED, Status.IN_CONSULTATION)
    return [FunctionListed(function_id=c.function_id, department=state.department)]


def _amend(state: FunctionState, c: AmendFunction) -> list[Event]:
    _require_owner_or_association(state, c.issued_by)
    unknown = sorted(set(c.changes) - AMENDABLE_FIELDS)
    if unknown:
        raise InvalidInput(
            "unknown_field",
            f"cannot amend {', '.join(unknown)}; amendable: {', '.join(sorted(AMENDABLE_FIELDS))}",
            fields=unknown,
        )
    new_values: dict[str, Any] = {}
    for name, raw in c.changes.items():
        try:
            new_values[name] = _AMENDABLE[name].validate_python(raw)
        except ValidationError as exc:
            raise InvalidInput("invalid_value", f"invalid value for {name}: {exc}") from exc
    if "title" in new_values and not new_values["title"].strip():
        raise DomainRuleViolated("title_required", "a function needs a title")
    _require_status(state, c, Status.LISTED, Status.OPEN)
    stored = {
        name: _AMENDABLE[name].dump_python(value, mode="json")
        for name, value in sorted(new_values.items())
        if getattr(state, name) != value
    }
    if not stored:
        return []
    return [FunctionAmended(function_id=c.function_id, changes=stored, reason=c.reason)]


def _open(state: FunctionState, c: OpenForUndertaking) -> list[Event]:
    _require_owning_department(state, c.issued_by)
    if c.min_applicants < 1:
        raise InvalidInput("invalid_min_applicants", "at least one applicant must be required")
    deadline: date | None = None
    if c.application_deadline is not None:
        try:
            deadline = date.fromisoformat(c.application_deadline)
        except ValueError as exc:
            raise InvalidInput("invalid_deadline", f"{c.application_deadline!r} is not an ISO date") from exc
    if state.status is Status.OPEN and (
        state.qualification_conditions,
        state.thresholds,
        state.min_applicants,
        state.application_deadline,
    ) == (
        c.qualification_conditions,
        c.thresholds,
        c.min_applicants,
        c.application_deadline,
    ):
        return []
    _require_status(state, c, Status.LISTED, Status.RETURNED)
    if state.category is Category.QUALIFICATION_CERTIFICATION and not state.review_recorded:
        raise DomainRuleViolated(
            "department_review_required",
            "a qualification-certification function opens only after the owning "
            "department's review and confirmation (审核确认) is recorded",
        )
    if deadline is not None and deadline < c.issued_at.date():
        raise DomainRuleViolated(
            "deadline_passed",
            f"application deadline {deadline} is before {c.issued_at.date()}",
        )
    return [
        FunctionOpened(
            function_id=c.function_id,
            jurisdiction=state.jurisdiction,
            title=state.title,
            category=state.category,
            sub_kind=state.sub_kind,
            department=state.department,
            qualification_conditions=list(c.qualification_conditions),
            thresholds=list(c.thresholds),
            min_applicants=c.min_applicants,
            application_deadline=c.application_deadline,
        )
    ]


def _record_recommendation(state: FunctionState, c: RecordRecommendation) -> list[Event]:
    c.issued_by.require_role(Role.SYSTEM)
    if state.status is not Status.OPEN or state.recommended_society_ids == c.society_ids:
        return []  # a late or repeated recommendation changes nothing
    return [
        RecommendationRecorded(
            function_id=c.function_id,
            society_ids=list(c.society_ids),
            ranking_version=c.ranking_version,
            justification=c.justification,
        )
    ]


def _assign(state: FunctionState, c: AssignFunction) -> list[Event]:
    _require_owner_or_association(state, c.issued_by)
    if state.status is Status.ASSIGNED and state.society_id == c.society_id:
        return []
    _require_status(state, c, Status.OPEN)
    if c.society_id not in state.recommended_society_ids:
        raise DomainRuleViolated(
            "society_not_recommended",
            f"society {c.society_id} was not recommended for function {c.function_id}; "
            f"recommended: {', '.join(state.recommended_society_ids) or 'none yet'}",
        )
    return [
        FunctionAssigned(
            function_id=c.function_id,
            society_id=c.society_id,
            society_name=c.society_name,
            jurisdiction=state.jurisdiction,
            title=state.title,
            category=state.category,
            sub_kind=state.sub_kind,
            department=state.department,
        )
    ]


def _mark_transferred(state: FunctionState, c: MarkTransferred) -> list[Event]:
    # The supervision service's policy (system) marks it when the task agreement takes effect.
    if c.issued_by.role is not Role.SYSTEM:
        _require_owner_or_association(state, c.issued_by)
    if state.status is Status.TRANSFERRED and state.agreement_reference == c.agreement_reference:
        return []
    _require_status(state, c, Status.ASSIGNED)
    return [
        FunctionTransferred(
            function_id=c.function_id,
            society_id=state.society_id or "",
            agreement_reference=c.agreement_reference,
        )
    ]


def _return(state: FunctionState, c: ReturnFunction) -> list[Event]:
    p = c.issued_by
    # SYSTEM: the registry's policy returns it when supervision terminates the project.
    p.require_role(Role.ASSOCIATION, Role.DEPARTMENT, Role.SOCIETY, Role.SYSTEM)
    if p.role is Role.DEPARTMENT:
        _require_owning_department(state, p)
    elif p.role is Role.SOCIETY and p.organisation != state.society_id:
        raise NotPermitted(
            "not_assigned_society",
            "only the society holding the function may return it",
        )
    if state.status is Status.RETURNED:
        return []
    _require_status(state, c, Status.ASSIGNED, Status.TRANSFERRED)
    return [
        FunctionReturned(
            function_id=c.function_id,
            society_id=state.society_id or "",
            reason=c.reason,
        )
    ]


_EARLY = (Status.PROPOSED, Status.IN_CONSULTATION)
_LATE = (Status.LISTED, Status.OPEN, Status.ASSIGNED, Status.TRANSFERRED)


def _withdraw(state: FunctionState, c: WithdrawFunction) -> list[Event]:
    p = c.issued_by
    # Who may withdraw is settled before the state is examined: a principal without the
    # right learns nothing about the function's state from the refusal.
    if state.status not in (*_EARLY, Status.WITHDRAWN):
        # once listed, only the department that owns the function may give it up
        _require_owning_department(state, p)
    else:
        p.require_role(Role.ASSOCIATION, Role.DEPARTMENT, Role.SOCIETY)
        permitted = (
            p.role is Role.ASSOCIATION
            or p.organisation == state.proposed_by_org
            or (p.role is Role.DEPARTMENT and p.organisation == state.department)
        )
        if not permitted:
            raise NotPermitted(
                "not_permitted_to_withdraw",
                "before listing, only the proposer, the association or the owning department may withdraw a function",
            )
    if state.status is Status.WITHDRAWN:
        return []
    _require_status(state, c, *_EARLY, *_LATE)
    return [FunctionWithdrawn(function_id=c.function_id, reason=c.reason)]


def _delist(state: FunctionState, c: DelistFunction) -> list[Event]:
    _require_owning_department(state, c.issued_by)
    if state.status is Status.DELISTED:
        return []
    _require_status(state, c, Status.LISTED, Status.OPEN, Status.RETURNED)
    return [FunctionDelisted(function_id=c.function_id, reason=c.reason)]


def decide_function(state: FunctionState, command: Command) -> list[Event]:
    """Decide what a command on one function records; ``[]`` when its effect already holds."""
    if not isinstance(command, FunctionCommand):
        raise TypeError(f"{type(command).__name__} is not a function command")
    _refuse_read_only(command.issued_by)
    if isinstance(command, ProposeFunction):
        return _propose(state, command)
    if state.status is None:
        raise NotFound("function_not_found", f"function {command.function_id} does not exist")
    if command.function_id != state.function_id:
        raise InvalidInput(
            "function_id_mismatch",
            f"command for {command.function_id} applied to {state.function_id}",
        )
    command.issued_by.require_jurisdiction(state.jurisdiction)
    match command:
        case StartConsultation():
            return _start_consultation(state, command)
        case RecordDepartmentReview():
            return _record_review(state, command)
        case ListFunction():
            return _list(state, command)
        case AmendFunction():
            return _amend(state, command)
        case OpenForUndertaking():
            return _open(state, command)
        case RecordRecommendation():
            return _record_recommendation(state, command)
        case AssignFunction():
            return _assign(state, command)
        case MarkTransferred():
            return _mark_transferred(state, command)
        case ReturnFunction():
            return _return(state, command)
        case WithdrawFunction():
            return _withdraw(state, command)
        case DelistFunction():
            return _delist(state, command)
    raise TypeError(f"no decision for {type(command).__name__}")


def _by_id(entries: Iterable[ListEntry]) -> list[ListEntry]:
    return sorted(entries, key=lambda e: e.function_id)


def decide_list(state: FunctionListState, command: Command) -> list[Event]:
    """Publish the next version of a list, unless it equals the latest one (then ``[]``)."""
    if not isinstance(command, PublishFunctionList):
        raise TypeError(f"{type(command).__name__} is not a list command")
    p = command.issued_by
    _refuse_read_only(p)
    p.require_role(Role.ASSOCIATION, Role.DEPARTMENT)
    p.require_jurisdiction(command.jurisdiction)
    if state.jurisdiction is not None and state.jurisdiction != command.jurisdiction:
        raise DomainRuleViolated(
            "jurisdiction_mismatch",
            f"this list belongs to {state.jurisdiction}, not {command.jurisdiction}",
        )
    ids = [e.function_id for e in command.entries]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise InvalidInput(
            "duplicate_entry",
            f"listed more than once: {', '.join(duplicates)}",
            ids=duplicates,
        )
    entries = _by_id(command.entries)
    if state.version > 0 and entries == _by_id(state.entries):
        return []
    return [
        FunctionListPublished(
            jurisdiction=command.jurisdiction,
            version=state.version + 1,
            entries=entries,
            note=command.note,
        )
    ]


class EntryChange(BaseModel):
    """How one function's entry differs between two list versions.

    ``fields`` maps each changed field to ``{"from": old, "to": new}`` (JSON values).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    function_id: str
    fields: dict[str, dict[str, Any]]


class ListDiff(BaseModel):
    """The difference between two list versions, itself disclosed (动态调整)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    added: list[ListEntry]
    removed: list[ListEntry]
    changed: list[EntryChange]


def diff_lists(older: list[ListEntry], newer: list[ListEntry]) -> ListDiff:
    """Compare two list versions by function id; results are sorted by function id."""
    old = {e.function_id: e for e in older}
    new = {e.function_id: e for e in newer}
    changed: list[EntryChange] = []
    for fid in sorted(old.keys() & new.keys()):
        before = old[fid].model_dump(mode="json")
        after = new[fid].model_dump(mode="json")
        fields = {name: {"from": before[name], "to": after[name]} for name in before if before[name] != after[name]}
        if fields:
            changed.append(EntryChange(function_id=fid, fields=fields))
    return ListDiff(
        added=[new[fid] for fid in sorted(new.keys() - old.keys())],
        removed=[old[fid] for fid in sorted(old.keys() - new.keys())],
        changed=changed,
    )


# ---------------------------------------------------------------------------------------
# 4. Streams: how the service stores and finds each decider's events
# ---------------------------------------------------------------------------------------

FUNCTION = Aggregate(
    stream_type="function",
    initial=initial_function,
    evolve=evolve_function,
    decide=decide_function,
    jurisdiction_of=lambda state, command: state.jurisdiction or command.jurisdiction,
)
FUNCTION_LIST = Aggregate(
    stream_type="function-list",
    initial=initial_list,
    evolve=evolve_list,
    decide=decide_list,
    jurisdiction_of=lambda state, command: command.jurisdiction,
)


def function_stream(function_id: str) -> str:
    return f"function-{function_id}"


def list_stream(code: str) -> str:
    return f"function-list-{code}"
