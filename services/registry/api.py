"""HTTP interface of the registry: commands are POSTs, queries are GETs.

Every command body is derived from its domain command (``command_body``), so the API
and the decider cannot drift apart. All routes need a bearer token; reads are open to
every role (the list is meant to be transparent), writes are checked by the decider.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from services.registry import domain
from services.registry.domain import FUNCTION, FUNCTION_LIST, function_stream, list_stream
from services.registry.projections import ON_THE_LIST
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
from shared.errors import InvalidInput, NotFound
from shared.http import PG_INTEGER_MAX, CurrentPrincipal, IdempotencyKey, Limit, Offset, command_body
from shared.jurisdiction import ancestors_sql
from shared.messages import Command
from shared.runtime import Context

router = APIRouter()

FunctionId = EntityId

# --- commands on one function --------------------------------------------------------

add_create_route(
    router,
    "/functions",
    domain.ProposeFunction,
    FUNCTION,
    function_stream,
    id_field="function_id",
    summary="Propose a transferable function (society, association or department)",
    tags=["functions"],
)


def _function_route(path: str, command_cls: type[Command], summary: str) -> None:
    add_command_route(
        router,
        f"/functions/{{function_id}}/{path}",
        command_cls,
        FUNCTION,
        function_stream,
        id_field="function_id",
        summary=summary,
        tags=["functions"],
    )


_function_route("consultation", domain.StartConsultation, "Start consultation with the owning department (association)")
_function_route("department-review", domain.RecordDepartmentReview, "Record the department's review and confirmation")
_function_route("listing", domain.ListFunction, "List the function as transferable (owning department)")
_function_route("amendments", domain.AmendFunction, "Amend a listed or open function")
_function_route("opening", domain.OpenForUndertaking, "Open for undertaking with conditions and thresholds")
_function_route("assignment", domain.AssignFunction, "Assign the open function to a recommended society")
_function_route("transfer", domain.MarkTransferred, "Record that the task agreement is in force")
_function_route("return", domain.ReturnFunction, "Return the function from its society")
_function_route("withdrawal", domain.WithdrawFunction, "Withdraw the function")
_function_route("delisting", domain.DelistFunction, "Take the function off the list")


# --- queries on functions ------------------------------------------------------------


@router.get("/functions", tags=["functions"], summary="Functions by jurisdiction, state and category")
async def list_functions(
    ctx: Context,
    principal: CurrentPrincipal,
    jurisdiction: Annotated[str | None, Query(pattern=r"^[1-9][0-9]{5}$")] = None,
    include_subtree: bool = False,
    state: domain.Status | None = None,
    category: domain.Category | None = None,
    limit: Limit = 100,
    offset: Offset = 0,
) -> dict[str, Any]:
    clauses, args = [], []
    if jurisdiction:
        if include_subtree:
            args.append(jurisdiction)
            clauses.append(f"${len(args)} = ANY(ancestors)")
        else:
            args.append(jurisdiction)
            clauses.append(f"jurisdiction = ${len(args)}")
    if state:
        args.append(state.value)
        clauses.append(f"status = ${len(args)}")
    if category:
        args.append(category.value)
        clauses.append(f"category = ${len(args)}")
    where = " AND ".join(clauses) or "true"
    rows = await ctx.pool.fetch(
        f"""SELECT state, stream_version, updated_at, count(*) OVER () AS total FROM (
                SELECT *, {ancestors_sql()} AS ancestors FROM functions) f
            WHERE {where} ORDER BY jurisdiction, function_id LIMIT {limit} OFFSET {offset}""",
        *args,
    )
    return {
        "total": rows[0]["total"] if rows else 0,
        "limit": limit,
        "offset": offset,
        "items": [_function_view(r["state"], r["stream_version"], r["updated_at"]) for r in rows],
    }


# Ancestors of a six-digit code in SQL, mirroring shared.jurisdiction.ancestors.
def _function_view(state: dict[str, Any], version: int, updated_at: datetime) -> dict[str, Any]:
    return {**state, "version": version, "updated_at": updated_at.isoformat()}


@router.get("/functions/{function_id}", tags=["functions"], summary="One function with its full history")
async def get_function(function_id: FunctionId, ctx: Context, principal: CurrentPrincipal) -> dict[str, Any]:
    state, version, envelopes = await ctx.store.load(FUNCTION, function_stream(function_id))
    if state.status is None:
        raise NotFound("function_not_found", f"function {function_id} does not exist")
    return {
        **state.model_dump(mode="json"),
        "version": version,
        "history": [e.as_json() for e in envelopes],
    }


# --- versioned lists -----------------------------------------------------------------

PublishBody = command_body(
    domain.PublishFunctionList, exclude=frozenset({"jurisdiction", "entries"}), name="PublishFunctionList"
)


@router.post(
    "/function-lists/{jurisdiction}/versions",
    response_model=CommandAccepted,
    tags=["function lists"],
    summary="Publish the jurisdiction's list as it stands now (a new version when it changed)",
)
async def publish_list(
    jurisdiction: JurisdictionCode,
    body: PublishBody,  # type: ignore[valid-type]
    ctx: Context,
    principal: CurrentPrincipal,
    key: IdempotencyKey,
) -> dict[str, Any]:
    jurisdictions.validate(jurisdiction)
    rows = await ctx.pool.fetch(
        "SELECT state FROM functions WHERE jurisdiction = $1 AND status = ANY($2::text[]) ORDER BY function_id",
        jurisdiction,
        [s.value for s in ON_THE_LIST],
    )
    entries = [domain.list_entry_of(domain.FunctionState.model_validate(r["state"])) for r in rows]
    command = build_command(
        domain.PublishFunctionList,
        principal,
        jurisdiction=jurisdiction,
        entries=entries,
        **body.model_dump(),  # type: ignore[attr-defined]
    )
    return await run(ctx, FUNCTION_LIST, list_stream(jurisdiction), command, key)


@router.get("/function-lists/{jurisdiction}/versions", tags=["function lists"], summary="Published versions")
async def list_versions(jurisdiction: JurisdictionCode, ctx: Context, principal: CurrentPrincipal) -> dict[str, Any]:
    rows = await ctx.pool.fetch(
        """SELECT version, note, published_at, published_by, jsonb_array_length(entries) AS size
           FROM function_lists WHERE jurisdiction = $1 ORDER BY version""",
        jurisdiction,
    )
    return {
        "jurisdiction": jurisdiction,
        "versions": [{**dict(r), "published_at": r["published_at"].isoformat()} for r in rows],
    }


async def _version(ctx: Any, jurisdiction: str, version: str) -> dict[str, Any]:
    if version == "latest":
        row = await ctx.pool.fetchrow(
            "SELECT * FROM function_lists WHERE jurisdiction = $1 ORDER BY version DESC LIMIT 1", jurisdiction
        )
    elif version.isdigit():
        row = await ctx.pool.fetchrow(
            "SELECT * FROM function_lists WHERE jurisdiction = $1 AND version = $2", jurisdiction, int(version)
        )
    else:
        raise InvalidInput("invalid_version", "version must be a positive number or 'latest'")
    if row is None:
        raise NotFound("list_version_not_found", f"{jurisdiction} has no published list version {version}")
    return {
        "jurisdiction": jurisdiction,
        "version": row["version"],
        "note": row["note"],
        "published_at": row["published_at"].isoformat(),
        "published_by": row["published_by"],
        "entries": row["entries"],
    }


@router.get(
    "/function-lists/{jurisdiction}/versions/{version}",
    tags=["function lists"],
    summary="One published version ('latest' for the newest)",
)
async def get_version(
    jurisdiction: JurisdictionCode,
    version: Annotated[str, Path(pattern=r"^(latest|[0-9]{1,9})$")],
    ctx: Context,
    principal: CurrentPrincipal,
) -> dict[str, Any]:
    return await _version(ctx, jurisdiction, version)


@router.get(
    "/function-lists/{jurisdiction}/diff",
    tags=["function lists"],
    summary="What changed between two published versions: added, removed, changed",
)
async def diff_versions(
    jurisdiction: JurisdictionCode,
    ctx: Context,
    principal: CurrentPrincipal,
    from_version: Annotated[int, Query(alias="from", ge=0, le=PG_INTEGER_MAX)],
    to_version: Annotated[int, Query(alias="to", ge=1, le=PG_INTEGER_MAX)],
) -> dict[str, Any]:
    older = [] if from_version == 0 else (await _version(ctx, jurisdiction, str(from_version)))["entries"]
    newer = (await _version(ctx, jurisdiction, str(to_version)))["entries"]
    diff = domain.diff_lists(
        [domain.ListEntry.model_validate(e) for e in older], [domain.ListEntry.model_validate(e) for e in newer]
    )
    return {"jurisdiction": jurisdiction, "from": from_version, "to": to_version, **diff.model_dump(mode="json")}
