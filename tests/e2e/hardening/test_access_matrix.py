"""The access-control matrix: every command × every role × inside and outside the subtree.

``COMMANDS`` is the one table of who may issue what (from ../shared/DOMAIN.md's parties):
each command route of every service, the roles that may issue it — always and only inside
their own jurisdiction subtree — and a body the command accepts. Every test here is
generated from it; the list of command routes itself comes from the services' routers and
their published OpenAPI documents, so a command added without a row fails the first test.

Principals act for the organisation the command is about (the owning department, the
society that runs the case, the commissioned evaluator), so organisation-bound checks pass
and what is tested is the role and the jurisdiction. A permitted principal is never refused
with 403 (it may still hear 422 when the case's state does not allow the command); a
forbidden one always gets 403 problem details, and nothing is appended on its behalf.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute

from services.capability.app import SERVICE as CAPABILITY
from services.disclosure.app import SERVICE as DISCLOSURE
from services.registry.app import SERVICE as REGISTRY
from services.supervision.app import SERVICE as SUPERVISION
from shared.principal import READ_ONLY_ROLES, Role
from tests.conftest import Stack
from tests.e2e.hardening.support import (
    CENTRAL,
    DEYANG,
    GUANGHAN,
    MIANYANG,
    SICHUAN,
    World,
    assert_problem,
    short_id,
)

pytestmark = pytest.mark.stack

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
ROLES = [role for role in Role if role is not Role.SYSTEM]  # no token may carry the system role
A, D, S = Role.ASSOCIATION, Role.DEPARTMENT, Role.SOCIETY
E, F, P = Role.EVALUATOR, Role.FINANCE_BUREAU, Role.POLICY_SUPPORT

Body = dict[str, Any] | Callable[[World, Role], dict[str, Any]]


@dataclass(frozen=True)
class Rule:
    """Who may issue one command, and a body it accepts."""

    roles: frozenset[Role]
    body: Body
    from_below: bool = False
    """The principal's own jurisdiction must lie inside the target's (a society applying for a
    function of its city or above), instead of the target inside the principal's subtree."""


def rule(roles: set[Role], body: Body | None = None, *, from_below: bool = False) -> Rule:
    return Rule(frozenset(roles), body if body is not None else {}, from_below)


def _proposal(world: World, role: Role) -> dict[str, Any]:
    return {
        "function_id": short_id("m-fn"),
        "jurisdiction": world.jurisdiction,
        "title": "团体标准研制",
        "category": "technical_standard",
        "sub_kind": "group_standard",
        "scope": "partial",
        "entrustment_mode": "tripartite_task_agreement",
        "department": world.department,
    }


def _registration(world: World, role: Role) -> dict[str, Any]:
    return {
        "society_id": short_id("m-soc"),
        "name": "德阳市测试学会",
        "level": "city",
        "jurisdiction": world.jurisdiction,
        "relation": "group_member",
        "association": world.org_of(role),  # an association registers societies under itself
        "registration_number": "REG-M",
        "registered_on": "2020-01-15",
        "reconfirmation_due": "2030-01-15",
    }


def _team_member(world: World, role: Role) -> dict[str, Any]:
    party = role.value if role in (A, D, S) else "association"
    return {"member_id": short_id("tm"), "name": "张三", "party": party, "role_in_team": "联络员"}


_AGREEMENT = {
    "rights_and_obligations": "三方权利义务见任务书第二章",
    "cooperation_mode": "学会承接、部门指导、科协督导",
    "goals": ["完成年度水平评价"],
    "key_tasks": ["组织评价"],
    "milestones": [{"milestone_id": "m1", "title": "评价标准", "due_date": "2030-01-01"}],
    "quality_requirements": ["全程留痕"],
    "indicators": [
        {"name": "people_evaluated", "unit": "persons", "target": "100", "weight": "60"},
        {"name": "standards_issued", "unit": "documents", "target": "10", "weight": "40"},
    ],
    "funding": [{"source": "能力提升项目经费", "amount_fen": 20_000_000}],
}
_BASIS = {"basis": "督导例会纪要"}

