"""HTTP interface of the supervision service: the pilot-project case, from agreement to summary.

Cases open by themselves when the registry assigns a function (``policies``); everything
after that is a command here. Every route needs a bearer token; the decider checks who
may do what on which case (the department, the society, the association, a commissioned
evaluator, the finance bureau).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query

from services.supervision import domain
from services.supervision.domain import CASE, case_stream
from services.supervision.projections import overdue_items
from shared import store
from shared.api import EntityId, add_command_route
from shared.envelope import GENESIS_HASH
from shared.errors import InvalidInput, NotFound
from shared.http import CurrentPrincipal, Limit, Offset
from shared.jurisdiction import ancestors_sql
from shared.messages import Command
from shared.runtime import Context

router = APIRouter()

_ROUTES: list[tuple[str, type[Command], str, str]] = [
    # (path, command, tag, summary)
    ("plans", domain.DraftPlan, "plan", "Draft a new version of the implementation plan (society)"),
    ("plan-submissions", domain.SubmitPlan, "plan", "Submit the latest plan version for review (society)"),
    ("plan-approvals", domain.ApprovePlan, "plan", "Approve the submitted plan (department)"),
    ("plan-returns", domain.ReturnPlan, "plan", "Return the submitted plan with reasons (department)"),
    ("leader", domain.AppointLeader, "organisation", "Appoint the project leader (society; board resolution)"),
    ("major-matters", domain.DecideMajorMatter, "organisation", "Record a major matter decided by the board"),
    ("team-members", domain.AddTeamMember, "organisation", "Add a member of the implementation team"),
    ("team-member-removals", domain.RemoveTeamMember, "organisation", "Remove a team member"),
    ("agreements", domain.DraftAgreement, "agreement", "Draft (or amend) the tripartite task agreement"),
    ("agreement-signatures", domain.SignAgreement, "agreement", "Sign the latest agreement version for a party"),
    ("deployment", domain.StartDeployment, "phases", "Start deployment and mobilisation (association)"),
    ("implementation", domain.StartImplementation, "phases", "Start implementation (association)"),
    ("summary", domain.StartSummary, "phases", "Start the systematic summary (association)"),
    ("closure", domain.CloseCase, "phases", "Close the case after its summary report (association)"),
    ("suspension", domain.SuspendCase, "phases", "Suspend the case (association)"),
    ("resumption", domain.ResumeCase, "phases", "Resume a suspended case (association)"),
    ("milestone-reports", domain.ReportMilestone, "progress", "Report on a milestone (society)"),
    ("indicator-measurements", domain.MeasureIndicator, "progress", "Measure an assessment indicator (society)"),
    (
        "government-feedback",
        domain.GiveGovernmentFeedback,
        "progress",
        "Give opinions and suggestions (department, policy support)",
    ),
    ("supervision-meetings", domain.HoldSupervisionMeeting, "progress", "Record a supervision meeting (association)"),
    ("commendation", domain.CommendProject, "decisions", "Commend the project as an example"),
    ("rectification-orders", domain.OrderRectification, "decisions", "Order rectification with a deadline"),
    ("rectification-reports", domain.ReportRectification, "decisions", "Report the rectification done (society)"),
    ("rectification-acceptances", domain.AcceptRectification, "decisions", "Accept a reported rectification"),
    ("rectification-rejections", domain.RejectRectification, "decisions", "Reject a reported rectification"),
    ("warnings", domain.IssueWarning, "decisions", "Issue a warning"),
    ("termination", domain.TerminateProject, "decisions", "Terminate the project (the function is returned)"),
    ("funding-allocations", domain.AllocateFunding, "funding", "Allocate funding (fen)"),
    ("disbursements", domain.DisburseFunding, "funding", "Disburse funding (fen)"),
    ("funding-adjustments", domain.AdjustFunding, "funding", "Adjust funding up or down (fen)"),
    ("awards", domain.GrantAward, "funding", "Grant an award in place of a subsidy (fen)"),
    ("self-evaluation", domain.SubmitSelfEvaluation, "evaluation", "Submit the performance self-evaluation"),
    ("evaluator-commission", domain.CommissionEvaluator, "evaluation", "Commission a third-party evaluator"),
    ("third-party-evaluations", domain.SubmitThirdPartyEvaluation, "evaluation", "Submit the third-party evaluation"),
    ("finance-evaluations", domain.SubmitFinanceEvaluation, "evaluation", "Submit a finance-bureau evaluation"),
    ("satisfaction-surveys", domain.SurveySatisfaction, "evaluation", "Record a satisfaction survey's counts"),
    ("evaluation", domain.CompleteEvaluation, "evaluation", "Compute the performance score and grade"),
    ("summary-report", domain.SubmitSummaryReport, "summary", "Submit the project summary report (society)"),
    ("typical-case", domain.DesignateTypicalCase, "summary", "Designate the project a typical case"),
]

for _path, _command, _tag, _summary in _ROUTES:
    add_command_route(
        router,
        f"/cases/{{project_id}}/{_path}",
        _command,
        CASE,
        case_stream,
        id_field="project_id",
        summary=_summary,
        tags=[_tag],
    )


def _view(state: domain.CaseState) -> dict[str, Any]:
    """The case with what is computed from it: ledger, satisfaction rates, overdue items."""
    return {
        **state.model_dump(mode="json"),
        "ledger": domain.ledger(state).model_dump(mode="json"),
        "satisfaction_rates": {k.value: str(v) for k, v in domain.satisfaction_rate(state).items()},
        "overdue": overdue_items(state),
        "effective_version": state.effective_version,
        "scoring_method": domain.SCORING_METHOD,
    }


@router.get("/cases", tags=["cases"], summary="Cases by jurisdiction, phase, department or society")
async def list_cases(
    ctx: Context,
    principal: CurrentPrincipal,
    jurisdiction: Annotated[str | None, Query(pattern=r"^[1-9][0-9]{5}$")] = None,
    include_subtree: bool = False,
    phase: domain.Phase | None = None,
    department: str | None = None,
    society_id: str | None = None,
    overdue: bool = False,
    limit: Limit = 100,
    offset: Offset = 0,
) -> dict[str, Any]:
    clauses: list[str] = []
    args: list[Any] = []
    if jurisdiction:
        args.append(jurisdiction)
        clauses.append(f"${len(args)} = ANY({ancestors_sql()})" if include_subtree else f"jurisdiction = ${len(args)}")
    for column, value in (
        ("phase", phase.value if phase else None),
        ("department", department),
        ("society_id", society_id),
    ):
        if value is not None:
            args.append(value)
            clauses.append(f"{column} = ${len(args)}")
    if overdue:
        clauses.append("overdue_items > 0")
    where = " AND ".join(clauses) or "true"
    args += [limit, offset]
    rows = await ctx.pool.fetch(
        f"""SELECT project_id, function_id, society_id, department, jurisdiction, title, phase, overdue_items,
                   open_rectifications, grade, typical_case, updated_at, count(*) OVER () AS total
            FROM cases WHERE {where} ORDER BY updated_at DESC, project_id
            LIMIT ${len(args) - 1} OFFSET ${len(args)}""",
        *args,
    )
    items = [{k: v for k, v in dict(r).items() if k != "total"} for r in rows]
    for item in items:
        item["updated_at"] = item["updated_at"].isoformat()
    return {"total": rows[0]["total"] if rows else 0, "limit": limit, "offset": offset, "items": items}


@router.get("/cases/{project_id}", tags=["cases"], summary="One case with its full timeline")
async def get_case(project_id: EntityId, ctx: Context, principal: CurrentPrincipal) -> dict[str, Any]:
    state, version, envelopes = await ctx.store.load(CASE, case_stream(project_id))
    if state.phase is None:
        raise NotFound("case_not_found", f"case {project_id} does not exist")
    return {**_view(state), "version": version, "timeline": [e.as_json() for e in envelopes]}


@router.get(
    "/cases/{project_id}/as-of",
    tags=["cases"],
    summary="The case as it stood at a past moment, rebuilt from the events that had happened by then",
)
async def case_as_of(
    project_id: EntityId,
    ctx: Context,
    principal: CurrentPrincipal,
    at: Annotated[datetime, Query(description="ISO 8601 moment with its time zone")],
) -> dict[str, Any]:
    if at.tzinfo is None:
        raise InvalidInput("naive_time", "give the moment with its time zone, e.g. 2026-05-01T00:00:00+08:00")
    state, applied = await ctx.store.state_as_of(CASE, case_stream(project_id), at)
    if applied == 0 and await store.stream_head(ctx.store.pool, case_stream(project_id)) == (0, GENESIS_HASH):
        raise NotFound("case_not_found", f"case {project_id} does not exist")
    if state.phase is None:
        raise NotFound("case_not_yet_open", f"case {project_id} was not open at {at.isoformat()}")
    return {**_view(state), "as_of": at.isoformat(), "version": applied}


@router.get("/overdue", tags=["cases"], summary="Overdue milestones and rectifications, per case")
async def overdue(
    ctx: Context,
    principal: CurrentPrincipal,
    jurisdiction: Annotated[str, Query(pattern=r"^[1-9][0-9]{5}$")],
) -> dict[str, Any]:
    rows = await ctx.pool.fetch(
        f"""SELECT project_id, title, society_id, department, jurisdiction, state FROM cases
            WHERE overdue_items > 0 AND $1 = ANY({ancestors_sql()}) ORDER BY project_id""",
        jurisdiction,
    )
    return {
        "jurisdiction": jurisdiction,
        "cases": [
            {
                "project_id": r["project_id"],
                "title": r["title"],
                "society_id": r["society_id"],
                "department": r["department"],
                "jurisdiction": r["jurisdiction"],
                "overdue": overdue_items(domain.CaseState.model_validate(r["state"])),
            }
            for r in rows
        ],
    }
