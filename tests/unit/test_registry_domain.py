"""The registry decider: rules of the transferable-function lifecycle, as plain function calls."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.registry.domain import (
    EVENTS,
    AmendFunction,
    AssignFunction,
    Category,
    DelistFunction,
    DepartmentReviewRecorded,
    EntrustmentMode,
    FunctionAmended,
    FunctionAssigned,
    FunctionCommand,
    FunctionListPublished,
    FunctionListState,
    FunctionOpened,
    FunctionProposed,
    FunctionState,
    ListEntry,
    ListFunction,
    MarkTransferred,
    OpenForUndertaking,
    ProposeFunction,
    PublishFunctionList,
    RecommendationRecorded,
    RecordDepartmentReview,
    RecordRecommendation,
    ReturnFunction,
    Scope,
    StartConsultation,
    Status,
    SubKind,
    Threshold,
    WithdrawFunction,
    decide_function,
    decide_list,
    diff_lists,
    evolve_function,
    evolve_list,
    initial_function,
    initial_list,
    list_entry_of,
)
from shared.errors import (
    ChengnengError,
    DomainRuleViolated,
    InvalidInput,
    NotFound,
    NotPermitted,
)
from shared.jurisdiction import CENTRAL
from shared.messages import Command, Event
from shared.principal import Principal, Role

DEYANG = "510600"
SICHUAN = "510000"
MIANYANG = "510700"
AT = datetime(2024, 5, 6, 9, 30, tzinfo=UTC)
FID = "fn-001"


def who(role: Role, organisation: str, jurisdiction: str = DEYANG) -> Principal:
    return Principal(
        subject=f"user@{organisation}",
        organisation=organisation,
        role=role,
        jurisdiction=jurisdiction,
    )


ASSOCIATION = who(Role.ASSOCIATION, "deyang-association")
OWNING_DEPT = who(Role.DEPARTMENT, "dept-science")
OTHER_DEPT = who(Role.DEPARTMENT, "dept-health")
PROPOSER = who(Role.SOCIETY, "society-mechanical")
OTHER_SOCIETY = who(Role.SOCIETY, "society-chemical")
EVALUATOR = who(Role.EVALUATOR, "evaluator-1")
AUDITOR = who(Role.AUDITOR, "audit-office")
PUBLIC = who(Role.PUBLIC, "anyone")
PROVINCE_ASSOCIATION = who(Role.ASSOCIATION, "sichuan-association", SICHUAN)
NEIGHBOUR_ASSOCIATION = who(Role.ASSOCIATION, "mianyang-association", MIANYANG)
NEIGHBOUR_DEPT = who(Role.DEPARTMENT, "dept-science", MIANYANG)
# the capability service's policy, recording its recommendation on the registry
SYSTEM = Principal(
    subject="capability-policy",
    organisation="chengneng.capability",
    role=Role.SYSTEM,
    jurisdiction=CENTRAL,
)

ALL_PRINCIPALS = [
    ASSOCIATION,
    OWNING_DEPT,
    OTHER_DEPT,
    PROPOSER,
    OTHER_SOCIETY,
    EVALUATOR,
    AUDITOR,
    PUBLIC,
    PROVINCE_ASSOCIATION,
    NEIGHBOUR_ASSOCIATION,
    NEIGHBOUR_DEPT,
    SYSTEM,
]


def propose(by: Principal = PROPOSER, **overrides: Any) -> ProposeFunction:
    fields: dict[str, Any] = {
        "function_id": FID,
        "jurisdiction": DEYANG,
        "title": "Group standards for industrial robots",
        "description": "Drafting group standards in the robotics field",
        "category": Category.TECHNICAL_STANDARD,
        "sub_kind": SubKind.GROUP_STANDARD,
        "scope": Scope.PARTIAL,
        "entrustment_mode": EntrustmentMode.PURCHASE_OF_SERVICES,
        "department": OWNING_DEPT.organisation,
        "issued_by": by,
        "issued_at": AT,
    }
    fields.update(overrides)
    return ProposeFunction(**fields)


def qualification(by: Principal = PROPOSER) -> ProposeFunction:
    return propose(
        by,
        title="Level evaluation of welding engineers",
        category=Category.QUALIFICATION_CERTIFICATION,
        sub_kind=SubKind.LEVEL_EVALUATION,
    )


def cmd(kind: type[FunctionCommand], by: Principal, **fields: Any) -> Any:
    return kind(function_id=FID, issued_by=by, issued_at=AT, **fields)


def fold(events: list[Event], state: FunctionState | None = None) -> FunctionState:
    state = state if state is not None else initial_function()
    for event in events:
        state = evolve_function(state, event)
    return state


def run(*commands: Command, state: FunctionState | None = None) -> FunctionState:
    """Decide and apply each command in turn, as the service would."""
    state = state if state is not None else initial_function()
    for command in commands:
        state = fold(decide_function(state, command), state)
    return state


def listed(proposal: ProposeFunction | None = None) -> FunctionState:
    return run(proposal or propose(), cmd(ListFunction, OWNING_DEPT))


def opened() -> FunctionState:
    return run(cmd(OpenForUndertaking, OWNING_DEPT), state=listed())


def recommend(*society_ids: str, by: Principal = SYSTEM, version: int = 1) -> RecordRecommendation:
    return cmd(
        RecordRecommendation,
        by,
        society_ids=list(society_ids),
        ranking_version=version,
        justification="ranked by capability score",
    )


def recommended() -> FunctionState:
    """Open, with both societies recommended by the capability service."""
    return run(recommend(PROPOSER.organisation, OTHER_SOCIETY.organisation), state=opened())


def assigned() -> FunctionState:
    return run(
        cmd(
            AssignFunction,
            ASSOCIATION,
            society_id=PROPOSER.organisation,
            society_name="Mechanical Engineering Society",
        ),
        state=recommended(),
    )


def refused(state: FunctionState, command: Command) -> ChengnengError:
    with pytest.raises(ChengnengError) as caught:
        decide_function(state, command)
    return caught.value


# --- proposing ---------------------------------------------------------------------------


def test_access_type_qualification_function_is_refused() -> None:
    command = propose(category=Category.QUALIFICATION_CERTIFICATION, sub_kind=SubKind.ACCESS)
    error = refused(initial_function(), command)
    assert isinstance(error, DomainRuleViolated)
    assert error.code == "access_type_qualification_refused"
    assert "level-evaluation" in error.detail


def test_level_evaluation_qualification_function_may_be_proposed() -> None:
    [event] = decide_function(initial_function(), qualification())
    assert isinstance(event, FunctionProposed)
    assert event.sub_kind is SubKind.LEVEL_EVALUATION
    assert event.proposed_by_org == PROPOSER.organisation
    assert event.proposer_role is Role.SOCIETY
    assert fold([event]).status is Status.PROPOSED


@pytest.mark.parametrize(
    ("category", "sub_kind"),
    [
        (Category.TECHNICAL_STANDARD, SubKind.LEVEL_EVALUATION),
        (Category.SCIENCE_EVALUATION, SubKind.GROUP_STANDARD),
        (Category.AWARD_NOMINATION, SubKind.OTHER),
        (Category.PUBLIC_SERVICE, SubKind.ACCESS),
    ],
)
def test_sub_kind_of_another_category_is_refused(category: Category, sub_kind: SubKind) -> None:
    error = refused(initial_function(), propose(category=category, sub_kind=sub_kind))
    assert error.code == "sub_kind_mismatch"


def test_function_without_title_is_refused() -> None:
    assert refused(initial_function(), propose(title="  ")).code == "title_required"


@pytest.mark.parametrize("proposer", [PROPOSER, ASSOCIATION, OWNING_DEPT])
def test_society_association_and_department_may_propose(proposer: Principal) -> None:
    assert run(propose(proposer)).status is Status.PROPOSED


def test_evaluator_may_not_propose_a_function() -> None:
    assert refused(initial_function(), propose(EVALUATOR)).code == "role_not_permitted"


def test_identical_re_proposal_by_the_same_organisation_records_nothing() -> None:
    assert decide_function(run(propose()), propose()) == []


@pytest.mark.parametrize(
    "again",
    [propose(title="Another title"), propose(OTHER_SOCIETY)],
    ids=["different-fields", "different-proposer"],
)
def test_proposing_an_existing_function_again_is_refused(
    again: ProposeFunction,
) -> None:
    assert refused(run(propose()), again).code == "function_exists"


# --- who may act, where -------------------------------------------------------------------


def _every_function_command(by: Principal) -> list[Command]:
    return [
        propose(by),
        cmd(StartConsultation, by),
        cmd(RecordDepartmentReview, by, reference="R-1"),
        cmd(ListFunction, by),
        cmd(AmendFunction, by, changes={"title": "New"}, reason="clarity"),
        cmd(OpenForUndertaking, by),
        recommend("s", by=by),
        cmd(AssignFunction, by, society_id="s", society_name="S"),
        cmd(MarkTransferred, by, agreement_reference="A-1"),
        cmd(ReturnFunction, by, reason="r"),
        cmd(WithdrawFunction, by, reason="r"),
        cmd(DelistFunction, by, reason="r"),
    ]


@pytest.mark.parametrize("reader", [PUBLIC, AUDITOR], ids=["public", "auditor"])
@pytest.mark.parametrize("state_of", [initial_function, listed, opened, recommended, assigned])
def test_public_cannot_issue_any_command(reader: Principal, state_of: Callable[[], FunctionState]) -> None:
    state = state_of()
    for command in _every_function_command(reader):
        error = refused(state, command)
        assert isinstance(error, NotPermitted)
        assert error.code == "read_only_role"
    publish = PublishFunctionList(jurisdiction=DEYANG, entries=[], issued_by=reader, issued_at=AT)
    with pytest.raises(NotPermitted) as caught:
        decide_list(initial_list(), publish)
    assert caught.value.code == "read_only_role"


def test_command_outside_jurisdiction_is_refused() -> None:
    assert refused(initial_function(), propose(NEIGHBOUR_ASSOCIATION)).code == ("outside_jurisdiction")
    state = run(propose())
    for command in _every_function_command(NEIGHBOUR_DEPT)[1:]:
        assert refused(state, command).code == "outside_jurisdiction"


def test_provincial_association_acts_on_a_city_function() -> None:
    state = run(propose(), cmd(StartConsultation, PROVINCE_ASSOCIATION))
    assert state.status is Status.IN_CONSULTATION


def test_command_on_a_function_never_proposed_is_not_found() -> None:
    error = refused(initial_function(), cmd(ListFunction, OWNING_DEPT))
    assert isinstance(error, NotFound)
    assert error.code == "function_not_found"


# --- consultation, review, listing --------------------------------------------------------


def test_only_the_association_starts_consultation() -> None:
    state = run(propose())
    for outsider in (OWNING_DEPT, PROPOSER):
        assert refused(state, cmd(StartConsultation, outsider)).code == ("role_not_permitted")
    [event] = decide_function(state, cmd(StartConsultation, ASSOCIATION, note="met"))
    assert fold([event], state).status is Status.IN_CONSULTATION


def test_starting_consultation_twice_records_nothing() -> None:
    state = run(propose(), cmd(StartConsultation, ASSOCIATION))
    assert decide_function(state, cmd(StartConsultation, ASSOCIATION)) == []


def test_only_owning_department_lists_a_function() -> None:
    state = run(propose(), cmd(StartConsultation, ASSOCIATION))
    assert refused(state, cmd(ListFunction, OTHER_DEPT)).code == "not_owning_department"
    assert refused(state, cmd(ListFunction, ASSOCIATION)).code == "role_not_permitted"
    assert refused(state, cmd(ListFunction, PROPOSER)).code == "role_not_permitted"
    assert run(cmd(ListFunction, OWNING_DEPT), state=state).status is Status.LISTED


def test_re_listing_a_listed_function_records_no_events() -> None:
    assert decide_function(listed(), cmd(ListFunction, OWNING_DEPT)) == []


def test_listing_an_open_function_is_an_invalid_transition() -> None:
    error = refused(opened(), cmd(ListFunction, OWNING_DEPT))
    assert error.code == "invalid_transition"
    assert "open" in error.detail
    assert "ListFunction" in error.detail


def test_department_review_is_recorded_only_by_the_owning_department() -> None:
    state = run(qualification())
    review = cmd(RecordDepartmentReview, OTHER_DEPT, reference="R-1")
    assert refused(state, review).code == "not_owning_department"
    [event] = decide_function(state, cmd(RecordDepartmentReview, OWNING_DEPT, reference="R-1"))
    assert isinstance(event, DepartmentReviewRecorded)
    after = fold([event], state)
    assert after.review_recorded
    assert after.status is Status.PROPOSED


def test_recording_the_same_review_twice_records_nothing() -> None:
    state = run(qualification(), cmd(RecordDepartmentReview, OWNING_DEPT, reference="R-1"))
    same = cmd(RecordDepartmentReview, OWNING_DEPT, reference="R-1")
    assert decide_function(state, same) == []
    newer = cmd(RecordDepartmentReview, OWNING_DEPT, reference="R-2")
    assert len(decide_function(state, newer)) == 1


def test_review_cannot_be_recorded_once_the_function_is_open() -> None:
    review = cmd(RecordDepartmentReview, OWNING_DEPT, reference="R-9")
    assert refused(opened(), review).code == "invalid_transition"


# --- opening -----------------------------------------------------------------------------


def test_qualification_function_cannot_open_before_department_review() -> None:
    state = listed(qualification())
    error = refused(state, cmd(OpenForUndertaking, OWNING_DEPT))
    assert isinstance(error, DomainRuleViolated)
    assert error.code == "department_review_required"
    reviewed = run(cmd(RecordDepartmentReview, OWNING_DEPT, reference="R-1"), state=state)
    assert run(cmd(OpenForUndertaking, OWNING_DEPT), state=reviewed).status is Status.OPEN


def test_other_categories_open_without_department_review() -> None:
    conditions = ["registered in Sichuan", "ten senior engineers"]
    thresholds = [Threshold(name="members", requirement="at least 200")]
    [event] = decide_function(
        listed(),
        cmd(
            OpenForUndertaking,
            OWNING_DEPT,
            qualification_conditions=conditions,
            thresholds=thresholds,
            min_applicants=2,
            application_deadline="2024-06-30",
        ),
    )
    assert isinstance(event, FunctionOpened)
    state = fold([event], listed())
    assert state.status is Status.OPEN
    assert state.qualification_conditions == conditions
    assert state.thresholds == thresholds
    assert state.min_applicants == 2
    assert state.application_deadline == "2024-06-30"


def test_only_owning_department_opens_a_function() -> None:
    assert refused(listed(), cmd(OpenForUndertaking, ASSOCIATION)).code == ("role_not_permitted")
    assert refused(listed(), cmd(OpenForUndertaking, OTHER_DEPT)).code == ("not_owning_department")


@pytest.mark.parametrize(
    ("fields", "code"),
    [
        ({"min_applicants": 0}, "invalid_min_applicants"),
        ({"application_deadline": "30/06/2024"}, "invalid_deadline"),
        ({"application_deadline": "2024-05-05"}, "deadline_passed"),
    ],
)
def test_opening_with_bad_terms_is_refused(fields: dict[str, Any], code: str) -> None:
    assert refused(listed(), cmd(OpenForUndertaking, OWNING_DEPT, **fields)).code == code


def test_opening_a_proposed_function_is_an_invalid_transition() -> None:
    error = refused(run(propose()), cmd(OpenForUndertaking, OWNING_DEPT))
    assert error.code == "invalid_transition"
    assert "proposed" in error.detail


def test_reopening_with_the_same_terms_records_nothing() -> None:
    assert decide_function(opened(), cmd(OpenForUndertaking, OWNING_DEPT)) == []
    other_terms = cmd(OpenForUndertaking, OWNING_DEPT, min_applicants=3)
    assert refused(opened(), other_terms).code == "invalid_transition"


# --- amending ----------------------------------------------------------------------------


def test_amendment_records_only_the_fields_that_change() -> None:
    state = listed()
    amend = cmd(
        AmendFunction,
        ASSOCIATION,
        changes={
            "title": state.title,
            "scope": "whole",
            "thresholds": [{"name": "members", "requirement": ">= 100"}],
        },
        reason="department asked for whole transfer",
    )
    [event] = decide_function(state, amend)
    assert isinstance(event, FunctionAmended)
    assert event.changes == {
        "scope": "whole",
        "thresholds": [{"name": "members", "requirement": ">= 100"}],
    }
    after = fold([event], state)
    assert after.scope is Scope.WHOLE
    assert after.thresholds == [Threshold(name="members", requirement=">= 100")]
    assert after.title == state.title


def test_amending_to_the_current_values_records_nothing() -> None:
    state = listed()
    same = cmd(AmendFunction, OWNING_DEPT, changes={"scope": "partial"}, reason="x")
    assert decide_function(state, same) == []


def test_amending_an_unknown_field_is_refused() -> None:
    bad = cmd(AmendFunction, OWNING_DEPT, changes={"category": "award_nomination"}, reason="x")
    error = refused(listed(), bad)
    assert isinstance(error, InvalidInput)
    assert error.code == "unknown_field"


def test_amending_with_a_value_of_the_wrong_kind_is_refused() -> None:
    bad = cmd(AmendFunction, OWNING_DEPT, changes={"scope": "most"}, reason="x")
    assert refused(listed(), bad).code == "invalid_value"


def test_societies_and_other_departments_cannot_amend() -> None:
    change = {"title": "Renamed"}
    assert refused(listed(), cmd(AmendFunction, PROPOSER, changes=change, reason="x")).code == ("role_not_permitted")
    assert refused(listed(), cmd(AmendFunction, OTHER_DEPT, changes=change, reason="x")).code == "not_owning_department"


def test_amending_a_proposed_function_is_an_invalid_transition() -> None:
    amend = cmd(AmendFunction, OWNING_DEPT, changes={"title": "Renamed"}, reason="x")
    assert refused(run(propose()), amend).code == "invalid_transition"


# --- assignment, transfer, return ---------------------------------------------------------


def test_function_is_assigned_only_when_open() -> None:
    assign = cmd(AssignFunction, OWNING_DEPT, society_id="s-1", society_name="S")
    error = refused(listed(), assign)
    assert error.code == "invalid_transition"
    assert "listed" in error.detail and "AssignFunction" in error.detail


def test_assignment_to_a_society_not_recommended_is_refused() -> None:
    assign = cmd(AssignFunction, ASSOCIATION, society_id=PROPOSER.organisation, society_name="M")
    error = refused(opened(), assign)
    assert isinstance(error, DomainRuleViolated)
    assert error.code == "society_not_recommended"
    assert "none yet" in error.detail
    state = run(recommend(OTHER_SOCIETY.organisation), state=opened())
    error = refused(state, assign)
    assert error.code == "society_not_recommended"
    assert OTHER_SOCIETY.organisation in error.detail
    other = cmd(AssignFunction, ASSOCIATION, society_id=OTHER_SOCIETY.organisation, society_name="C")
    after = run(other, state=state)
    assert after.status is Status.ASSIGNED
    assert after.society_id == OTHER_SOCIETY.organisation


def test_only_the_system_records_a_recommendation() -> None:
    state = opened()
    for outsider in (ASSOCIATION, OWNING_DEPT, OTHER_DEPT, PROPOSER, OTHER_SOCIETY, EVALUATOR, PROVINCE_ASSOCIATION):
        error = refused(state, recommend(PROPOSER.organisation, by=outsider))
        assert isinstance(error, NotPermitted)
        assert error.code == "role_not_permitted"
    [event] = decide_function(state, recommend(PROPOSER.organisation, OTHER_SOCIETY.organisation, version=3))
    assert isinstance(event, RecommendationRecorded)
    assert event.function_id == FID
    assert event.society_ids == [PROPOSER.organisation, OTHER_SOCIETY.organisation]
    assert event.ranking_version == 3
    assert event.justification == "ranked by capability score"
    after = fold([event], state)
    assert after.status is Status.OPEN
    assert after.recommended_society_ids == [PROPOSER.organisation, OTHER_SOCIETY.organisation]


def test_recording_the_same_recommendation_twice_records_nothing() -> None:
    state = recommended()
    same = recommend(PROPOSER.organisation, OTHER_SOCIETY.organisation, version=2)
    assert decide_function(state, same) == []
    narrower = recommend(OTHER_SOCIETY.organisation, version=2)
    after = run(narrower, state=state)
    assert after.recommended_society_ids == [OTHER_SOCIETY.organisation]
    assign = cmd(AssignFunction, ASSOCIATION, society_id=PROPOSER.organisation, society_name="M")
    assert refused(after, assign).code == "society_not_recommended"


def test_reopening_clears_the_previous_recommendation() -> None:
    returned = run(cmd(ReturnFunction, PROPOSER, reason="lacks staff"), state=assigned())
    reopened = run(cmd(OpenForUndertaking, OWNING_DEPT), state=returned)
    assert reopened.status is Status.OPEN
    assert reopened.recommended_society_ids == []
    again = cmd(AssignFunction, ASSOCIATION, society_id=OTHER_SOCIETY.organisation, society_name="C")
    assert refused(reopened, again).code == "society_not_recommended"
    fresh = run(recommend(OTHER_SOCIETY.organisation, version=2), state=reopened)
    assert run(again, state=fresh).society_id == OTHER_SOCIETY.organisation


@pytest.mark.parametrize("status", [s for s in Status if s is not Status.OPEN])
def test_a_late_recommendation_for_a_function_no_longer_open_changes_nothing(
    status: Status,
) -> None:
    state = _state_in(status)
    late = recommend(OTHER_SOCIETY.organisation, version=7)
    assert decide_function(state, late) == []
    # the role is still checked: only a late recommendation is shrugged off
    assert refused(state, recommend(OTHER_SOCIETY.organisation, by=ASSOCIATION)).code == "role_not_permitted"


def test_assigning_the_same_society_again_records_nothing() -> None:
    again = cmd(AssignFunction, OWNING_DEPT, society_id=PROPOSER.organisation, society_name="M")
    assert decide_function(assigned(), again) == []
    another = cmd(AssignFunction, OWNING_DEPT, society_id="society-chemical", society_name="C")
    assert refused(assigned(), another).code == "invalid_transition"


def test_transfer_needs_an_assigned_society() -> None:
    transfer = cmd(MarkTransferred, ASSOCIATION, agreement_reference="TA-1")
    assert refused(opened(), transfer).code == "invalid_transition"
    state = run(transfer, state=assigned())
    assert state.status is Status.TRANSFERRED
    assert state.agreement_reference == "TA-1"
    assert decide_function(state, transfer) == []


def test_the_assigned_society_may_return_the_function() -> None:
    back = cmd(ReturnFunction, PROPOSER, reason="lacks staff")
    state = run(back, state=assigned())
    assert state.status is Status.RETURNED
    assert decide_function(state, back) == []


def test_another_society_cannot_return_a_function_it_does_not_hold() -> None:
    error = refused(assigned(), cmd(ReturnFunction, OTHER_SOCIETY, reason="x"))
    assert error.code == "not_assigned_society"


def test_returned_function_reopens_without_the_previous_society() -> None:
    returned = run(cmd(ReturnFunction, OWNING_DEPT, reason="x"), state=assigned())
    reopened = run(cmd(OpenForUndertaking, OWNING_DEPT), state=returned)
    assert reopened.status is Status.OPEN
    assert reopened.society_id is None


# --- withdrawal and delisting -------------------------------------------------------------


@pytest.mark.parametrize("by", [PROPOSER, ASSOCIATION, OWNING_DEPT])
def test_proposal_may_be_withdrawn_by_proposer_association_or_department(
    by: Principal,
) -> None:
    state = run(propose(), cmd(WithdrawFunction, by, reason="no longer needed"))
    assert state.status is Status.WITHDRAWN


def test_another_society_cannot_withdraw_a_proposal() -> None:
    error = refused(run(propose()), cmd(WithdrawFunction, OTHER_SOCIETY, reason="x"))
    assert error.code == "not_permitted_to_withdraw"


def test_once_listed_only_the_owning_department_withdraws() -> None:
    for by, code in [
        (PROPOSER, "role_not_permitted"),
        (ASSOCIATION, "role_not_permitted"),
        (OTHER_DEPT, "not_owning_department"),
    ]:
        assert refused(assigned(), cmd(WithdrawFunction, by, reason="x")).code == code
    state = run(cmd(WithdrawFunction, OWNING_DEPT, reason="x"), state=assigned())
    assert state.status is Status.WITHDRAWN


def test_who_may_withdraw_is_decided_before_the_state_is_examined() -> None:
    """A principal without the right is refused as such, never told the function's state."""
    returned = run(cmd(ReturnFunction, PROPOSER, reason="r"), state=assigned())
    delisted = run(cmd(DelistFunction, OWNING_DEPT, reason="r"), state=listed())
    for state in (returned, delisted):
        for by, code in [(PROPOSER, "role_not_permitted"), (ASSOCIATION, "role_not_permitted")]:
            assert refused(state, cmd(WithdrawFunction, by, reason="x")).code == code
        assert refused(state, cmd(WithdrawFunction, OTHER_DEPT, reason="x")).code == "not_owning_department"
        assert refused(state, cmd(WithdrawFunction, OWNING_DEPT, reason="x")).code == "invalid_transition"


