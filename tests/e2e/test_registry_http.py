"""The registry end to end over HTTP, on a stack started with `chengneng up`, with tokens."""

from __future__ import annotations

import itertools
import uuid

import httpx
import pytest

from tests.conftest import Stack, wait_until
from tests.e2e.flows import assess, recommend_through_capability, register_society

pytestmark = pytest.mark.stack

DEYANG = "510600"
SICHUAN = "510000"
MIANYANG = "510700"

QUALIFICATION = {
    "jurisdiction": DEYANG,
    "title": "软件工程技术人员水平评价",
    "description": "Level evaluation of software engineers in non-public organisations",
    "category": "qualification_certification",
    "sub_kind": "level_evaluation",
    "scope": "partial",
    "entrustment_mode": "tripartite_task_agreement",
    "department": "deyang-hr",
}


def post(client: httpx.Client, path: str, body: dict | None = None, **headers: str) -> httpx.Response:  # type: ignore[type-arg]
    return client.post(path, json=body or {}, headers=headers)


def assert_problem(response: httpx.Response, status: int, code: str) -> dict:  # type: ignore[type-arg]
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["code"] == code, body
    assert body["status"] == status and body["title"] and body["detail"]
    return body


def test_a_function_goes_through_its_whole_lifecycle_over_http(stack: Stack) -> None:
    fid = f"hr-{uuid.uuid4().hex[:8]}"
    society = stack.client("registry", stack.token("society", "deyang-software-society", DEYANG))
    association = stack.client("registry", stack.token("association", "deyang-cast", DEYANG))
    department = stack.client("registry", stack.token("department", "deyang-hr", DEYANG))
    other_department = stack.client("registry", stack.token("department", "deyang-finance", DEYANG))
    mianyang_association = stack.client("registry", stack.token("association", "mianyang-cast", MIANYANG))
    public = stack.client("registry", stack.token("public", "citizen", "100000"))

    created = post(society, "/functions", {**QUALIFICATION, "function_id": fid})
    assert created.status_code == 201, created.text
    assert created.json()["appended"][0]["event_type"] == "FunctionProposed"

    assert_problem(post(mianyang_association, f"/functions/{fid}/consultation"), 403, "outside_jurisdiction")
    assert_problem(post(public, f"/functions/{fid}/consultation"), 403, "read_only_role")
    correlation = str(uuid.uuid4())
    consulted = post(
        association, f"/functions/{fid}/consultation", {"note": "met the bureau"}, **{"X-Correlation-ID": correlation}
    )
    assert consulted.status_code == 200 and consulted.headers["x-correlation-id"] == correlation

    assert_problem(post(society, f"/functions/{fid}/listing"), 403, "role_not_permitted")
    assert_problem(post(other_department, f"/functions/{fid}/listing"), 403, "not_owning_department")
    assert post(department, f"/functions/{fid}/listing").status_code == 200
    again = post(department, f"/functions/{fid}/listing")
    assert again.status_code == 200 and again.json()["appended"] == []  # idempotent decision

    opening = {
        "qualification_conditions": ["registered for 3 years"],
        "thresholds": [{"name": "full-time staff", "requirement": ">= 3"}],
        "min_applicants": 2,
    }
    assert_problem(post(department, f"/functions/{fid}/opening", opening), 422, "department_review_required")
    assert (
        post(department, f"/functions/{fid}/department-review", {"reference": "川人社审〔2026〕7号"}).status_code == 200
    )
    assert post(department, f"/functions/{fid}/opening", opening).status_code == 200
    assignment = {"society_id": "deyang-software-society", "society_name": "德阳市软件行业学会"}
    assert_problem(post(department, f"/functions/{fid}/assignment", assignment), 422, "society_not_recommended")
    register_society(stack, "deyang-software-society", DEYANG, "deyang-cast", name="德阳市软件行业学会")
    assess(stack, "deyang-software-society", DEYANG, "deyang-cast")
    recommend_through_capability(stack, fid, "deyang-software-society", DEYANG, "deyang-cast")
    assert post(department, f"/functions/{fid}/assignment", assignment).status_code == 200
    assert_problem(post(department, f"/functions/{fid}/opening", opening), 422, "invalid_transition")
    assert post(association, f"/functions/{fid}/transfer", {"agreement_reference": "任务书-2026-01"}).status_code == 200

    detail = department.get(f"/functions/{fid}")
    assert detail.status_code == 200
    body = detail.json()
    assert body["status"] == "transferred" and body["society_id"] == "deyang-software-society"
    history = body["history"]
    assert [e["event_type"] for e in history] == [
        "FunctionProposed",
        "ConsultationStarted",
        "FunctionListed",
        "DepartmentReviewRecorded",
        "FunctionOpened",
        "RecommendationRecorded",
        "FunctionAssigned",
        "FunctionTransferred",
    ]
    assert history[0]["actor"] == {
        "subject": "deyang-software-society",
        "organisation": "deyang-software-society",
        "role": "society",
        "jurisdiction": DEYANG,
    }
    assert history[1]["correlation_id"] == correlation  # the caller's correlation id is on the event
    assert history[1]["actor"]["organisation"] == "deyang-cast"
    assert all(e["prev_hash"] == p["hash"] for p, e in itertools.pairwise(history))

    assert post(society, f"/functions/{fid}/return", {"reason": "staff left"}).status_code == 200
    assert department.get(f"/functions/{fid}").json()["status"] == "returned"


