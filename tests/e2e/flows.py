"""Steps that several end-to-end tests take, written once, through the public HTTP APIs."""

from __future__ import annotations

import uuid

from tests.conftest import Stack, wait_until

GOOD_SCORES = {"comprehensive_strength": 80, "management_quality": 75, "service_level": 70}


def register_society(
    stack: Stack,
    society_id: str,
    jurisdiction: str,
    association: str,
    *,
    name: str | None = None,
    relation: str = "supervised",
    level: str = "city",
) -> None:
    client = stack.client("capability", stack.token("association", association, jurisdiction))
    body = {
        "society_id": society_id,
        "name": name or f"学会 {society_id}",
        "level": level,
        "jurisdiction": jurisdiction,
        "relation": relation,
        "association": association,
        "disciplines": ["engineering"],
        "registration_number": f"REG-{society_id}",
        "registered_on": "2020-01-15",
        "reconfirmation_due": "2030-01-15",
    }
    response = client.post("/societies", json=body)
    assert response.status_code == 201, response.text


def assess(
    stack: Stack, society_id: str, jurisdiction: str, association: str, scores: dict[str, float] | None = None
) -> str:
    client = stack.client("capability", stack.token("association", association, jurisdiction))
    assessment_id = f"a-{uuid.uuid4().hex[:8]}"
    body = {"assessment_id": assessment_id, "scores": scores or GOOD_SCORES, "evidence": ["annual report 2025"]}
    response = client.post(f"/societies/{society_id}/assessments", json=body)
    assert response.status_code == 200, response.text
    return assessment_id


def wait_for_selection(stack: Stack, function_id: str, jurisdiction: str, association: str) -> dict:  # type: ignore[type-arg]
    client = stack.client("capability", stack.token("association", association, jurisdiction))
    return wait_until(  # type: ignore[no-any-return]
        lambda: (
            (r := client.get(f"/selections/{function_id}")).status_code == 200
            and r.json()["status"] == "open"
            and r.json()
        ),
        message=f"the selection of {function_id} to open from the registry's event",
    )


def recommend_through_capability(
    stack: Stack, function_id: str, society_id: str, jurisdiction: str, association: str
) -> None:
    """The selection of one society for an opened function, ending with the registry told."""
    wait_for_selection(stack, function_id, jurisdiction, association)
    society = stack.client("capability", stack.token("society", society_id, jurisdiction))
    applied = society.post(
        f"/selections/{function_id}/applications", json={"society_id": society_id, "statement": "we can"}
    )
    assert applied.status_code == 200, applied.text
    cast = stack.client("capability", stack.token("association", association, jurisdiction))
    ranking = cast.post(f"/selections/{function_id}/ranking", json={})
    assert ranking.status_code == 200, ranking.text
    latest = cast.get(f"/selections/{function_id}").json()["ranking"]
    body = {"society_ids": [society_id]}
    if latest["insufficient_competition"]:
        body["justification"] = "only one society applied; it meets every threshold"
    recommendation = cast.post(f"/selections/{function_id}/recommendation", json=body)
    assert recommendation.status_code == 200, recommendation.text
    registry = stack.client("registry", stack.token("association", association, jurisdiction))
    wait_until(
        lambda: society_id in registry.get(f"/functions/{function_id}").json()["recommended_society_ids"],
        message="the registry to learn the recommendation from the capability service's event",
    )


def assigned_case(
    stack: Stack,
    *,
    function_id: str,
    society_id: str,
    jurisdiction: str,
    association: str,
    department: str,
    title: str = "软件工程技术人员水平评价",
) -> str:
    """A function assigned to a freshly registered society; returns the project id of the case
    the supervision service opened by itself from the registry's ``FunctionAssigned``."""
    register_society(stack, society_id, jurisdiction, association)
    assess(stack, society_id, jurisdiction, association)
    registry = stack.client("registry", stack.token("department", department, jurisdiction))
    proposal = {
        "function_id": function_id,
        "jurisdiction": jurisdiction,
        "title": title,
        "description": "Level evaluation of software engineers in non-public organisations",
        "category": "qualification_certification",
        "sub_kind": "level_evaluation",
        "scope": "partial",
        "entrustment_mode": "tripartite_task_agreement",
        "department": department,
    }
    steps: list[tuple[str, dict]] = [  # type: ignore[type-arg]
        ("/functions", proposal),
        (f"/functions/{function_id}/listing", {}),
        (f"/functions/{function_id}/department-review", {"reference": f"审-{function_id}"}),
        (
            f"/functions/{function_id}/opening",
            {
                "qualification_conditions": ["registered for 3 years"],
                "thresholds": [{"name": "full-time staff", "requirement": ">= 3"}],
                "min_applicants": 1,
            },
        ),
    ]
    for path, body in steps:
        response = registry.post(path, json=body)
        assert response.status_code in (200, 201), f"{path}: {response.text}"
    recommend_through_capability(stack, function_id, society_id, jurisdiction, association)
    assigned = registry.post(
        f"/functions/{function_id}/assignment", json={"society_id": society_id, "society_name": f"学会 {society_id}"}
    )
    assert assigned.status_code == 200, assigned.text
    history = registry.get(f"/functions/{function_id}").json()["history"]
    types = [e["event_type"] for e in history]
    project_id = f"{function_id}-{types.index('FunctionAssigned') + 1}"
    supervision = stack.client("supervision", stack.token("association", association, jurisdiction))
    wait_until(
        lambda: supervision.get(f"/cases/{project_id}").status_code == 200,
        message=f"the supervision case {project_id} to open from the registry's FunctionAssigned",
    )
    return project_id