def test_withdrawal_is_final_and_idempotent() -> None:
    state = run(propose(), cmd(WithdrawFunction, PROPOSER, reason="x"))
    assert decide_function(state, cmd(WithdrawFunction, PROPOSER, reason="x")) == []
    assert refused(state, cmd(ListFunction, OWNING_DEPT)).code == "invalid_transition"


def test_delisting_from_returned_and_not_from_assigned() -> None:
    delist = cmd(DelistFunction, OWNING_DEPT, reason="cancelled")
    assert refused(assigned(), delist).code == "invalid_transition"
    returned = run(cmd(ReturnFunction, ASSOCIATION, reason="x"), state=assigned())
    state = run(delist, state=returned)
    assert state.status is Status.DELISTED
    assert decide_function(state, delist) == []
    assert refused(state, cmd(OpenForUndertaking, OWNING_DEPT)).code == "invalid_transition"


# --- the whole lifecycle -----------------------------------------------------------------


def test_qualification_function_goes_from_proposal_to_transfer_and_back() -> None:
    steps: list[tuple[Command, Status]] = [
        (qualification(), Status.PROPOSED),
        (
            cmd(StartConsultation, ASSOCIATION, note="first meeting"),
            Status.IN_CONSULTATION,
        ),
        (
            cmd(RecordDepartmentReview, OWNING_DEPT, reference="DR-7"),
            Status.IN_CONSULTATION,
        ),
        (cmd(ListFunction, OWNING_DEPT), Status.LISTED),
        (
            cmd(AmendFunction, OWNING_DEPT, changes={"scope": "whole"}, reason="whole"),
            Status.LISTED,
        ),
        (
            cmd(
                OpenForUndertaking,
                OWNING_DEPT,
                qualification_conditions=["national-level society"],
                thresholds=[Threshold(name="experts", requirement="30 registered")],
            ),
            Status.OPEN,
        ),
        (recommend(PROPOSER.organisation, OTHER_SOCIETY.organisation), Status.OPEN),
        (
            cmd(
                AssignFunction,
                ASSOCIATION,
                society_id=PROPOSER.organisation,
                society_name="M",
            ),
            Status.ASSIGNED,
        ),
        (
            cmd(MarkTransferred, OWNING_DEPT, agreement_reference="TA-2024-3"),
            Status.TRANSFERRED,
        ),
        (cmd(ReturnFunction, PROPOSER, reason="cannot staff it"), Status.RETURNED),
        (cmd(OpenForUndertaking, OWNING_DEPT), Status.OPEN),
        (
            cmd(DelistFunction, OWNING_DEPT, reason="function cancelled"),
            Status.DELISTED,
        ),
    ]
    state = initial_function()
    history: list[Event] = []
    for command, expected in steps:
        events = decide_function(state, command)
        assert len(events) == 1, type(command).__name__
        history += events
        state = fold(events, state)
        assert state.status is expected
    assert state.scope is Scope.WHOLE
    assert state.review_reference == "DR-7"
    assert state.recommended_society_ids == []  # re-opened after the return
    stored = [(e.event_type, e.schema_version, e.model_dump(mode="json")) for e in history]
    assert fold([EVENTS.decode(*row) for row in stored]) == state