def test_an_access_type_qualification_function_is_refused_with_a_clear_error(stack: Stack) -> None:
    society = stack.client("registry", stack.token("society", "deyang-software-society", DEYANG))
    refused = post(society, "/functions", {**QUALIFICATION, "sub_kind": "access"})
    body = assert_problem(refused, 422, "access_type_qualification_refused")
    assert "access" in body["detail"] or "准入" in body["detail"]


def test_requests_without_a_valid_token_are_refused(stack: Stack) -> None:
    anonymous = stack.client("registry")
    assert_problem(anonymous.get("/functions"), 401, "token_missing")
    forged = stack.client("registry", stack.token("department", "deyang-hr", DEYANG)[:-4] + "AAAA")
    assert_problem(forged.get("/functions"), 401, "token_invalid")


def test_bad_input_gets_problem_details_and_stores_nothing(stack: Stack) -> None:
    society = stack.client("registry", stack.token("society", "deyang-software-society", DEYANG))
    before = society.get("/functions").json()["total"]
    body = assert_problem(post(society, "/functions", {"title": "missing fields"}), 422, "invalid_request")
    assert body["errors"]
    assert_problem(post(society, "/functions", {**QUALIFICATION, "jurisdiction": "12"}), 422, "invalid_jurisdiction")
    assert_problem(
        post(society, "/functions", {**QUALIFICATION, "sub_kind": "group_standard"}), 422, "sub_kind_mismatch"
    )
    assert_problem(society.get("/functions/does-not-exist"), 404, "function_not_found")
    huge = society.post(
        "/functions", content=b"{" + b" " * 2_000_000 + b"}", headers={"content-type": "application/json"}
    )
    assert_problem(huge, 413, "body_too_large")
    assert society.get("/functions").json()["total"] == before


def test_a_retried_post_with_the_same_idempotency_key_appends_nothing_twice(stack: Stack) -> None:
    society = stack.client("registry", stack.token("society", "deyang-software-society", DEYANG))
    key = f"retry-{uuid.uuid4()}"
    first = post(society, "/functions", {**QUALIFICATION, "title": "重试"}, **{"Idempotency-Key": key})
    second = post(society, "/functions", {**QUALIFICATION, "title": "重试"}, **{"Idempotency-Key": key})
    assert first.status_code == 201 and second.status_code == 201
    assert first.json() == second.json()
    fid = first.json()["stream_id"].removeprefix("function-")
    assert len(society.get(f"/functions/{fid}").json()["history"]) == 1
    reused = post(society, "/functions", {**QUALIFICATION, "title": "另一个"}, **{"Idempotency-Key": key})
    assert_problem(reused, 422, "idempotency_key_reused")