COMMANDS: dict[str, Rule] = {
    # --- registry: the transferable-function list ---------------------------------------------
    "POST /functions": rule({S, A, D}, _proposal),
    "POST /functions/{function_id}/consultation": rule({A}, {"note": "走访部门"}),
    "POST /functions/{function_id}/department-review": rule({D}, {"reference": "审-1"}),
    "POST /functions/{function_id}/listing": rule({D}),
    "POST /functions/{function_id}/amendments": rule({D, A}, {"changes": {"title": "新标题"}, "reason": "范围调整"}),
    "POST /functions/{function_id}/opening": rule({D}, {"min_applicants": 1}),
    "POST /functions/{function_id}/assignment": rule(
        {D, A}, lambda w, r: {"society_id": w.society_id, "society_name": "学会"}
    ),
    "POST /functions/{function_id}/transfer": rule({D, A}, {"agreement_reference": "任务书-1"}),
    "POST /functions/{function_id}/return": rule({A, D, S}, {"reason": "人员变动"}),
    # once listed (the function here is), only the owning department may withdraw it
    "POST /functions/{function_id}/withdrawal": rule({D}, {"reason": "部门撤回"}),
    "POST /functions/{function_id}/delisting": rule({D}, {"reason": "职能取消"}),
    "POST /function-lists/{jurisdiction}/versions": rule({A, D}, {"note": "定期公布"}),
    # --- capability: societies and selection ----------------------------------------------------
    "POST /societies": rule({A}, _registration),
    "POST /societies/{society_id}/reconfirmation": rule(
        {A}, {"reconfirmed_on": "2025-01-15", "next_due": "2030-01-15"}
    ),
    "POST /societies/{society_id}/merger": rule({A}, lambda w, r: {"into_society_id": short_id("x"), "reason": "合并"}),
    "POST /societies/{society_id}/dissolution": rule({A}, {"reason": "注销"}),
    "POST /societies/{society_id}/governance": rule(
        {A, S},
        {
            "has_board": True,
            "has_secretariat": True,
            "has_supervisory_board": True,
            "secretariat_real_entity": True,
            "professional_secretary_general": False,
            "full_time_staff": 3,
        },
    ),
    "POST /societies/{society_id}/decoupling": rule({A, S}, {"line": "institution", "status": "in_progress"}),
    "POST /societies/{society_id}/survey-answers": rule(
        {A, S}, {"willingness": "very_willing", "self_assessment": "fully_capable"}
    ),
    "POST /societies/{society_id}/assessments": rule(
        {A, E},
        lambda w, r: {
            "assessment_id": short_id("as"),
            "scores": {"comprehensive_strength": 80, "management_quality": 75, "service_level": 70},
            "evidence": ["年度报告"],
        },
    ),
    "POST /societies/{society_id}/classification": rule({A}, {"society_class": "strengthen", "rationale": "实力强"}),
    "POST /societies/{society_id}/brand-designation": rule({A}, {"rationale": "品牌学会"}),
    "POST /societies/{society_id}/brand-revocation": rule({A}, {"rationale": "撤销"}),
    "POST /selections/{function_id}/applications": rule(
        {S}, lambda w, r: {"society_id": w.org_of(r), "statement": "我们能承接"}, from_below=True
    ),
    "POST /selections/{function_id}/withdrawals": rule(
        {S}, lambda w, r: {"society_id": w.org_of(r), "reason": "撤回"}, from_below=True
    ),
    "POST /selections/{function_id}/ranking": rule({A}),
    "POST /selections/{function_id}/recommendation": rule(
        {A}, lambda w, r: {"society_ids": [w.society_id], "justification": "唯一申请者"}
    ),
    # --- supervision: the pilot-project case ------------------------------------------------------
    "POST /cases/{project_id}/plans": rule({S}, {"content": "实施方案 v2", "goals": ["评价"]}),
    "POST /cases/{project_id}/plan-submissions": rule({S}, {"version": 1}),
    "POST /cases/{project_id}/plan-approvals": rule({D}, {"version": 1}),
    "POST /cases/{project_id}/plan-returns": rule({D}, {"version": 1, "reasons": ["缺少进度"]}),
    "POST /cases/{project_id}/leader": rule(
        {S}, {"person_name": "王秘书长", "rank": "secretary_general", "board_resolution_ref": "理事会决议〔2026〕1号"}
    ),
    "POST /cases/{project_id}/major-matters": rule({S}, {"matter": "调整分工", "board_resolution_ref": "决议-2"}),
    "POST /cases/{project_id}/team-members": rule({A, D, S}, _team_member),
    "POST /cases/{project_id}/team-member-removals": rule({A, D, S}, {"member_id": "nobody", "reason": "调离"}),
    "POST /cases/{project_id}/agreements": rule({A, D}, _AGREEMENT),
    "POST /cases/{project_id}/agreement-signatures": rule({A, D, S}, {"version": 1}),
    "POST /cases/{project_id}/deployment": rule({A}, _BASIS),
    "POST /cases/{project_id}/implementation": rule({A}, _BASIS),
    "POST /cases/{project_id}/summary": rule({A}, _BASIS),
    "POST /cases/{project_id}/closure": rule({A}, _BASIS),
    "POST /cases/{project_id}/suspension": rule({A}, _BASIS),
    "POST /cases/{project_id}/resumption": rule({A}, _BASIS),
    "POST /cases/{project_id}/milestone-reports": rule({S}, {"milestone_id": "m1", "status": "in_progress"}),
    "POST /cases/{project_id}/indicator-measurements": rule(
        {S}, {"name": "people_evaluated", "value": "40", "period": "2026Q1"}
    ),
    # the owning department, and the policy-support departments consulted on every project
    "POST /cases/{project_id}/government-feedback": rule({D, P}, lambda w, r: {"opinions": [short_id("意见")]}),
    "POST /cases/{project_id}/supervision-meetings": rule(
        {A}, lambda w, r: {"meeting_id": short_id("mt"), "held_on": "2026-03-01", "progress": "按计划"}
    ),
    "POST /cases/{project_id}/commendation": rule({A}, {**_BASIS, "note": "示范"}),
    "POST /cases/{project_id}/rectification-orders": rule(
        {A},
        lambda w, r: {
            "rectification_id": short_id("rx"),
            "required_actions": ["补充材料"],
            "deadline": "2030-01-01",
            **_BASIS,
        },
    ),
    "POST /cases/{project_id}/rectification-reports": rule({S}, {"rectification_id": "r0", "actions_taken": ["已补"]}),
    "POST /cases/{project_id}/rectification-acceptances": rule({A}, {"rectification_id": "r0", **_BASIS}),
    "POST /cases/{project_id}/rectification-rejections": rule(
        {A}, {"rectification_id": "r0", "reasons": ["不充分"], **_BASIS}
    ),
    "POST /cases/{project_id}/warnings": rule({A}, lambda w, r: {**_BASIS, "text": short_id("警告")}),
    "POST /cases/{project_id}/termination": rule({A}, {**_BASIS, "reason": "严重违约"}),
    "POST /cases/{project_id}/funding-allocations": rule(
        {A, F}, {"amount_fen": 100_000, "source": "能力提升项目经费", **_BASIS}
    ),
    "POST /cases/{project_id}/disbursements": rule({F, A}, {"amount_fen": 1_000, "purpose": "首期"}),
    "POST /cases/{project_id}/funding-adjustments": rule({A}, {"delta_fen": 500, **_BASIS}),
    "POST /cases/{project_id}/awards": rule({A, F}, {"amount_fen": 1_000, **_BASIS}),
    "POST /cases/{project_id}/self-evaluation": rule({S}, {"report_ref": "自评报告.pdf", "claimed_score": "85"}),
    "POST /cases/{project_id}/evaluator-commission": rule({A}, lambda w, r: {"evaluator_org": w.evaluator}),
    "POST /cases/{project_id}/third-party-evaluations": rule({E}, {"report_ref": "第三方评估.pdf"}),
    "POST /cases/{project_id}/finance-evaluations": rule({F}, {"kind": "overall", "report_ref": "财政评价.pdf"}),
    "POST /cases/{project_id}/satisfaction-surveys": rule(
        {A}, {"respondent_group": "departments", "respondents": 10, "satisfied": 10}
    ),
    "POST /cases/{project_id}/evaluation": rule({A}),
    "POST /cases/{project_id}/summary-report": rule({S}, {"report_ref": "总结报告.pdf"}),
    "POST /cases/{project_id}/typical-case": rule({A}, {"rationale": "可复制"}),
}