# --- published lists ---------------------------------------------------------------------


def entry(function_id: str, **overrides: Any) -> ListEntry:
    fields: dict[str, Any] = {
        "function_id": function_id,
        "title": f"Function {function_id}",
        "category": Category.SCIENCE_EVALUATION,
        "sub_kind": SubKind.PROJECT_POST_EVALUATION,
        "scope": Scope.WHOLE,
        "entrustment_mode": EntrustmentMode.DIRECTED_PURCHASE,
        "department": "dept-science",
        "status": Status.LISTED,
    }
    fields.update(overrides)
    return ListEntry(**fields)


def publish(entries: list[ListEntry], by: Principal = ASSOCIATION) -> PublishFunctionList:
    return PublishFunctionList(jurisdiction=DEYANG, entries=entries, issued_by=by, issued_at=AT)


def published(*lists: list[ListEntry]) -> FunctionListState:
    state = initial_list()
    for entries in lists:
        for event in decide_list(state, publish(entries)):
            state = evolve_list(state, event)
    return state


def test_list_versions_count_up_from_one() -> None:
    [first] = decide_list(initial_list(), publish([entry("b"), entry("a")]))
    assert isinstance(first, FunctionListPublished)
    assert first.version == 1
    assert [e.function_id for e in first.entries] == ["a", "b"]
    state = evolve_list(initial_list(), first)
    [second] = decide_list(state, publish([entry("a"), entry("c")], by=OWNING_DEPT))
    assert isinstance(second, FunctionListPublished)
    assert second.version == 2


