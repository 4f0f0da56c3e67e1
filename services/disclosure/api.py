"""Public HTTP interface of the disclosure service: no token needed, public fields only."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query

from services.disclosure import domain
from services.registry import domain as registry
from shared.errors import NotFound
from shared.runtime import Context

router = APIRouter(prefix="/public")

JurisdictionCode = Annotated[str, Path(pattern=r"^[1-9][0-9]{5}$", description="six-digit division code")]


@router.get(
    "/jurisdictions/{jurisdiction}/functions",
    tags=["public"],
    summary="The current public transferable-function list of a jurisdiction",
)
async def public_functions(
    jurisdiction: JurisdictionCode,
    ctx: Context,
    limit: Annotated[int, Query(ge=1, le=500)] = 200,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> dict[str, Any]:
    rows = await ctx.pool.fetch(
        """SELECT state, count(*) OVER () AS total FROM registry_functions
           WHERE jurisdiction = $1 AND is_public ORDER BY function_id LIMIT $2 OFFSET $3""",
        jurisdiction,
        limit,
        offset,
    )
    latest = await ctx.pool.fetchrow(
        "SELECT version, published_at FROM public_list_versions WHERE jurisdiction = $1 ORDER BY version DESC LIMIT 1",
        jurisdiction,
    )
    return {
        "jurisdiction": jurisdiction,
        "total": rows[0]["total"] if rows else 0,
        "limit": limit,
        "offset": offset,
        "published_version": latest["version"] if latest else None,
        "published_at": latest["published_at"].isoformat() if latest else None,
        "functions": [domain.public_view(registry.FunctionState.model_validate(r["state"])) for r in rows],
    }


@router.get(
    "/jurisdictions/{jurisdiction}/list-versions/{version}",
    tags=["public"],
    summary="A published version of a jurisdiction's list ('latest' for the newest)",
)
async def public_list_version(
    jurisdiction: JurisdictionCode,
    version: Annotated[str, Path(pattern=r"^(latest|\d{1,9})$")],
    ctx: Context,
) -> dict[str, Any]:
    if version == "latest":
        row = await ctx.pool.fetchrow(
            "SELECT * FROM public_list_versions WHERE jurisdiction = $1 ORDER BY version DESC LIMIT 1", jurisdiction
        )
    else:
        row = await ctx.pool.fetchrow(
            "SELECT * FROM public_list_versions WHERE jurisdiction = $1 AND version = $2", jurisdiction, int(version)
        )
    if row is None:
        raise NotFound("list_version_not_found", f"{jurisdiction} has no published list version {version}")
    return {
        "jurisdiction": jurisdiction,
        "version": row["version"],
        "published_at": row["published_at"].isoformat(),
        "entries": row["entries"],
    }