SERVICE_OF_PREFIX = {
    "/functions": "registry",
    "/function-lists": "registry",
    "/societies": "capability",
    "/selections": "capability",
    "/cases": "supervision",
}
DEFINITIONS = {"registry": REGISTRY, "capability": CAPABILITY, "supervision": SUPERVISION, "disclosure": DISCLOSURE}


def service_of(route: str) -> str:
    path = route.split(" ", 1)[1]
    return next(service for prefix, service in SERVICE_OF_PREFIX.items() if path.startswith(prefix))


def write_routes_in_code() -> dict[str, set[str]]:
    """Every write route each service's router declares, including any hidden from OpenAPI."""
    return {
        name: {
            f"{method} {route.path}"
            for route in definition.router.routes
            if isinstance(route, APIRoute)
            for method in route.methods & WRITE_METHODS
        }
        for name, definition in DEFINITIONS.items()
    }


def write_routes_served(stack: Stack) -> dict[str, set[str]]:
    """Every write operation each running service publishes in its OpenAPI document."""
    routes: dict[str, set[str]] = {}
    for name in DEFINITIONS:
        document = httpx.get(f"{stack.urls[name]}/openapi.json", timeout=15).json()
        routes[name] = {
            f"{method.upper()} {path}"
            for path, operations in document["paths"].items()
            for method in operations
            if method.upper() in WRITE_METHODS
        }
    return routes