def test_an_empty_first_list_is_still_published() -> None:
    assert published([]).version == 1


def test_republishing_the_same_entries_in_any_order_records_nothing() -> None:
    state = published([entry("a"), entry("b")])
    assert decide_list(state, publish([entry("b"), entry("a")])) == []
    changed = [entry("a"), entry("b", status=Status.OPEN)]
    assert len(decide_list(state, publish(changed))) == 1


def test_societies_do_not_publish_lists() -> None:
    with pytest.raises(NotPermitted) as caught:
        decide_list(initial_list(), publish([], by=PROPOSER))
    assert caught.value.code == "role_not_permitted"


def test_list_outside_jurisdiction_is_refused() -> None:
    with pytest.raises(NotPermitted) as caught:
        decide_list(initial_list(), publish([], by=NEIGHBOUR_ASSOCIATION))
    assert caught.value.code == "outside_jurisdiction"


def test_a_list_stream_keeps_its_jurisdiction() -> None:
    state = published([entry("a")])
    other = PublishFunctionList(jurisdiction="510100", entries=[], issued_by=PROVINCE_ASSOCIATION, issued_at=AT)
    with pytest.raises(DomainRuleViolated) as caught:
        decide_list(state, other)
    assert caught.value.code == "jurisdiction_mismatch"


