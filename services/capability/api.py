"""HTTP interface of the capability service: societies, assessments, classification, selection.

Commands are POSTs whose bodies are derived from the domain commands; queries are GETs.
Every route needs a bearer token; the deciders check roles and jurisdictions.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from services.capability import domain
from services.capability.domain import SELECTION, SOCIETY, selection_stream, society_stream
from shared import jurisdiction as jurisdictions
from shared.api import (
    CommandAccepted,
    EntityId,
    JurisdictionCode,
    add_command_route,
    add_create_route,
    build_command,
    run,
)
from shared.errors import NotFound
from shared.http import CurrentPrincipal, IdempotencyKey, Limit, Offset
from shared.jurisdiction import ancestors_sql
from shared.messages import Command
from shared.runtime import Context

router = APIRouter()

# --- societies -----------------------------------------------------------------------

add_create_route(
    router,
    "/societies",
    domain.RegisterSociety,
    SOCIETY,
    society_stream,
    id_field="society_id",
    summary="Register a society under the association (association)",
    tags=["societies"],
)


def _society_route(path: str, command_cls: type[Command], summary: str) -> None:
    add_command_route(
        router,
        f"/societies/{{society_id}}/{path}",
        command_cls,
        SOCIETY,
        society_stream,
        id_field="society_id",
        summary=summary,
        tags=["societies"],
    )


_society_route("reconfirmation", domain.ReconfirmRegistration, "Record the re-confirmation of registration")
_society_route("merger", domain.MergeSociety, "Record that the society merged into another")
_society_route("dissolution", domain.DissolveSociety, "Record that the society was dissolved")
_society_route("governance", domain.RecordGovernance, "Record governance as it now stands (a full snapshot)")
_society_route("decoupling", domain.RecordDecoupling, "Record progress of one decoupling line")
_society_route("survey-answers", domain.AnswerSurvey, "Record the willingness and self-assessment survey")
_society_route("assessments", domain.AssessCapability, "Assess capability on the three standards")
_society_route("classification", domain.ClassifySociety, "Classify: strengthen, newly establish, stabilise, exit")
_society_route("brand-designation", domain.DesignateBrandSociety, "Designate as a brand society")
_society_route("brand-revocation", domain.RevokeBrandSociety, "Revoke the brand-society designation")


@router.get("/societies", tags=["societies"], summary="Societies by jurisdiction, class and relation")
async def list_societies(
    ctx: Context,
    principal: CurrentPrincipal,
    jurisdiction: Annotated[str | None, Query(pattern=r"^[1-9][0-9]{5}$")] = None,
    include_subtree: bool = False,
    society_class: domain.SocietyClass | None = None,
    relation: domain.Relation | None = None,
    status_: Annotated[domain.SocietyStatus | None, Query(alias="status")] = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> dict[str, Any]:
    clauses: list[str] = []
    args: list[Any] = []
    if jurisdiction:
        args.append(jurisdiction)
        clauses.append(f"${len(args)} = ANY({ancestors_sql()})" if include_subtree else f"jurisdiction = ${len(args)}")
    for column, value in (("society_class", society_class), ("relation", relation), ("status", status_)):
        if value is not None:
            args.append(value.value)
            clauses.append(f"{column} = ${len(args)}")
    where = " AND ".join(clauses) or "true"
    args += [limit, offset]
    rows = await ctx.pool.fetch(
        f"""SELECT state, count(*) OVER () AS total FROM societies WHERE {where}
            ORDER BY jurisdiction, society_id LIMIT ${len(args) - 1} OFFSET ${len(args)}""",
        *args,
    )
    return {
        "total": rows[0]["total"] if rows else 0,
        "limit": limit,
        "offset": offset,
        "items": [_society_view(r["state"]) for r in rows],
    }


def _society_view(state: dict[str, Any]) -> dict[str, Any]:
    current = domain.SocietyState.model_validate(state).current_assessment()
    return {**state, "current_assessment": current.model_dump(mode="json") if current else None}


@router.get("/societies/{society_id}", tags=["societies"], summary="One society with its full history")
async def get_society(society_id: EntityId, ctx: Context, principal: CurrentPrincipal) -> dict[str, Any]:
    state, version, envelopes = await ctx.store.load(SOCIETY, society_stream(society_id))
    if state.status is None:
        raise NotFound("society_not_found", f"society {society_id} does not exist")
    return {
        **_society_view(state.model_dump(mode="json")),
        "version": version,
        "history": [e.as_json() for e in envelopes],
    }


@router.get(
    "/statistics/{jurisdiction}",
    tags=["statistics"],
    summary="Counts of societies in a jurisdiction and its subtree (the figures of the city report)",
)
async def statistics(jurisdiction: JurisdictionCode, ctx: Context, principal: CurrentPrincipal) -> dict[str, Any]:
    jurisdictions.validate(jurisdiction)
    row = await ctx.pool.fetchrow(
        f"""SELECT count(*) AS societies,
                count(*) FILTER (WHERE relation = 'supervised') AS supervised,
                count(*) FILTER (WHERE relation = 'group_member') AS group_members,
                count(*) FILTER (WHERE willingness = 'very_willing') AS very_willing,
                count(*) FILTER (WHERE willingness IN ('very_willing', 'willing')) AS willing,
                count(*) FILTER (WHERE self_assessment = 'fully_capable') AS fully_capable,
                count(*) FILTER (WHERE self_assessment = 'partly_capable') AS partly_capable,
                count(*) FILTER (WHERE participating) AS participating,
                count(*) FILTER (WHERE brand) AS brand_societies,
                count(*) FILTER (WHERE society_class = 'strengthen') AS class_strengthen,
                count(*) FILTER (WHERE society_class = 'newly_establish') AS class_newly_establish,
                count(*) FILTER (WHERE society_class = 'stabilise') AS class_stabilise,
                count(*) FILTER (WHERE society_class = 'exit') AS class_exit
            FROM societies WHERE status = 'active' AND $1 = ANY({ancestors_sql()})""",
        jurisdiction,
    )
    assert row is not None
    return {"jurisdiction": jurisdiction, "scope": "active societies in the jurisdiction and below", **dict(row)}


# --- selection -----------------------------------------------------------------------


def _selection_route(path: str, command_cls: type[Command], summary: str) -> None:
    add_command_route(
        router,
        f"/selections/{{function_id}}/{path}",
        command_cls,
        SELECTION,
        selection_stream,
        id_field="function_id",
        summary=summary,
        tags=["selection"],
    )


_selection_route("applications", domain.SubmitApplication, "Apply to undertake an open function (the society)")
_selection_route("withdrawals", domain.WithdrawApplication, "Withdraw an application (the society)")
_selection_route("recommendation", domain.IssueRecommendation, "Recommend ranked societies (association)")


@router.post(
    "/selections/{function_id}/ranking",
    response_model=CommandAccepted,
    tags=["selection"],
    summary="Rank the applicants by the published scoring method, from the societies' current records",
)
async def compute_ranking(
    function_id: EntityId, ctx: Context, principal: CurrentPrincipal, key: IdempotencyKey
) -> dict[str, Any]:
    selection, _, _ = await ctx.store.load(SELECTION, selection_stream(function_id))
    snapshots = []
    for society_id in selection.applicants:
        society, _, _ = await ctx.store.load(SOCIETY, society_stream(society_id))
        if society.status is not None:
            snapshots.append(domain.snapshot_of(society))
    command = build_command(domain.ComputeRanking, principal, function_id=function_id, snapshots=snapshots)
    return await run(ctx, SELECTION, selection_stream(function_id), command, key)


@router.get("/selections", tags=["selection"], summary="Selections by jurisdiction and status")
async def list_selections(
    ctx: Context,
    principal: CurrentPrincipal,
    jurisdiction: Annotated[str | None, Query(pattern=r"^[1-9][0-9]{5}$")] = None,
    status_: Annotated[domain.SelectionStatus | None, Query(alias="status")] = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> dict[str, Any]:
    rows = await ctx.pool.fetch(
        """SELECT function_id, jurisdiction, status, applicants, ranking_version, updated_at,
                  count(*) OVER () AS total
           FROM selections WHERE ($1::text IS NULL OR jurisdiction = $1) AND ($2::text IS NULL OR status = $2)
           ORDER BY updated_at DESC LIMIT $3 OFFSET $4""",
        jurisdiction,
        status_.value if status_ else None,
        limit,
        offset,
    )
    items = [{k: v for k, v in dict(r).items() if k != "total"} for r in rows]
    for item in items:
        item["updated_at"] = item["updated_at"].isoformat()
    return {"total": rows[0]["total"] if rows else 0, "limit": limit, "offset": offset, "items": items}


@router.get(
    "/selections/{function_id}",
    tags=["selection"],
    summary="One function's selection: applicants, the latest ranking with every breakdown, the recommendation",
)
async def get_selection(function_id: EntityId, ctx: Context, principal: CurrentPrincipal) -> dict[str, Any]:
    state, version, envelopes = await ctx.store.load(SELECTION, selection_stream(function_id))
    if state.status is None:
        raise NotFound("selection_not_found", f"no selection was opened for function {function_id}")
    return {
        **state.model_dump(mode="json"),
        "scoring_method": domain.SCORING_METHOD,
        "version": version,
        "history": [e.as_json() for e in envelopes],
    }