def target_path(route: str, world: World) -> str:
    path = route.split(" ", 1)[1]
    return (
        path.replace("{function_id}", world.function_id)
        .replace("{society_id}", world.society_id)
        .replace("{project_id}", world.project_id)
        .replace("{jurisdiction}", world.jurisdiction)
    )


def body_for(entry: Rule, world: World, role: Role) -> dict[str, Any]:
    return entry.body(world, role) if callable(entry.body) else dict(entry.body)


def places(entry: Rule) -> tuple[list[str], list[str]]:
    """(inside, outside) jurisdictions of a principal acting on a Deyang target."""
    if entry.from_below:
        return [DEYANG, GUANGHAN], [MIANYANG, SICHUAN]
    return [DEYANG, SICHUAN], [MIANYANG, GUANGHAN]


def stream_version(stack: Stack, route: str, world: World) -> int:
    """The version of the stream the route's command appends to (0 for a create route)."""
    service = service_of(route)
    path = route.split(" ", 1)[1]
    reads = {
        "/functions/{function_id}/": f"/functions/{world.function_id}",
        "/societies/{society_id}/": f"/societies/{world.society_id}",
        "/selections/{function_id}/": f"/selections/{world.function_id}",
        "/cases/{project_id}/": f"/cases/{world.project_id}",
    }
    read = next((r for prefix, r in reads.items() if path.startswith(prefix)), None)
    if read is None:
        return 0
    client = stack.client(service, stack.token("auditor", "audit-office", "100000"))
    response = client.get(read)
    assert response.status_code == 200, response.text
    return int(response.json()["version"])


# --- the table covers every command ----------------------------------------------------------