def test_a_function_listed_twice_in_one_version_is_refused() -> None:
    with pytest.raises(InvalidInput) as caught:
        decide_list(initial_list(), publish([entry("a"), entry("a", title="Again")]))
    assert caught.value.code == "duplicate_entry"


def test_list_entry_reflects_the_function_as_it_stands() -> None:
    item = list_entry_of(opened())
    assert item.function_id == FID
    assert item.status is Status.OPEN
    assert item.department == OWNING_DEPT.organisation
    with pytest.raises(NotFound):
        list_entry_of(initial_function())


def test_diff_names_added_removed_and_changed_entries() -> None:
    older = [entry("a"), entry("b"), entry("c")]
    newer = [entry("d"), entry("c"), entry("b", status=Status.OPEN, title="B2")]
    diff = diff_lists(older, newer)
    assert [e.function_id for e in diff.added] == ["d"]
    assert [e.function_id for e in diff.removed] == ["a"]
    [change] = diff.changed
    assert change.function_id == "b"
    assert change.fields == {
        "title": {"from": "Function b", "to": "B2"},
        "status": {"from": "listed", "to": "open"},
    }


def test_diff_of_a_list_with_itself_is_empty() -> None:
    diff = diff_lists([entry("a"), entry("b")], [entry("b"), entry("a")])
    assert (diff.added, diff.removed, diff.changed) == ([], [], [])


