"""What the security and reliability tests share: places, organisations, a case to act on."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from tests.conftest import Stack
from tests.e2e.flows import assigned_case

DEYANG = "510600"
SICHUAN = "510000"
MIANYANG = "510700"
GUANGHAN = "510681"  # a county under Deyang
CENTRAL = "100000"
ASSOCIATION = "deyang-cast"
DEPARTMENT = "deyang-hr"
FINANCE = "deyang-finance"
PROBLEM_JSON = "application/problem+json"


def assert_problem(response: httpx.Response, status: int, *codes: str) -> dict[str, Any]:
    """``response`` is RFC 9457 problem details with ``status`` and one of ``codes`` (any code if none)."""
    assert response.status_code == status, f"{response.request.method} {response.request.url}: {response.text}"
    assert response.headers["content-type"].startswith(PROBLEM_JSON), response.headers
    body: dict[str, Any] = response.json()
    assert isinstance(body.get("code"), str) and body["code"], body
    assert not codes or body["code"] in codes, body
    assert body["status"] == status and body["title"] and body["type"].startswith("urn:chengneng:problem:"), body
    return body


def short_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@dataclass(frozen=True)
class World:
    """One pilot project in implementation, and the function, society and selection behind it.

    Every organisation-bound permission holds for the principals the tests build from these
    names: the department owns the function, the society holds it and runs the case, the
    evaluator is the one the association commissioned.
    """

    function_id: str
    society_id: str
    project_id: str
    evaluator: str
    jurisdiction: str = DEYANG
    association: str = ASSOCIATION
    department: str = DEPARTMENT
    finance: str = FINANCE

    def org_of(self, role: str) -> str:
        """The organisation a principal of ``role`` acts for on these cases."""
        return {
            "association": self.association,
            "department": self.department,
            "society": self.society_id,
            "evaluator": self.evaluator,
            "finance_bureau": self.finance,
        }.get(role, f"some-{role}")


def agreement_terms(due: str) -> dict[str, Any]:
    return {
        "rights_and_obligations": "三方权利义务见任务书第二章",
        "cooperation_mode": "学会承接、部门指导、科协督导",
        "goals": ["完成年度水平评价"],
        "key_tasks": ["制定评价标准", "组织评价"],
        "milestones": [{"milestone_id": "m1", "title": "评价标准", "due_date": due}],
        "quality_requirements": ["全程留痕"],
        "indicators": [
            {"name": "people_evaluated", "unit": "persons", "target": "100", "weight": "60"},
            {"name": "standards_issued", "unit": "documents", "target": "10", "weight": "40"},
        ],
        "funding": [{"source": "能力提升项目经费", "amount_fen": 20_000_000}],
    }


def new_world(stack: Stack, *, implementation: bool = True) -> World:
    """An assigned function whose case is driven, over HTTP, into implementation."""
    function_id, society_id = short_id("fn"), short_id("soc")
    project_id = assigned_case(
        stack,
        function_id=function_id,
        society_id=society_id,
        jurisdiction=DEYANG,
        association=ASSOCIATION,
        department=DEPARTMENT,
    )
    world = World(function_id, society_id, project_id, evaluator=short_id("eval"))
    if not implementation:
        return world

    def client(role: str) -> httpx.Client:
        return stack.client("supervision", stack.token(role, world.org_of(role), DEYANG))

    society, department, association = client("society"), client("department"), client("association")
    base = f"/cases/{project_id}"
    due = (datetime.now(UTC).date() + timedelta(days=300)).isoformat()
    leader = {"person_name": "王秘书长", "rank": "secretary_general", "board_resolution_ref": "理事会决议〔2026〕1号"}
    steps: list[tuple[httpx.Client, str, dict[str, Any]]] = [
        (society, "plans", {"content": "实施方案", "goals": ["评价 100 人"]}),
        (society, "plan-submissions", {"version": 1}),
        (department, "plan-approvals", {"version": 1, "note": "同意"}),
        (association, "deployment", {"basis": "部署动员会"}),
        (society, "leader", leader),
        (association, "agreements", agreement_terms(due)),
        (department, "agreement-signatures", {"version": 1}),
        (society, "agreement-signatures", {"version": 1}),
        (association, "agreement-signatures", {"version": 1}),
        (association, "implementation", {"basis": "任务书生效"}),
        (association, "evaluator-commission", {"evaluator_org": world.evaluator}),
    ]
    for who, path, body in steps:
        response = who.post(f"{base}/{path}", json=body)
        assert response.status_code == 200 and response.json()["appended"], f"{path}: {response.text}"
    return world