def test_every_command_route_of_every_service_has_a_row_in_the_table(stack: Stack) -> None:
    in_code = write_routes_in_code()
    served = write_routes_served(stack)
    assert in_code == served, "a write route is hidden from (or only in) the OpenAPI document"
    every = set().union(*in_code.values())
    assert every == set(COMMANDS), (
        f"missing from COMMANDS: {sorted(every - set(COMMANDS))}; not a route: {sorted(set(COMMANDS) - every)}"
    )
    assert not in_code["disclosure"], "the disclosure service is read-only: it takes no command"
    for route, entry in COMMANDS.items():
        assert entry.roles and not entry.roles & READ_ONLY_ROLES and Role.SYSTEM not in entry.roles, route


# --- every command × every role × inside and outside ------------------------------------------


@pytest.fixture(scope="module")
def clients(stack: Stack) -> Iterator[dict[str, httpx.Client]]:
    """One connection pool per service; each request carries its own principal's token."""
    pools = {name: httpx.Client(base_url=stack.urls[name], timeout=30) for name in DEFINITIONS}
    yield pools
    for pool in pools.values():
        pool.close()


@pytest.mark.parametrize("route", sorted(COMMANDS))
def test_each_role_may_issue_the_command_only_if_the_table_says_so_and_only_inside_its_subtree(
    stack: Stack, world: World, clients: dict[str, httpx.Client], route: str
) -> None:
    entry = COMMANDS[route]
    client = clients[service_of(route)]
    path = target_path(route, world)
    inside, outside = places(entry)
    cases = [(role, place, place in inside) for role, place in itertools.product(ROLES, inside + outside)]
    forbidden = [(r, j, i) for r, j, i in cases if not (i and r in entry.roles)]
    permitted = [(r, j, i) for r, j, i in cases if i and r in entry.roles]

    def send(principal: tuple[Role, str, bool]) -> httpx.Response:
        role, place, _ = principal
        token = stack.token(role, world.org_of(role), place, subject=f"{role.value}-{uuid.uuid4().hex[:6]}")
        return client.post(path, json=body_for(entry, world, role), headers={"Authorization": f"Bearer {token}"})

    before = stream_version(stack, route, world)
    # Refusals change nothing, so they may all be sent at once.
    with ThreadPoolExecutor(max_workers=8) as pool:
        refusals = list(pool.map(send, forbidden))
    for (role, _place, is_inside), response in zip(forbidden, refusals, strict=True):
        if role in READ_ONLY_ROLES:
            codes: tuple[str, ...] = ("read_only_role",)
        elif role in entry.roles:
            codes = ("outside_jurisdiction",)
        elif is_inside:
            codes = ("role_not_permitted",)
        else:
            codes = ("role_not_permitted", "outside_jurisdiction")
        assert_problem(response, 403, *codes)
    assert stream_version(stack, route, world) == before, "a refused command appended an event"
    for principal in permitted:
        response = send(principal)
        assert response.status_code not in (401, 403) and response.status_code < 500, (
            f"{principal[0].value} in {principal[1]} is permitted {route} by the table "
            f"but got {response.status_code}: {response.text}"
        )
        if response.status_code >= 400:
            assert_problem(response, response.status_code)


# --- auditors and the public write nothing, at any level ----------------------------------------


@pytest.mark.parametrize("role", sorted(READ_ONLY_ROLES))
def test_auditors_and_the_public_cannot_write_anything_even_from_the_central_level(
    stack: Stack, world: World, clients: dict[str, httpx.Client], role: Role
) -> None:
    routes = set().union(*write_routes_in_code().values())
    assert routes, "no write route found"
    token = stack.token(role, f"some-{role.value}", CENTRAL)
    for route in sorted(routes):
        entry = COMMANDS[route]
        method, _ = route.split(" ", 1)
        for body in (body_for(entry, world, Role.ASSOCIATION), body_for(entry, world, Role.SOCIETY)):
            response = clients[service_of(route)].request(
                method, target_path(route, world), json=body, headers={"Authorization": f"Bearer {token}"}
            )
            assert_problem(response, 403, "read_only_role")