_ENTRY_POOL = [
    entry(fid, **variant)
    for fid in "abcde"
    for variant in (
        {},
        {"status": Status.OPEN},
        {"thresholds": [Threshold(name="members", requirement=">= 50")]},
    )
]


def _unique(entries: list[ListEntry]) -> list[ListEntry]:
    return list({e.function_id: e for e in entries}.values())


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.sampled_from(_ENTRY_POOL), max_size=6).map(_unique),
    st.lists(st.sampled_from(_ENTRY_POOL), max_size=6).map(_unique),
)
def test_applying_a_diff_to_the_older_list_gives_the_newer(older: list[ListEntry], newer: list[ListEntry]) -> None:
    diff = diff_lists(older, newer)
    rebuilt = {e.function_id: e.model_dump(mode="json") for e in older}
    for gone in diff.removed:
        del rebuilt[gone.function_id]
    for change in diff.changed:
        for name, values in change.fields.items():
            assert rebuilt[change.function_id][name] == values["from"]
            rebuilt[change.function_id][name] = values["to"]
    for new in diff.added:
        assert new.function_id not in rebuilt
        rebuilt[new.function_id] = new.model_dump(mode="json")
    assert rebuilt == {e.function_id: e.model_dump(mode="json") for e in newer}


# --- properties over arbitrary command sequences ------------------------------------------