def test_published_list_versions_and_their_difference(stack: Stack) -> None:
    code = "510681"  # a county under Deyang: its own list
    department = stack.client("registry", stack.token("department", "guanghan-sci", code))
    association = stack.client("registry", stack.token("association", "deyang-cast", DEYANG))
    ids = []
    for n in range(3):
        fid = f"gh-{n}-{uuid.uuid4().hex[:6]}"
        ids.append(fid)
        body = {
            **QUALIFICATION,
            "jurisdiction": code,
            "department": "guanghan-sci",
            "function_id": fid,
            "category": "technical_standard",
            "sub_kind": "group_standard",
            "title": f"团体标准 {n}",
        }
        assert post(department, "/functions", body).status_code == 201
    for fid in ids[:2]:
        assert post(department, f"/functions/{fid}/listing").status_code == 200
    v1 = post(association, f"/function-lists/{code}/versions", {"note": "first"})
    assert v1.status_code == 200, v1.text
    assert post(department, f"/functions/{ids[2]}/listing").status_code == 200
    assert post(department, f"/functions/{ids[0]}/delisting", {"reason": "cancelled"}).status_code == 200
    assert (
        post(
            department,
            f"/functions/{ids[1]}/amendments",
            {"changes": {"title": "团体标准 1（修订）"}, "reason": "scope"},
        ).status_code
        == 200
    )
    assert post(association, f"/function-lists/{code}/versions", {"note": "second"}).status_code == 200
    unchanged = post(association, f"/function-lists/{code}/versions", {"note": "again"})
    assert unchanged.json()["appended"] == []

    versions = association.get(f"/function-lists/{code}/versions").json()["versions"]
    assert [v["version"] for v in versions] == [1, 2]
    latest = association.get(f"/function-lists/{code}/versions/latest").json()
    assert latest["version"] == 2 and {e["function_id"] for e in latest["entries"]} == {ids[1], ids[2]}
    diff = association.get(f"/function-lists/{code}/diff", params={"from": 1, "to": 2}).json()
    assert [e["function_id"] for e in diff["added"]] == [ids[2]]
    assert [e["function_id"] for e in diff["removed"]] == [ids[0]]
    assert diff["changed"] == [
        {"function_id": ids[1], "fields": {"title": {"from": "团体标准 1", "to": "团体标准 1（修订）"}}}
    ]
    assert_problem(association.get(f"/function-lists/{code}/versions/9"), 404, "list_version_not_found")

    by_state = association.get("/functions", params={"jurisdiction": code, "state": "listed"}).json()
    assert {f["function_id"] for f in by_state["items"]} == {ids[1], ids[2]}
    subtree = association.get(
        "/functions", params={"jurisdiction": SICHUAN, "include_subtree": "true", "category": "technical_standard"}
    ).json()
    assert set(ids) <= {f["function_id"] for f in subtree["items"]}

    # The disclosure service learns all of it from Kafka, and shows only the listed ones.
    disclosure = stack.client("disclosure")
    shown = wait_until(
        lambda: (
            (r := disclosure.get(f"/public/jurisdictions/{code}/functions").json())["published_version"] == 2
            and {f["function_id"] for f in r["functions"]} == {ids[1], ids[2]}
            and r
        ),
        message="the disclosure list to catch up",
    )
    titles = {f["function_id"]: f["title"] for f in shown["functions"]}
    assert titles[ids[1]] == "团体标准 1（修订）"
    # Only what the disclosure policy lets through: never the registry's internal state.
    assert not {"recommended_society_ids", "review_reference", "review_recorded"} & set(shown["functions"][0])


def test_openapi_describes_every_command(stack: Stack) -> None:
    spec = httpx.get(stack.urls["registry"] + "/openapi.json").json()
    paths = spec["paths"]
    for path in (
        "/functions",
        "/functions/{function_id}/listing",
        "/functions/{function_id}/opening",
        "/function-lists/{jurisdiction}/versions",
        "/function-lists/{jurisdiction}/diff",
    ):
        assert path in paths, sorted(paths)
    opening = paths["/functions/{function_id}/opening"]["post"]
    assert "requestBody" in opening and "422" in opening["responses"]
    assert spec["components"]["schemas"]["Problem"]["properties"]["code"]
