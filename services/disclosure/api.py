"""Public JSON API and change feeds of the disclosure service: no token, public facts only.

Everything here is read from the disclosure log and the read models built from it, so it
can show nothing the disclosure policy did not let through. Feeds are resumable from a
position in the disclosure log: Atom for pollers (``?after=``), Server-Sent Events for
live subscribers (``Last-Event-ID`` or ``?after=``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime
from typing import Annotated, Any
from xml.sax.saxutils import escape

from fastapi import APIRouter, Header, Path, Query, Request
from fastapi.responses import Response, StreamingResponse

from services.disclosure import domain
from services.disclosure import projections as statistics
from services.disclosure.projections import ON_THE_LIST
from shared import store
from shared.api import EntityId, JurisdictionCode
from shared.errors import InvalidInput, NotFound
from shared.http import PG_BIGINT_MAX, Limit, Offset
from shared.runtime import Context

router = APIRouter(prefix="/public")

Page = Limit
LogSequence = Annotated[int, Query(ge=0, le=PG_BIGINT_MAX, description="a place in the disclosure log")]


def _fact_view(e: Any) -> dict[str, Any]:
    """One disclosed fact as the public sees it (no internal ids beyond the source event id)."""
    return {
        "position": e.position,
        "id": str(e.event_id),
        "type": e.payload["public_type"],
        "subject": e.payload["subject"],
        "jurisdiction": e.jurisdiction,
        "time": e.occurred_at.isoformat(),
        "correction": e.payload["correction"],
        "data": e.payload["data"],
    }


@router.get(
    "/jurisdictions/{jurisdiction}/functions",
    tags=["functions"],
    summary="The current public transferable-function list of a jurisdiction",
)
async def public_functions(
    jurisdiction: JurisdictionCode,
    ctx: Context,
    limit: Page = 200,
    offset: Offset = 0,
    include_proposals: bool = False,
) -> dict[str, Any]:
    statuses = sorted(ON_THE_LIST | ({"proposed", "in_consultation"} if include_proposals else set()))
    rows = await ctx.pool.fetch(
        """SELECT data, count(*) OVER () AS total FROM p_functions
           WHERE jurisdiction = $1 AND status = ANY($2::text[]) ORDER BY function_id LIMIT $3 OFFSET $4""",
        jurisdiction,
        statuses,
        limit,
        offset,
    )
    latest = await ctx.pool.fetchrow(
        "SELECT version, published_at FROM p_list_versions WHERE jurisdiction = $1 ORDER BY version DESC LIMIT 1",
        jurisdiction,
    )
    return {
        "jurisdiction": jurisdiction,
        "total": rows[0]["total"] if rows else 0,
        "limit": limit,
        "offset": offset,
        "published_version": latest["version"] if latest else None,
        "published_at": latest["published_at"].isoformat() if latest else None,
        "functions": [r["data"] for r in rows],
    }


@router.get(
    "/jurisdictions/{jurisdiction}/list-versions/{version}",
    tags=["functions"],
    summary="A published version of a jurisdiction's list ('latest' for the newest)",
)
async def public_list_version(
    jurisdiction: JurisdictionCode,
    version: Annotated[str, Path(pattern=r"^(latest|[0-9]{1,9})$")],
    ctx: Context,
) -> dict[str, Any]:
    if version == "latest":
        row = await ctx.pool.fetchrow(
            "SELECT * FROM p_list_versions WHERE jurisdiction = $1 ORDER BY version DESC LIMIT 1", jurisdiction
        )
    elif version.isdigit():
        row = await ctx.pool.fetchrow(
            "SELECT * FROM p_list_versions WHERE jurisdiction = $1 AND version = $2", jurisdiction, int(version)
        )
    else:
        raise InvalidInput("invalid_version", "version must be a number or 'latest'")
    if row is None:
        raise NotFound("list_version_not_found", f"{jurisdiction} has no published list version {version}")
    return {
        "jurisdiction": jurisdiction,
        "version": row["version"],
        "note": row["note"],
        "published_at": row["published_at"].isoformat(),
        "entries": row["entries"],
    }


async def subject_history(ctx: Any, subject: str) -> list[dict[str, Any]]:
    rows = await store.read_stream(ctx.pool, domain.public_stream(subject))
    return [_fact_view(e) for e in rows]


@router.get(
    "/jurisdictions/{jurisdiction}/changes",
    tags=["functions"],
    summary="Change history of the jurisdiction's functions: every disclosed fact, newest first",
)
async def function_changes(
    jurisdiction: JurisdictionCode, ctx: Context, limit: Page = 100, offset: Offset = 0
) -> dict[str, Any]:
    rows = await ctx.pool.fetch(
        f"""SELECT {store.COLUMNS} FROM events
            WHERE jurisdiction = $1 AND stream_id LIKE 'public-function/%'
            ORDER BY position DESC LIMIT $2 OFFSET $3""",
        jurisdiction,
        limit,
        offset,
    )
    return {
        "jurisdiction": jurisdiction,
        "limit": limit,
        "offset": offset,
        "changes": [_fact_view(store.envelope_from_record(r)) for r in rows],
    }


@router.get("/functions/{function_id}", tags=["functions"], summary="One public function with its history")
async def public_function(function_id: EntityId, ctx: Context) -> dict[str, Any]:
    row = await ctx.pool.fetchrow("SELECT data FROM p_functions WHERE function_id = $1", function_id)
    if row is None:
        raise NotFound("function_not_found", f"no function {function_id} has been disclosed")
    selection = await ctx.pool.fetchrow("SELECT data FROM p_selections WHERE function_id = $1", function_id)
    return {
        **row["data"],
        "selection": selection["data"] if selection else None,
        "history": await subject_history(ctx, f"function/{function_id}"),
    }


@router.get(
    "/jurisdictions/{jurisdiction}/cases",
    tags=["cases"],
    summary="Pilot projects of a jurisdiction (and below, with include_subtree)",
)
async def public_cases(
    jurisdiction: JurisdictionCode,
    ctx: Context,
    include_subtree: bool = False,
    phase: str | None = None,
    typical_only: bool = False,
    limit: Page = 100,
    offset: Offset = 0,
) -> dict[str, Any]:
    where = [statistics.in_scope("jurisdiction", include_subtree)]
    args: list[Any] = [jurisdiction]
    if phase:
        args.append(phase)
        where.append(f"phase = ${len(args)}")
    if typical_only:
        where.append("typical_case")
    args += [limit, offset]
    rows = await ctx.pool.fetch(
        f"""SELECT project_id, function_id, society_id, society_name, department, jurisdiction, title, category,
                   phase, grade, score, typical_case, overdue_items, updated_at, count(*) OVER () AS total
            FROM p_cases WHERE {" AND ".join(where)} ORDER BY updated_at DESC, project_id
            LIMIT ${len(args) - 1} OFFSET ${len(args)}""",
        *args,
    )
    items = []
    for r in rows:
        item = {k: v for k, v in dict(r).items() if k != "total"}
        item["updated_at"] = item["updated_at"].isoformat()
        item["score"] = str(item["score"]) if item["score"] is not None else None
        items.append(item)
    return {
        "jurisdiction": jurisdiction,
        "total": rows[0]["total"] if rows else 0,
        "limit": limit,
        "offset": offset,
        "cases": items,
    }


@router.get("/cases/{project_id}", tags=["cases"], summary="One pilot project with its public timeline")
async def public_case(project_id: EntityId, ctx: Context) -> dict[str, Any]:
    row = await ctx.pool.fetchrow("SELECT data, phase, overdue_items FROM p_cases WHERE project_id = $1", project_id)
    if row is None:
        raise NotFound("case_not_found", f"no pilot project {project_id} has been disclosed")
    return {
        **row["data"],
        "phase": row["phase"],
        "overdue_items": row["overdue_items"],
        "timeline": await subject_history(ctx, f"case/{project_id}"),
    }


@router.get("/societies/{society_id}", tags=["societies"], summary="One society as disclosed, with its history")
async def public_society(society_id: EntityId, ctx: Context) -> dict[str, Any]:
    row = await ctx.pool.fetchrow("SELECT data, participating FROM p_societies WHERE society_id = $1", society_id)
    if row is None:
        raise NotFound("society_not_found", f"no society {society_id} has been disclosed")
    return {
        **row["data"],
        "participating": row["participating"],
        "history": await subject_history(ctx, f"society/{society_id}"),
    }


@router.get(
    "/jurisdictions/{jurisdiction}/statistics",
    tags=["statistics"],
    summary="Figures computed from disclosed events, for the jurisdiction and everything below it",
)
async def public_statistics(jurisdiction: JurisdictionCode, ctx: Context) -> dict[str, Any]:
    return await statistics.figures(ctx.pool, jurisdiction)


# --- feeds ---------------------------------------------------------------------------------


async def facts_after(ctx: Any, sequence: int, limit: int, jurisdiction: str | None) -> list[tuple[int, Any]]:
    """Disclosed facts after ``sequence`` (1-based place in the sealed log), in log order.

    The sealed log is dense and never skips a fact that committed late, so a reader that
    resumes from the last sequence it saw loses nothing and gets nothing twice.
    """
    out: list[tuple[int, Any]] = []
    while len(out) < limit:
        batch = await store.read_log(ctx.pool, sequence, limit)
        if not batch:
            break
        sequence = batch[-1][0] + 1
        out += [(i + 1, e) for i, e in batch if jurisdiction is None or statistics.covers(jurisdiction, e.jurisdiction)]
    return out[:limit]


@router.get("/feed.atom", tags=["feeds"], summary="Atom feed of disclosed facts, resumable with ?after=<position>")
async def atom_feed(
    request: Request,
    ctx: Context,
    after: LogSequence = 0,
    limit: Page = 100,
    jurisdiction: Annotated[str | None, Query(pattern=r"^[1-9][0-9]{5}$")] = None,
) -> Response:
    facts = await facts_after(ctx, after, limit, jurisdiction)
    last = facts[-1][0] if facts else after
    base = str(request.base_url).rstrip("/")
    query = f"&jurisdiction={jurisdiction}" if jurisdiction else ""
    entries = "".join(
        f"""<entry><id>urn:uuid:{e.event_id}</id>