# Written out here, independently of the decider, from DOMAIN.md's lifecycle.
ALLOWED: dict[Status | None, set[Status]] = {
    None: {Status.PROPOSED},
    Status.PROPOSED: {Status.IN_CONSULTATION, Status.LISTED, Status.WITHDRAWN},
    Status.IN_CONSULTATION: {Status.LISTED, Status.WITHDRAWN},
    Status.LISTED: {Status.OPEN, Status.WITHDRAWN, Status.DELISTED},
    Status.OPEN: {Status.ASSIGNED, Status.WITHDRAWN, Status.DELISTED},
    Status.ASSIGNED: {Status.TRANSFERRED, Status.RETURNED, Status.WITHDRAWN},
    Status.TRANSFERRED: {Status.RETURNED, Status.WITHDRAWN},
    Status.RETURNED: {Status.OPEN, Status.DELISTED},
    Status.WITHDRAWN: set(),
    Status.DELISTED: set(),
}

_PAIRS = [
    (Category.TECHNICAL_STANDARD, SubKind.GROUP_STANDARD),
    (Category.QUALIFICATION_CERTIFICATION, SubKind.LEVEL_EVALUATION),
    (Category.QUALIFICATION_CERTIFICATION, SubKind.ACCESS),
    (Category.SCIENCE_EVALUATION, SubKind.GROUP_STANDARD),
]

Builder = Callable[[Principal, st.DataObject], Command]

BUILDERS: dict[str, Builder] = {
    "propose": lambda p, d: propose(p, category=(pair := d.draw(st.sampled_from(_PAIRS)))[0], sub_kind=pair[1]),
    "consult": lambda p, d: cmd(StartConsultation, p),
    "review": lambda p, d: cmd(RecordDepartmentReview, p, reference=d.draw(st.sampled_from(["R-1", "R-2"]))),
    "list": lambda p, d: cmd(ListFunction, p),
    "amend": lambda p, d: cmd(
        AmendFunction,
        p,
        changes=d.draw(
            st.sampled_from(
                [
                    {"scope": "whole"},
                    {"title": "Renamed"},
                    {"thresholds": [{"name": "members", "requirement": ">= 100"}]},
                    {"qualification_conditions": ["accredited"]},
                    {"entrustment_mode": "fiscal_subsidy"},
                    {"owner": "x"},
                ]
            )
        ),
        reason="r",
    ),
    "open": lambda p, d: cmd(OpenForUndertaking, p, min_applicants=d.draw(st.sampled_from([1, 1, 1, 2, 0]))),
    "recommend": lambda p, d: cmd(
        RecordRecommendation,
        p,
        society_ids=d.draw(
            st.sampled_from(
                [
                    [PROPOSER.organisation],
                    [OTHER_SOCIETY.organisation],
                    [PROPOSER.organisation, OTHER_SOCIETY.organisation],
                    [],
                ]
            )
        ),
        ranking_version=d.draw(st.integers(1, 3)),
    ),
    "assign": lambda p, d: cmd(
        AssignFunction,
        p,
        society_id=(s := d.draw(st.sampled_from([PROPOSER, OTHER_SOCIETY]))).organisation,
        society_name=s.subject,
    ),
    "transfer": lambda p, d: cmd(MarkTransferred, p, agreement_reference="TA-1"),
    "return": lambda p, d: cmd(ReturnFunction, p, reason="r"),
    "withdraw": lambda p, d: cmd(WithdrawFunction, p, reason="r"),
    "delist": lambda p, d: cmd(DelistFunction, p, reason="r"),
}

# Biases generation toward progress so that deep states are reached; it asserts nothing.
LIKELY_NEXT: dict[Status | None, list[str]] = {
    None: ["propose"],
    Status.PROPOSED: ["consult", "review", "list"],
    Status.IN_CONSULTATION: ["review", "list"],
    Status.LISTED: ["review", "open", "amend"],
    Status.OPEN: ["recommend", "assign", "assign", "amend"],
    Status.ASSIGNED: ["transfer", "return"],
    Status.TRANSFERRED: ["return", "withdraw"],
    Status.RETURNED: ["open", "delist"],
    Status.WITHDRAWN: list(BUILDERS),
    Status.DELISTED: list(BUILDERS),
}
LIKELY_ACTORS: dict[str, list[Principal]] = {
    "propose": [PROPOSER, ASSOCIATION, OWNING_DEPT],
    "consult": [ASSOCIATION],
    "review": [OWNING_DEPT],
    "list": [OWNING_DEPT],
    "amend": [OWNING_DEPT, ASSOCIATION],
    "open": [OWNING_DEPT],
    "recommend": [SYSTEM],
    "assign": [OWNING_DEPT, ASSOCIATION],
    "transfer": [OWNING_DEPT, ASSOCIATION],
    "return": [PROPOSER, ASSOCIATION, OWNING_DEPT],
    "withdraw": [OWNING_DEPT, PROPOSER],
    "delist": [OWNING_DEPT],
}


