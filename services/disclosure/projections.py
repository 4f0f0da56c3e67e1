"""The public read models: built only from disclosed facts, so they show nothing else.

Each ``FactDisclosed`` event updates the row of its subject: a function (and its
jurisdiction's published list versions), a society, a selection or a case. The change
history and the case timelines are the disclosure log itself (``events``), read by
subject; the statistics are counted from these rows (``statistics``).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from services.disclosure import domain
from shared import readmodels
from shared.db import Connection, Migration
from shared.envelope import Recorded
from shared.jurisdiction import in_subtree_sql
from shared.messages import Event

MIGRATIONS = (
    Migration(
        100,
        "public read models: functions, list versions, societies, selections, cases",
        """
        CREATE TABLE {schema}.p_functions (
            function_id   text PRIMARY KEY,
            jurisdiction  text NOT NULL,
            title         text NOT NULL,
            category      text,
            department    text NOT NULL,
            status        text NOT NULL,
            on_list       boolean NOT NULL,
            society_id    text,
            data          jsonb NOT NULL,
            updated_at    timestamptz NOT NULL
        );
        CREATE INDEX p_functions_jurisdiction_idx ON {schema}.p_functions (jurisdiction, status);
        CREATE TABLE {schema}.p_list_versions (
            jurisdiction  text NOT NULL,
            version       integer NOT NULL,
            entries       jsonb NOT NULL,
            note          text NOT NULL,
            published_at  timestamptz NOT NULL,
            PRIMARY KEY (jurisdiction, version)
        );
        CREATE TABLE {schema}.p_societies (
            society_id       text PRIMARY KEY,
            jurisdiction     text NOT NULL,
            name             text NOT NULL,
            relation         text,
            status           text NOT NULL,
            society_class    text,
            brand            boolean NOT NULL DEFAULT false,
            willingness      text,
            self_assessment  text,
            participating    boolean NOT NULL DEFAULT false,
            data             jsonb NOT NULL,
            updated_at       timestamptz NOT NULL
        );
        CREATE INDEX p_societies_jurisdiction_idx ON {schema}.p_societies (jurisdiction);
        CREATE TABLE {schema}.p_selections (
            function_id   text PRIMARY KEY,
            jurisdiction  text NOT NULL,
            data          jsonb NOT NULL,
            updated_at    timestamptz NOT NULL
        );
        CREATE TABLE {schema}.p_cases (
            project_id    text PRIMARY KEY,
            function_id   text NOT NULL,
            society_id    text NOT NULL,
            society_name  text NOT NULL,
            department    text NOT NULL,
            jurisdiction  text NOT NULL,
            title         text NOT NULL,
            category      text,
            phase         text NOT NULL,
            grade         text,
            score         numeric,
            typical_case  boolean NOT NULL DEFAULT false,
            overdue_items integer NOT NULL DEFAULT 0,
            data          jsonb NOT NULL,
            updated_at    timestamptz NOT NULL
        );
        CREATE INDEX p_cases_jurisdiction_idx ON {schema}.p_cases (jurisdiction, phase);
        CREATE INDEX events_stream_position_idx ON {schema}.events (stream_id, position);
        CREATE INDEX events_jurisdiction_position_idx ON {schema}.events (jurisdiction, position);
        GRANT SELECT, INSERT, UPDATE, DELETE ON {schema}.p_functions, {schema}.p_list_versions,
            {schema}.p_societies, {schema}.p_selections, {schema}.p_cases TO {role};
        """,
    ),
)

FUNCTION_STATUS = {
    "FunctionProposed": "proposed",
    "ConsultationStarted": "in_consultation",
    "FunctionListed": "listed",
    "FunctionOpened": "open",
    "FunctionAssigned": "assigned",
    "FunctionTransferred": "transferred",
    "FunctionReturned": "returned",
    "FunctionWithdrawn": "withdrawn",
    "FunctionDelisted": "delisted",
}
ON_THE_LIST = frozenset({"listed", "open", "assigned", "transferred", "returned"})
UNDERTAKEN = frozenset({"assigned", "transferred"})


async def project(conn: Connection, envelope: Recorded, event: Event) -> None:
    """Update the public read models for one disclosed fact (inside the append transaction)."""
    assert isinstance(event, domain.FactDisclosed)
    kind, _, key = event.subject.partition("/")
    handler = {"function": _function, "list": _list, "society": _society, "selection": _selection, "case": _case}
    await handler[kind](conn, key, envelope, event)


async def _function(conn: Connection, function_id: str, envelope: Recorded, fact: domain.FactDisclosed) -> None:
    row = await conn.fetchrow("SELECT data, status FROM p_functions WHERE function_id = $1", function_id)
    data: dict[str, Any] = dict(row["data"]) if row else {"function_id": function_id}
    status = row["status"] if row else "proposed"
    if fact.public_type == "FunctionAmended":
        data.update(fact.data.get("changes", {}))
    else:
        data.update({k: v for k, v in fact.data.items() if k not in ("reason",)})
    status = FUNCTION_STATUS.get(fact.public_type, status)
    if fact.public_type == "FunctionOpened":
        data.pop("society_id", None)
        data.pop("society_name", None)
    data["status"] = status
    await conn.execute(
        """INSERT INTO p_functions (function_id, jurisdiction, title, category, department, status, on_list,
                                    society_id, data, updated_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
           ON CONFLICT (function_id) DO UPDATE SET title = $3, category = $4, department = $5, status = $6,
               on_list = $7, society_id = $8, data = $9, updated_at = $10""",
        function_id,
        data.get("jurisdiction", envelope.jurisdiction),
        data.get("title", ""),
        data.get("category"),
        data.get("department", ""),
        status,
        status in ON_THE_LIST,
        data.get("society_id"),
        data,
        envelope.occurred_at,
    )
    if fact.public_type == "FunctionAssigned" and data.get("society_id"):
        await _lock_society(conn, data["society_id"])
        await conn.execute("UPDATE p_societies SET participating = true WHERE society_id = $1", data["society_id"])


async def _list(conn: Connection, jurisdiction: str, envelope: Recorded, fact: domain.FactDisclosed) -> None:
    await conn.execute(
        """INSERT INTO p_list_versions (jurisdiction, version, entries, note, published_at)
           VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING""",
        jurisdiction,
        fact.data["version"],
        fact.data.get("entries", []),
        fact.data.get("note", ""),
        envelope.occurred_at,
    )


async def _lock_society(conn: Connection, society_id: str) -> None:
    """Serialise the two writers of a society's ``participating`` flag until commit.

    A function's assignment (registry topic) and the society's own facts (capability topic)
    arrive on different consumers. Without the lock each could miss the other's uncommitted
    row and the flag would stay false; after it, each statement sees the other's commit.
    """
    await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"p_societies:{society_id}")


async def _society(conn: Connection, society_id: str, envelope: Recorded, fact: domain.FactDisclosed) -> None:
    await _lock_society(conn, society_id)
    row = await conn.fetchrow("SELECT data FROM p_societies WHERE society_id = $1", society_id)
    data: dict[str, Any] = dict(row["data"]) if row else {"society_id": society_id, "status": "active"}
    match fact.public_type:
        case "SocietyMerged":
            data.update(status="merged", merged_into=fact.data.get("into_society_id"))
        case "SocietyDissolved":
            data["status"] = "dissolved"
        case "BrandSocietyDesignated":
            data["brand"] = True
        case "BrandSocietyRevoked":
            data["brand"] = False
        case "DecouplingProgressed":
            data.setdefault("decoupling", {})[fact.data["line"]] = fact.data["status"]
        case _:
            data.update({k: v for k, v in fact.data.items() if k != "rationale"})
    participating = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM p_functions WHERE society_id = $1 AND status = ANY($2::text[]))",
        society_id,
        sorted(UNDERTAKEN),
    )
    await conn.execute(
        """INSERT INTO p_societies (society_id, jurisdiction, name, relation, status, society_class, brand,
                                    willingness, self_assessment, participating, data, updated_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
           ON CONFLICT (society_id) DO UPDATE SET jurisdiction = $2, name = $3, relation = $4, status = $5,
               society_class = $6, brand = $7, willingness = $8, self_assessment = $9,
               participating = p_societies.participating OR $10, data = $11, updated_at = $12""",
        society_id,
        data.get("jurisdiction", envelope.jurisdiction),
        data.get("name", society_id),
        data.get("relation"),
        data.get("status", "active"),
        data.get("society_class"),
        bool(data.get("brand", False)),
        data.get("willingness"),
        data.get("self_assessment"),
        bool(participating),
        data,
        envelope.occurred_at,
    )


async def _selection(conn: Connection, function_id: str, envelope: Recorded, fact: domain.FactDisclosed) -> None:
    row = await conn.fetchrow("SELECT data FROM p_selections WHERE function_id = $1", function_id)
    data: dict[str, Any] = dict(row["data"]) if row else {"function_id": function_id, "applicants": []}
    match fact.public_type:
        case "ApplicationSubmitted":
            if fact.data["society_id"] not in data["applicants"]:
                data["applicants"].append(fact.data["society_id"])
        case "ApplicationWithdrawn":
            data["applicants"] = [a for a in data["applicants"] if a != fact.data["society_id"]]
        case "RankingComputed":
            data["ranking"] = fact.data
        case "SocietiesRecommended":
            data["recommendation"] = fact.data
        case "SelectionClosed":
            data["closed"] = fact.data.get("reason", "")
    await conn.execute(
        """INSERT INTO p_selections (function_id, jurisdiction, data, updated_at) VALUES ($1, $2, $3, $4)
           ON CONFLICT (function_id) DO UPDATE SET data = $3, updated_at = $4""",
        function_id,
        envelope.jurisdiction,
        data,
        envelope.occurred_at,
    )


def _empty_case(project_id: str) -> dict[str, Any]:
    return {
        "project_id": project_id,
        "phase": "preparation",
        "milestones": {},
        "rectifications": {},
        "decisions": [],
        "indicators": {},
        "evaluations": [],
        "satisfaction": {},
        "funding": {"allocated_fen": 0, "adjusted_fen": 0, "awarded_fen": 0, "disbursed_fen": 0},
    }


async def _case(conn: Connection, project_id: str, envelope: Recorded, fact: domain.FactDisclosed) -> None:
    row = await conn.fetchrow("SELECT data FROM p_cases WHERE project_id = $1", project_id)
    data: dict[str, Any] = dict(row["data"]) if row else _empty_case(project_id)
    d, when = fact.data, envelope.occurred_at.date().isoformat()
    match fact.public_type:
        case "CaseOpened":
            data.update({k: v for k, v in d.items() if k != "project_id"})
        case "PhaseChanged":
            data["phase"] = d["to_phase"]
        case "AgreementTookEffect":
            data["agreement"] = {
                k: d[k] for k in ("version", "agreement_reference", "goals", "key_tasks", "indicators")
            }
            data["agreement"]["funding"] = d.get("funding", [])
            for m in d.get("milestones", []):
                previous = data["milestones"].get(m["milestone_id"], {})
                data["milestones"][m["milestone_id"]] = {
                    "title": m["title"],
                    "due_date": m["due_date"],
                    "status": previous.get("status"),
                    "overdue": previous.get("overdue", False),
                }
        case "MilestoneReported":
            data["milestones"].setdefault(d["milestone_id"], {"title": d["milestone_id"], "due_date": None})
            data["milestones"][d["milestone_id"]]["status"] = d["status"]
        case "MilestoneOverdue":
            data["milestones"].setdefault(d["milestone_id"], {"title": d["milestone_id"], "status": None})
            data["milestones"][d["milestone_id"]].update(overdue=True, due_date=d["due_date"])
        case "IndicatorMeasured":
            data["indicators"][d["name"]] = {"value": d["value"], "period": d["period"]}
        case "RectificationOrdered":
            data["rectifications"][d["rectification_id"]] = {
                "required_actions": d["required_actions"],
                "deadline": d["deadline"],
                "status": "ordered",
                "overdue": False,
            }
            data["decisions"].append({"kind": "rectification_ordered", "basis": d["basis"], "on": when})
        case "RectificationReported" | "RectificationAccepted" | "RectificationRejected" | "RectificationOverdue":
            item = data["rectifications"].setdefault(d["rectification_id"], {"status": "ordered", "overdue": False})
            if fact.public_type == "RectificationOverdue":
                item["overdue"] = True
            else:
                item["status"] = fact.public_type.removeprefix("Rectification").lower()
            if fact.public_type in ("RectificationAccepted", "RectificationRejected"):
                data["decisions"].append(
                    {"kind": f"rectification_{item['status']}", "basis": d.get("basis", ""), "on": when}
                )
        case "ProjectCommended" | "WarningIssued" | "ProjectTerminated":
            kind = {"ProjectCommended": "commended", "WarningIssued": "warning", "ProjectTerminated": "terminated"}
            data["decisions"].append(
                {
                    "kind": kind[fact.public_type],
                    "basis": d.get("basis", ""),
                    "text": d.get("text") or d.get("note") or d.get("reason", ""),
                    "on": when,
                }
            )
            if fact.public_type == "ProjectTerminated":
                data["phase"] = "terminated"
        case "FundingAllocated" | "FundingDisbursed" | "AwardGranted" | "FundingAdjusted":
            key = {
                "FundingAllocated": "allocated_fen",
                "FundingDisbursed": "disbursed_fen",
                "AwardGranted": "awarded_fen",
                "FundingAdjusted": "adjusted_fen",
            }[fact.public_type]
            data["funding"][key] += int(d.get("amount_fen", d.get("delta_fen", 0)))
            if fact.public_type == "AwardGranted":
                data["decisions"].append({"kind": "award", "basis": d.get("basis", ""), "on": when})
        case "SatisfactionSurveyed":
            data["satisfaction"][d["respondent_group"]] = {"respondents": d["respondents"], "satisfied": d["satisfied"]}
        case "EvaluationCompleted":
            data["evaluation"] = {"score": d["score"], "grade": d["grade"], "method": d["method"], "on": when}
        case "SelfEvaluationSubmitted" | "ThirdPartyEvaluationSubmitted" | "FinanceEvaluationSubmitted":
            data["evaluations"].append({"type": fact.public_type, **{k: v for k, v in d.items() if k != "project_id"}})
        case "SummaryReportSubmitted":
            data["summary"] = {"replicable_models": d.get("replicable_models", []), "on": when}
        case "TypicalCaseDesignated":
            data["typical_case"] = {"rationale": d.get("rationale", ""), "on": when}
        case _:
            data.setdefault("facts", {})[fact.public_type] = {k: v for k, v in d.items() if k != "project_id"}
    overdue = sum(1 for m in data["milestones"].values() if m.get("overdue") and m.get("status") != "done")
    overdue += sum(1 for r in data["rectifications"].values() if r.get("overdue") and r.get("status") != "accepted")
    evaluation = data.get("evaluation") or {}
    await conn.execute(
        """INSERT INTO p_cases (project_id, function_id, society_id, society_name, department, jurisdiction, title,
                                category, phase, grade, score, typical_case, overdue_items, data, updated_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
           ON CONFLICT (project_id) DO UPDATE SET phase = $9, grade = $10, score = $11, typical_case = $12,
               overdue_items = $13, data = $14, updated_at = $15""",
        project_id,
        data.get("function_id", ""),
        data.get("society_id", ""),
        data.get("society_name", ""),
        data.get("department", ""),
        data.get("jurisdiction", envelope.jurisdiction),
        data.get("title", ""),
        data.get("category"),
        data["phase"],
        evaluation.get("grade"),
        Decimal(str(evaluation["score"])) if evaluation.get("score") is not None else None,
        "typical_case" in data,
        overdue,
        data,
        envelope.occurred_at,
    )


async def rebuild(conn: Connection) -> int:
    """Recompute every read model of this service from its events."""
    return await readmodels.rebuild(
        conn, ("p_functions", "p_list_versions", "p_societies", "p_selections", "p_cases"), domain.EVENTS, project
    )


# --- statistics: the figures the city report gives, counted from the public read models ---


def in_scope(column: str, include_subtree: bool = True) -> str:
    """SQL: ``column`` is the jurisdiction $1, or (with the subtree) anywhere below it."""
    return in_subtree_sql("$1", column) if include_subtree else f"{column} = $1"


def covers(top: str, code: str) -> bool:
    from shared.jurisdiction import covers as covers_code

    return covers_code(top, code)


async def figures(pool: Any, jurisdiction: str) -> dict[str, Any]:
    """Counts for a jurisdiction and everything below it, computed from disclosed facts."""
    societies = await pool.fetchrow(
        f"""SELECT count(*) AS total,
                count(*) FILTER (WHERE relation = 'supervised') AS supervised,
                count(*) FILTER (WHERE relation = 'group_member') AS group_members,
                count(*) FILTER (WHERE willingness = 'very_willing') AS very_willing,
                count(*) FILTER (WHERE willingness IN ('very_willing', 'willing')) AS willing,
                count(*) FILTER (WHERE self_assessment = 'fully_capable') AS fully_capable,
                count(*) FILTER (WHERE participating) AS participating,
                count(*) FILTER (WHERE brand) AS brand
            FROM p_societies WHERE status = 'active' AND {in_scope("jurisdiction")}""",
        jurisdiction,
    )
    functions = await pool.fetchrow(
        f"""SELECT count(*) AS proposed,
                count(*) FILTER (WHERE on_list) AS on_the_list,
                count(*) FILTER (WHERE status = ANY($2::text[])) AS undertaken,
                count(DISTINCT department) FILTER (WHERE status = 'in_consultation') AS departments_in_consultation
            FROM p_functions WHERE {in_scope("jurisdiction")}""",
        jurisdiction,
        sorted(UNDERTAKEN),
    )
    by_status = await pool.fetch(
        f"SELECT status, count(*) AS n FROM p_functions WHERE {in_scope('jurisdiction')} GROUP BY status",
        jurisdiction,
    )
    by_phase = await pool.fetch(
        f"SELECT phase, count(*) AS n FROM p_cases WHERE {in_scope('jurisdiction')} GROUP BY phase", jurisdiction
    )
    by_grade = await pool.fetch(
        f"""SELECT grade, count(*) AS n FROM p_cases WHERE grade IS NOT NULL AND {in_scope("jurisdiction")}
            GROUP BY grade""",
        jurisdiction,
    )
    cases = await pool.fetchrow(
        f"""SELECT count(*) AS total, count(*) FILTER (WHERE typical_case) AS typical_cases,
                count(*) FILTER (WHERE overdue_items > 0) AS with_overdue_items
            FROM p_cases WHERE {in_scope("jurisdiction")}""",
        jurisdiction,
    )
    satisfaction = await pool.fetch(
        f"""SELECT s.key AS grp, sum((s.value->>'respondents')::numeric) AS respondents,
                   sum((s.value->>'satisfied')::numeric) AS satisfied
            FROM p_cases, jsonb_each(data->'satisfaction') s WHERE {in_scope("jurisdiction")} GROUP BY s.key""",
        jurisdiction,
    )
    funding = await pool.fetchrow(
        f"""SELECT coalesce(sum((data->'funding'->>'allocated_fen')::numeric), 0) AS allocated_fen,
                   coalesce(sum((data->'funding'->>'disbursed_fen')::numeric), 0) AS disbursed_fen
            FROM p_cases WHERE {in_scope("jurisdiction")}""",
        jurisdiction,
    )
    assert societies is not None and functions is not None and cases is not None and funding is not None
    return {
        "jurisdiction": jurisdiction,
        "scope": "this jurisdiction and every jurisdiction below it",
        "societies": dict(societies),
        "functions": {**dict(functions), "by_status": {r["status"]: r["n"] for r in by_status}},
        "cases": {
            **dict(cases),
            "by_phase": {r["phase"]: r["n"] for r in by_phase},
            "by_grade": {r["grade"]: r["n"] for r in by_grade},
        },
        "satisfaction": {
            r["grp"]: {
                "respondents": int(r["respondents"]),
                "satisfied": int(r["satisfied"]),
                "rate_percent": str(round(100 * r["satisfied"] / r["respondents"], 2)) if r["respondents"] else None,
            }
            for r in satisfaction
        },
        "funding": {name: int(amount) for name, amount in funding.items()},
    }