<title>{escape(e.payload["public_type"])} {escape(e.payload["subject"])}</title>
<updated>{e.occurred_at.isoformat()}</updated><category term="{escape(e.payload["public_type"])}"/>
<link rel="alternate" href="{base}/public/facts/{e.position}"/>
<content type="application/json">{escape(json.dumps({**_fact_view(e), "sequence": seq}, ensure_ascii=False))}</content>
</entry>
"""
        for seq, e in facts
    )
    updated = facts[-1][1].occurred_at.isoformat() if facts else datetime.now(UTC).isoformat()
    body = f"""<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom"><id>urn:chengneng:disclosure:feed</id>
<title>chengneng 信息公开</title><updated>{updated}</updated>
<link rel="self" href="{escape(f"{base}/public/feed.atom?after={after}{query}")}"/>
<link rel="next" href="{escape(f"{base}/public/feed.atom?after={last}{query}")}"/>
{entries}</feed>
"""
    return Response(body, media_type="application/atom+xml", headers={"X-Next-After": str(last)})


@router.get("/facts/{position}", tags=["feeds"], summary="One disclosed fact by its position in the log")
async def fact(position: Annotated[int, Path(ge=1, le=PG_BIGINT_MAX)], ctx: Context) -> dict[str, Any]:
    rows = await ctx.pool.fetch(f"SELECT {store.COLUMNS} FROM events WHERE position = $1", position)
    if not rows:
        raise NotFound("fact_not_found", f"no disclosed fact at position {position}")
    return _fact_view(store.envelope_from_record(rows[0]))


@router.get("/stream", tags=["feeds"], summary="Server-Sent Events of disclosed facts, resumable with Last-Event-ID")
async def sse(
    ctx: Context,
    after: LogSequence = 0,
    last_event_id: Annotated[str | None, Header()] = None,
    jurisdiction: Annotated[str | None, Query(pattern=r"^[1-9][0-9]{5}$")] = None,
    max_events: Annotated[int | None, Query(ge=1, le=100_000, description="close after this many (for tests)")] = None,
) -> StreamingResponse:
    start = after
    if last_event_id is not None:
        if not (last_event_id.isascii() and last_event_id.isdigit() and int(last_event_id) <= PG_BIGINT_MAX):
            raise InvalidInput("invalid_last_event_id", "Last-Event-ID is the sequence of the last event received")
        start = int(last_event_id)

    async def events() -> AsyncIterator[bytes]:
        position, sent = start, 0
        yield b": chengneng disclosure stream\n\n"
        while True:
            facts = await facts_after(ctx, position, 200, jurisdiction)
            for seq, e in facts:
                position = seq
                payload = json.dumps({**_fact_view(e), "sequence": seq}, ensure_ascii=False)
                yield f"id: {seq}\nevent: {e.payload['public_type']}\ndata: {payload}\n\n".encode()
                sent += 1
                if max_events and sent >= max_events:
                    return
            if not facts:
                await asyncio.sleep(0.5)
                yield b": keep-alive\n\n"

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


def parse_period(start: str, end: str) -> tuple[date, date]:
    try:
        first, last = date.fromisoformat(start), date.fromisoformat(end)
    except ValueError as exc:
        raise InvalidInput("invalid_date", "from and to must be ISO dates, e.g. 2026-01-01") from exc
    if last < first:
        raise InvalidInput("invalid_period", "the period ends before it starts")
    return first, last