def _likely_next(state: FunctionState) -> list[str]:
    # an open function is assigned only after a recommendation, so ask for one first
    if state.status is Status.OPEN and not state.recommended_society_ids:
        return ["recommend", "recommend", "amend"]
    return LIKELY_NEXT[state.status]


KNOWN_CODES = {
    "read_only_role",
    "role_not_permitted",
    "outside_jurisdiction",
    "not_owning_department",
    "not_assigned_society",
    "not_permitted_to_withdraw",
    "function_not_found",
    "function_exists",
    "invalid_transition",
    "sub_kind_mismatch",
    "access_type_qualification_refused",
    "department_review_required",
    "unknown_field",
    "invalid_min_applicants",
    "society_not_recommended",
}


def _state_in(status: Status) -> FunctionState:
    withdraw = cmd(WithdrawFunction, PROPOSER, reason="r")
    build: dict[Status, Callable[[], FunctionState]] = {
        Status.PROPOSED: lambda: run(propose()),
        Status.IN_CONSULTATION: lambda: run(propose(), cmd(StartConsultation, ASSOCIATION)),
        Status.LISTED: listed,
        Status.OPEN: recommended,
        Status.ASSIGNED: assigned,
        Status.TRANSFERRED: lambda: run(
            cmd(MarkTransferred, ASSOCIATION, agreement_reference="TA-1"),
            state=assigned(),
        ),
        Status.RETURNED: lambda: run(cmd(ReturnFunction, PROPOSER, reason="r"), state=assigned()),
        Status.WITHDRAWN: lambda: run(propose(), withdraw),
        Status.DELISTED: lambda: run(cmd(DelistFunction, OWNING_DEPT, reason="r"), state=listed()),
    }
    return build[status]()


@pytest.mark.parametrize("status", list(Status))
def test_no_command_moves_a_function_along_a_transition_the_lifecycle_lacks(
    status: Status,
) -> None:
    state = _state_in(status)
    assert state.status is status
    for actor in (OWNING_DEPT, ASSOCIATION, PROPOSER):
        for command in [
            cmd(StartConsultation, actor),
            cmd(RecordDepartmentReview, actor, reference="R-9"),
            cmd(ListFunction, actor),
            cmd(OpenForUndertaking, actor, min_applicants=2),
            recommend("society-chemical", version=9),
            cmd(AssignFunction, actor, society_id="society-chemical", society_name="C"),
            cmd(MarkTransferred, actor, agreement_reference="TA-9"),
            cmd(ReturnFunction, actor, reason="r"),
            cmd(WithdrawFunction, actor, reason="r"),
            cmd(DelistFunction, actor, reason="r"),
        ]:
            try:
                events = decide_function(state, command)
            except ChengnengError:
                continue
            after = fold(events, state)
            assert after.status == status or after.status in ALLOWED[status], command


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_any_command_sequence_replays_to_the_state_the_decider_saw(
    data: st.DataObject,
) -> None:
    live = initial_function()
    replayed = initial_function()  # built only from events as stored and read back
    for _ in range(data.draw(st.integers(1, 30))):
        kind = data.draw(st.sampled_from(_likely_next(live) * 4 + list(BUILDERS)))
        actor = data.draw(st.sampled_from(LIKELY_ACTORS[kind] * 6 + ALL_PRINCIPALS))
        command = BUILDERS[kind](actor, data)
        try:
            events = decide_function(live, command)
        except ChengnengError as error:
            assert error.code in KNOWN_CODES
            continue
        for event in events:
            before = live.status
            if isinstance(event, FunctionAssigned):
                assert event.society_id in live.recommended_society_ids
            live = evolve_function(live, event)
            assert live.status == before or live.status in ALLOWED[before]
            row = (
                event.event_type,
                event.schema_version,
                event.model_dump(mode="json"),
            )
            replayed = evolve_function(replayed, EVENTS.decode(*row))
        assert replayed == live
        assert live.sub_kind is not SubKind.ACCESS
        if events:
            # a retried command whose effect now holds records nothing more
            assert decide_function(live, command) == []


@settings(max_examples=200, deadline=None)
@given(
    actor=st.sampled_from(ALL_PRINCIPALS),
    title=st.text(max_size=20),
    scope=st.sampled_from(Scope),
    mode=st.sampled_from(EntrustmentMode),
)
def test_access_type_qualification_function_never_comes_into_being(
    actor: Principal, title: str, scope: Scope, mode: EntrustmentMode
) -> None:
    command = propose(
        actor,
        title=title,
        scope=scope,
        entrustment_mode=mode,
        category=Category.QUALIFICATION_CERTIFICATION,
        sub_kind=SubKind.ACCESS,
    )
    with pytest.raises((DomainRuleViolated, NotPermitted)) as caught:
        decide_function(initial_function(), command)
    assert caught.value.code in {
        "access_type_qualification_refused",
        "read_only_role",
        "role_not_permitted",
        "outside_jurisdiction",
    }


def test_every_event_type_is_registered_for_decoding() -> None:
    assert set(EVENTS.by_type) == {
        "FunctionProposed",
        "ConsultationStarted",
        "DepartmentReviewRecorded",
        "FunctionListed",
        "FunctionAmended",
        "FunctionOpened",
        "RecommendationRecorded",
        "FunctionAssigned",
        "FunctionTransferred",
        "FunctionReturned",
        "FunctionWithdrawn",
        "FunctionDelisted",
        "FunctionListPublished",
    }
