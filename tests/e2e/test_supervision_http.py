"""Project supervision (the case) end to end over HTTP, on a stack started with `chengneng up`.

A case opens by itself when the registry assigns a function; the registry learns that the
task agreement took effect (transferred) or that the project ended (returned), and the
capability service notes outcomes in the society's track record, all through Kafka. The
deadline processor runs here with a 1 s check interval, so an overdue milestone shows fast.
"""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from shared.embedded import EmbeddedBroker
from tests.conftest import Stack, running_stack, wait_until
from tests.e2e.flows import assigned_case, recommend_through_capability

pytestmark = pytest.mark.stack

DEYANG = "510600"
SICHUAN = "510000"
MIANYANG = "510700"
ASSOCIATION = "deyang-cast"
DEPARTMENT = "deyang-hr"


@pytest.fixture(scope="module")
def supervision_stack(broker: EmbeddedBroker) -> Iterator[Stack]:
    """A stack of its own whose deadline processor looks for passed deadlines every second.

    Its home is outside pytest's ``/tmp/pytest-of-<user>``: every pytest session resets that
    directory to mode 0700, which locks the embedded PostgreSQL's own system user out of its
    data directory while another session runs at the same time (initdb or pg_ctl stop fail).
    """
    home = Path(tempfile.mkdtemp(prefix="chengneng-supervision-"))
    try:
        with running_stack(
            home / ".chengneng",
            "--kafka-bootstrap",
            broker.bootstrap,
            env={"CHENGNENG_DEADLINE_CHECK_INTERVAL_S": "1"},
        ) as s:
            yield s
    finally:
        shutil.rmtree(home, ignore_errors=True)


# --- helpers ---------------------------------------------------------------------------


def post(client: httpx.Client, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
    return client.post(path, json=body or {})


def ok(client: httpx.Client, path: str, body: dict[str, Any] | None = None) -> list[str]:
    """POST that must succeed; returns the event types it appended."""
    response = post(client, path, body)
    assert response.status_code == 200, f"{path}: {response.text}"
    return [e["event_type"] for e in response.json()["appended"]]


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["code"] == code, body
    assert body["status"] == status and body["title"] and body["detail"]
    return body


def short_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


class Parties:
    """Supervision clients for every party of one case."""

    def __init__(self, stack: Stack, society_id: str) -> None:
        self.society = stack.client("supervision", stack.token("society", society_id, DEYANG))
        self.department = stack.client("supervision", stack.token("department", DEPARTMENT, DEYANG))
        self.association = stack.client("supervision", stack.token("association", ASSOCIATION, DEYANG))
        self.finance = stack.client("supervision", stack.token("finance_bureau", "deyang-finance", DEYANG))


def new_case(stack: Stack) -> tuple[str, str, str, Parties]:
    """(project_id, function_id, society_id, parties) of a freshly assigned function."""
    function_id, society_id = short_id("fn"), short_id("soc")
    project_id = assigned_case(
        stack,
        function_id=function_id,
        society_id=society_id,
        jurisdiction=DEYANG,
        association=ASSOCIATION,
        department=DEPARTMENT,
    )
    return project_id, function_id, society_id, Parties(stack, society_id)


def agreement(milestones: list[tuple[str, date]], weights: tuple[str, ...] = ("40", "35", "25")) -> dict[str, Any]:
    return {
        "rights_and_obligations": "三方权利义务见任务书第二章",
        "cooperation_mode": "学会承接、部门指导、科协督导",
        "goals": ["完成 2026 年度软件工程技术人员水平评价"],
        "key_tasks": ["制定评价标准", "组织评价"],
        "milestones": [
            {"milestone_id": m_id, "title": f"里程碑 {m_id}", "due_date": due.isoformat()} for m_id, due in milestones
        ],
        "quality_requirements": ["评价过程全程留痕"],
        "indicators": [
            {"name": "people_evaluated", "unit": "persons", "target": "100", "weight": weights[0]},
            {"name": "standards_issued", "unit": "documents", "target": "10", "weight": weights[1]},
            {"name": "employer_visits", "unit": "visits", "target": "8", "weight": weights[2]},
        ],
        "funding": [{"source": "能力提升项目经费", "amount_fen": 20_000_000}],
    }


def to_deployment(p: Parties, project_id: str) -> None:
    base = f"/cases/{project_id}"
    assert ok(p.society, f"{base}/plans", {"content": "实施方案", "goals": ["评价 100 人"]}) == ["PlanDrafted"]
    assert ok(p.society, f"{base}/plan-submissions", {"version": 1}) == ["PlanSubmitted"]
    assert ok(p.department, f"{base}/plan-approvals", {"version": 1, "note": "同意"}) == ["PlanApproved"]
    assert ok(p.association, f"{base}/deployment", {"basis": "部署动员会"}) == ["PhaseChanged"]


def to_implementation(p: Parties, project_id: str, milestones: list[tuple[str, date]]) -> None:
    base = f"/cases/{project_id}"
    to_deployment(p, project_id)
    leader = {"person_name": "王秘书长", "rank": "secretary_general", "board_resolution_ref": "理事会决议〔2026〕1号"}
    assert ok(p.society, f"{base}/leader", leader) == ["LeaderAppointed"]
    assert ok(p.association, f"{base}/agreements", agreement(milestones)) == ["AgreementDrafted"]
    assert ok(p.department, f"{base}/agreement-signatures", {"version": 1}) == ["AgreementSigned"]
    assert ok(p.society, f"{base}/agreement-signatures", {"version": 1}) == ["AgreementSigned"]
    signed = ok(p.association, f"{base}/agreement-signatures", {"version": 1})
    assert signed == ["AgreementSigned", "AgreementTookEffect"]
    assert ok(p.association, f"{base}/implementation", {"basis": "任务书生效"}) == ["PhaseChanged"]


def case(client: httpx.Client, project_id: str) -> dict[str, Any]:
    response = client.get(f"/cases/{project_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def function_status(stack: Stack, function_id: str) -> str:
    registry = stack.client("registry", stack.token("association", ASSOCIATION, DEYANG))
    status: str = registry.get(f"/functions/{function_id}").json()["status"]
    return status


def track_record(stack: Stack, society_id: str) -> list[dict[str, Any]]:
    capability = stack.client("capability", stack.token("association", ASSOCIATION, DEYANG))
    response = capability.get(f"/societies/{society_id}")
    assert response.status_code == 200, response.text
    record: list[dict[str, Any]] = response.json()["track_record"]
    return record


def today() -> date:
    return datetime.now(UTC).date()


# --- tests -----------------------------------------------------------------------------


def test_a_case_walks_through_all_four_phases_to_a_typical_case(supervision_stack: Stack) -> None:
    stack = supervision_stack
    project_id, function_id, society_id, p = new_case(stack)
    base = f"/cases/{project_id}"
    opened = case(p.association, project_id)
    assert opened["phase"] == "preparation"
    assert (opened["function_id"], opened["society_id"], opened["department"], opened["jurisdiction"]) == (
        function_id,
        society_id,
        DEPARTMENT,
        DEYANG,
    )

    # 筹备协调: the plan, returned once, approved in its second version
    assert ok(p.society, f"{base}/plans", {"content": "实施方案 v1", "goals": ["评价 100 人"]}) == ["PlanDrafted"]
    assert ok(p.society, f"{base}/plan-submissions", {"version": 1}) == ["PlanSubmitted"]
    returned = {"version": 1, "reasons": ["缺少进度安排", "经费测算不清"]}
    assert ok(p.department, f"{base}/plan-returns", returned) == ["PlanReturned"]
    assert ok(p.society, f"{base}/plans", {"content": "实施方案 v2", "goals": ["评价 100 人"]}) == ["PlanDrafted"]
    assert ok(p.society, f"{base}/plan-submissions", {"version": 2}) == ["PlanSubmitted"]
    assert ok(p.department, f"{base}/plan-approvals", {"version": 2, "note": "同意实施"}) == ["PlanApproved"]
    plans = case(p.association, project_id)["plans"]
    assert plans["1"]["status"] == "returned" and plans["1"]["reasons"] == returned["reasons"]
    assert plans["2"]["status"] == "approved"
    in_preparation = datetime.now(UTC)

    # 部署动员: leader, team, the tripartite task agreement
    assert ok(p.association, f"{base}/deployment", {"basis": "部署动员会"}) == ["PhaseChanged"]
    leader = {"person_name": "王秘书长", "rank": "secretary_general", "board_resolution_ref": "理事会决议〔2026〕1号"}
    assert ok(p.society, f"{base}/leader", leader) == ["LeaderAppointed"]
    for client, party in ((p.society, "society"), (p.department, "department"), (p.association, "association")):
        member = {"member_id": short_id(party), "name": f"{party} 成员", "party": party, "role_in_team": "联络"}
        assert ok(client, f"{base}/team-members", member) == ["TeamMemberAdded"]
    later, latest = today() + timedelta(days=60), today() + timedelta(days=180)
    assert ok(p.association, f"{base}/agreements", agreement([("m1", later), ("m2", latest)])) == ["AgreementDrafted"]
    assert ok(p.department, f"{base}/agreement-signatures", {"version": 1}) == ["AgreementSigned"]
    assert ok(p.society, f"{base}/agreement-signatures", {"version": 1}) == ["AgreementSigned"]
    signed = ok(p.association, f"{base}/agreement-signatures", {"version": 1})
    assert signed == ["AgreementSigned", "AgreementTookEffect"]
    assert ok(p.society, f"{base}/agreement-signatures", {"version": 1}) == []  # a retry records nothing
    wait_until(
        lambda: function_status(stack, function_id) == "transferred",
        message="the registry to mark the function transferred from AgreementTookEffect",
    )
    deployed = case(p.association, project_id)
    assert deployed["effective_version"] == 1
    assert {m["party"] for m in deployed["team"].values()} == {"society", "department", "association"}

    # 实施: progress, feedback, supervision, rectification, money, evaluation
    assert ok(p.association, f"{base}/implementation", {"basis": "任务书生效"}) == ["PhaseChanged"]
    done = {"milestone_id": "m1", "status": "done", "evidence": ["评价标准.pdf"]}
    assert ok(p.society, f"{base}/milestone-reports", done) == ["MilestoneReported"]
    going = {"milestone_id": "m2", "status": "in_progress", "evidence": []}
    assert ok(p.society, f"{base}/milestone-reports", going) == ["MilestoneReported"]
    for name, value, period in (
        ("people_evaluated", "50", "2026-Q1"),
        ("people_evaluated", "100", "2026-Q2"),  # the latest counts, whatever its period
        ("standards_issued", "14", "2026-Q2"),  # over target: achievement capped at 1
        ("employer_visits", "1", "2026-Q2"),
    ):
        body = {"name": name, "value": value, "period": period}
        assert ok(p.society, f"{base}/indicator-measurements", body) == ["IndicatorMeasured"]
    feedback = {"opinions": ["加强宣传", "扩大评价范围"]}
    assert ok(p.department, f"{base}/government-feedback", feedback) == ["GovernmentFeedbackGiven"]
    meeting = {
        "meeting_id": short_id("meeting"),
        "held_on": today().isoformat(),
        "attendees": ["科协", "人社局", "学会"],
        "progress": "m1 已完成",
        "stage_goals": ["完成 m2"],
        "next_priorities": ["组织第二批评价"],
        "issues_to_coordinate": ["场地"],
    }
    assert ok(p.association, f"{base}/supervision-meetings", meeting) == ["SupervisionMeetingHeld"]

    rid = short_id("rect")
    order = {
        "rectification_id": rid,
        "required_actions": ["补齐评价档案"],
        "deadline": (today() + timedelta(days=30)).isoformat(),
        "basis": "督导例会纪要",
    }
    assert ok(p.association, f"{base}/rectification-orders", order) == ["RectificationOrdered"]
    first = {"rectification_id": rid, "actions_taken": ["补了一部分"], "evidence": ["清单.xlsx"]}
    assert ok(p.society, f"{base}/rectification-reports", first) == ["RectificationReported"]
    rejection = {"rectification_id": rid, "reasons": ["档案仍不全"], "basis": "复查记录"}
    assert ok(p.association, f"{base}/rectification-rejections", rejection) == ["RectificationRejected"]
    second = {"rectification_id": rid, "actions_taken": ["全部补齐"], "evidence": ["档案目录.pdf"]}
    assert ok(p.society, f"{base}/rectification-reports", second) == ["RectificationReported"]
    acceptance = {"rectification_id": rid, "basis": "复查合格"}
    assert ok(p.association, f"{base}/rectification-acceptances", acceptance) == ["RectificationAccepted"]
    rectification = case(p.association, project_id)["rectifications"][rid]
    assert rectification["status"] == "accepted" and rectification["actions_taken"] == ["全部补齐"]

    allocation = {"amount_fen": 20_000_000, "source": "能力提升项目经费", "basis": "德财〔2026〕3号"}
    assert ok(p.association, f"{base}/funding-allocations", allocation) == ["FundingAllocated"]
    assert ok(p.finance, f"{base}/disbursements", {"amount_fen": 12_500_000, "purpose": "首期"}) == ["FundingDisbursed"]
    assert ok(p.finance, f"{base}/disbursements", {"amount_fen": 2_345_678, "purpose": "二期"}) == ["FundingDisbursed"]
    cut = {"delta_fen": -1_000_000, "basis": "预算调整"}
    assert ok(p.association, f"{base}/funding-adjustments", cut) == ["FundingAdjusted"]
    ledger = case(p.association, project_id)["ledger"]
    assert ledger == {
        "allocated": 20_000_000,
        "adjusted": -1_000_000,
        "awarded": 0,
        "disbursed": 14_845_678,
        "balance": 20_000_000 - 1_000_000 - 14_845_678,
    }
    assert ledger["balance"] == 4_154_322

    survey = {"respondent_group": "departments", "respondents": 12, "satisfied": 12}
    assert ok(p.association, f"{base}/satisfaction-surveys", survey) == ["SatisfactionSurveyed"]
    survey = {"respondent_group": "societies", "respondents": 30, "satisfied": 30}
    assert ok(p.association, f"{base}/satisfaction-surveys", survey) == ["SatisfactionSurveyed"]
    assert case(p.association, project_id)["satisfaction_rates"] == {"departments": "100.00", "societies": "100.00"}
    survey = {"respondent_group": "public", "respondents": 800, "satisfied": 797}
    assert ok(p.association, f"{base}/satisfaction-surveys", survey) == ["SatisfactionSurveyed"]
    # 100 × 797 / 800 = 99.625 → 99.62, rounded half to even
    assert case(p.association, project_id)["satisfaction_rates"]["public"] == "99.62"

    self_evaluation = {"report_ref": "绩效自评报告.pdf", "claimed_score": "85"}
    assert ok(p.society, f"{base}/self-evaluation", self_evaluation) == ["SelfEvaluationSubmitted"]
    evaluator_org = short_id("sc-eval")
    assert ok(p.association, f"{base}/evaluator-commission", {"evaluator_org": evaluator_org}) == [
        "EvaluatorCommissioned"
    ]
    evaluator = stack.client("supervision", stack.token("evaluator", evaluator_org, DEYANG))
    report = {"report_ref": "第三方评估报告.pdf", "findings": ["组织规范"]}
    assert ok(evaluator, f"{base}/third-party-evaluations", report) == ["ThirdPartyEvaluationSubmitted"]
    for kind in ("overall", "on_site"):
        finance = {"kind": kind, "report_ref": f"财政绩效评价-{kind}.pdf", "findings": ["资金使用合规"]}
        assert ok(p.finance, f"{base}/finance-evaluations", finance) == ["FinanceEvaluationSubmitted"]

    assert ok(p.association, f"{base}/evaluation") == ["EvaluationCompleted"]
    # performance-score-v1 by hand: Σ w × min(v / t, 1), rounded once, half to even
    #   people_evaluated  40 × min(100/100, 1) = 40
    #   standards_issued  35 × min(14/10, 1)   = 35
    #   employer_visits   25 × min(1/8, 1)     = 3.125
    #   total 78.125 → 78.12 (half to even, not 78.13) → good (75 ≤ 78.12 < 90)
    by_hand = (Decimal(40) + Decimal(35) + Decimal(25) * Decimal(1) / Decimal(8)).quantize(
        Decimal("0.01"), rounding=ROUND_HALF_EVEN
    )
    assert by_hand == Decimal("78.12")
    evaluation = case(p.association, project_id)["evaluation"]
    assert Decimal(evaluation["score"]) == by_hand and evaluation["score"] == "78.12"
    assert evaluation["grade"] == "good"
    assert evaluation["method"] == "performance-score-v1"
    assert [(i["name"], Decimal(i["value"])) for i in evaluation["inputs"]] == [
        ("people_evaluated", Decimal(100)),
        ("standards_issued", Decimal(14)),
        ("employer_visits", Decimal(1)),
    ]
    in_implementation = datetime.now(UTC)

    # 系统总结
    assert ok(p.association, f"{base}/summary", {"basis": "实施期满"}) == ["PhaseChanged"]
    summary = {"report_ref": "项目总结报告.pdf", "replicable_models": ["学会承接水平评价模式"]}
    assert ok(p.society, f"{base}/summary-report", summary) == ["SummaryReportSubmitted"]
    assert ok(p.association, f"{base}/typical-case", {"rationale": "可复制可推广"}) == ["TypicalCaseDesignated"]
    assert ok(p.association, f"{base}/closure", {"basis": "总结验收"}) == ["PhaseChanged"]

    closed = case(p.association, project_id)
    assert closed["phase"] == "closed"
    assert [e["event_type"] for e in closed["timeline"]] == [
        "CaseOpened",
        "PlanDrafted",
        "PlanSubmitted",
        "PlanReturned",
        "PlanDrafted",
        "PlanSubmitted",
        "PlanApproved",
        "PhaseChanged",
        "LeaderAppointed",
        "TeamMemberAdded",
        "TeamMemberAdded",
        "TeamMemberAdded",
        "AgreementDrafted",
        "AgreementSigned",
        "AgreementSigned",
        "AgreementSigned",
        "AgreementTookEffect",
        "PhaseChanged",
        "MilestoneReported",
        "MilestoneReported",
        "IndicatorMeasured",
        "IndicatorMeasured",
        "IndicatorMeasured",
        "IndicatorMeasured",
        "GovernmentFeedbackGiven",
        "SupervisionMeetingHeld",
        "RectificationOrdered",
        "RectificationReported",
        "RectificationRejected",
        "RectificationReported",
        "RectificationAccepted",
        "FundingAllocated",
        "FundingDisbursed",
        "FundingDisbursed",
        "FundingAdjusted",
        "SatisfactionSurveyed",
        "SatisfactionSurveyed",
        "SatisfactionSurveyed",
        "SelfEvaluationSubmitted",
        "EvaluatorCommissioned",
        "ThirdPartyEvaluationSubmitted",
        "FinanceEvaluationSubmitted",
        "FinanceEvaluationSubmitted",
        "EvaluationCompleted",
        "PhaseChanged",
        "SummaryReportSubmitted",
        "TypicalCaseDesignated",
        "PhaseChanged",
    ]
    phases = [
        (e["payload"]["from_phase"], e["payload"]["to_phase"])
        for e in closed["timeline"]
        if e["event_type"] == "PhaseChanged"
    ]
    assert phases == [
        ("preparation", "deployment"),
        ("deployment", "implementation"),
        ("implementation", "summary"),
        ("summary", "closed"),
    ]
    third_party = next(e for e in closed["timeline"] if e["event_type"] == "ThirdPartyEvaluationSubmitted")
    assert third_party["actor"]["role"] == "evaluator" and third_party["payload"]["evaluator_org"] == evaluator_org
    assert closed["version"] == len(closed["timeline"])

    # the capability service noted the outcomes in the society's track record
    outcomes = wait_until(
        lambda: (
            (record := [e["outcome"] for e in track_record(stack, society_id) if e["project_id"] == project_id])
            and "good" in record
            and record
        ),
        message="the capability service to note the evaluation grade",
    )
    assert outcomes == ["rectification_ordered", "rectification_accepted", "good"]

    association = p.association
    listed = association.get("/cases", params={"jurisdiction": DEYANG, "phase": "closed"}).json()
    row = next(item for item in listed["items"] if item["project_id"] == project_id)
    assert row["grade"] == "good" and row["typical_case"] is True and row["open_rectifications"] == 0
    active = association.get("/cases", params={"jurisdiction": DEYANG, "phase": "implementation"}).json()
    assert project_id not in {item["project_id"] for item in active["items"]}
    subtree = association.get(
        "/cases", params={"jurisdiction": SICHUAN, "include_subtree": "true", "phase": "closed"}
    ).json()
    assert project_id in {item["project_id"] for item in subtree["items"]}

    then = association.get(f"{base}/as-of", params={"at": in_preparation.isoformat()})
    assert then.status_code == 200, then.text
    assert then.json()["phase"] == "preparation" and then.json()["plans"]["2"]["status"] == "approved"
    assert then.json()["version"] == 7
    later_view = association.get(f"{base}/as-of", params={"at": in_implementation.isoformat()}).json()
    assert later_view["phase"] == "implementation" and later_view["evaluation"]["grade"] == "good"
    assert later_view["summary_report"] is None
    opened_at = datetime.fromisoformat(closed["timeline"][0]["occurred_at"])
    before_opening = association.get(f"{base}/as-of", params={"at": (opened_at - timedelta(seconds=1)).isoformat()})
    assert_problem(before_opening, 404, "case_not_yet_open")
    naive = association.get(f"{base}/as-of", params={"at": in_preparation.replace(tzinfo=None).isoformat()})
    assert_problem(naive, 422, "naive_time")


def test_refusals_are_clear(supervision_stack: Stack) -> None:
    stack = supervision_stack
    project_id, _, _, p = new_case(stack)
    base = f"/cases/{project_id}"
    to_deployment(p, project_id)

    def timeline_length() -> int:
        return len(case(p.association, project_id)["timeline"])

    length = timeline_length()

    def refused(response: httpx.Response, status: int, code: str) -> None:
        assert_problem(response, status, code)
        assert timeline_length() == length, f"{code}: the refusal appended an event"

    leader = {"person_name": "李理事", "rank": "director", "board_resolution_ref": "理事会决议〔2026〕2号"}
    refused(post(p.society, f"{base}/leader", leader), 422, "leader_rank_too_low")
    leader = {"person_name": "王秘书长", "rank": "secretary_general", "board_resolution_ref": " "}
    refused(post(p.society, f"{base}/leader", leader), 422, "board_resolution_required")

    future = today() + timedelta(days=90)
    refused(
        post(p.association, f"{base}/agreements", agreement([("m1", future)], weights=("40", "35", "20"))),
        422,
        "indicator_weights",
    )
    assert ok(p.association, f"{base}/agreements", agreement([("m1", future)])) == ["AgreementDrafted"]
    assert ok(p.department, f"{base}/agreements", agreement([("m1", future + timedelta(days=1))])) == [
        "AgreementDrafted"
    ]
    length += 2
    refused(post(p.society, f"{base}/agreement-signatures", {"version": 1}), 422, "stale_agreement_version")
    assert ok(p.department, f"{base}/agreement-signatures", {"version": 2}) == ["AgreementSigned"]
    assert ok(p.society, f"{base}/agreement-signatures", {"version": 2}) == ["AgreementSigned"]
    length += 2
    refused(post(p.association, f"{base}/implementation", {"basis": "尚缺科协签字"}), 422, "agreement_not_in_effect")

    other_society = stack.client("supervision", stack.token("society", short_id("soc-other"), DEYANG))
    report = {"milestone_id": "m1", "status": "in_progress", "evidence": []}
    refused(post(other_society, f"{base}/milestone-reports", report), 403, "not_case_society")
    mianyang = stack.client("supervision", stack.token("association", "mianyang-cast", MIANYANG))
    refused(post(mianyang, f"{base}/agreement-signatures", {"version": 2}), 403, "outside_jurisdiction")
    refused(post(p.society, f"{base}/implementation", {"basis": "我们自己开始"}), 403, "role_not_permitted")
    other_department = stack.client("supervision", stack.token("department", "deyang-finance", DEYANG))
    refused(post(other_department, f"{base}/agreement-signatures", {"version": 2}), 403, "not_case_department")
    member = {"member_id": short_id("m"), "name": "张三", "party": "society", "role_in_team": "联络"}
    refused(post(p.department, f"{base}/team-members", member), 403, "not_own_party")
    stranger = stack.client("supervision", stack.token("evaluator", "uncommissioned-eval", DEYANG))
    report_body = {"report_ref": "评估报告.pdf", "findings": []}
    refused(post(stranger, f"{base}/third-party-evaluations", report_body), 403, "evaluator_not_commissioned")
    public = stack.client("supervision", stack.token("public", "citizen", "100000"))
    refused(post(public, f"{base}/warnings", {"basis": "举报", "text": "进度慢"}), 403, "read_only_role")

    assert_problem(p.association.get(f"/cases/{project_id}-nope"), 404, "case_not_found")
    state = case(p.association, project_id)
    assert state["phase"] == "deployment" and state["leader"] is None
    assert sorted(state["signatures"]) == ["department", "society"] and state["effective_version"] is None


def test_a_milestone_past_its_due_date_is_marked_overdue_by_the_stream_processor(supervision_stack: Stack) -> None:
    stack = supervision_stack
    project_id, _, _, p = new_case(stack)
    yesterday, next_month = today() - timedelta(days=1), today() + timedelta(days=30)
    to_implementation(p, project_id, [("late", yesterday), ("ontime", next_month)])
    order = {
        "rectification_id": "r-late",
        "required_actions": ["补齐档案"],
        "deadline": yesterday.isoformat(),
        "basis": "例会",
    }
    assert ok(p.association, f"/cases/{project_id}/rectification-orders", order) == ["RectificationOrdered"]
    order = {**order, "rectification_id": "r-ontime", "deadline": next_month.isoformat()}
    assert ok(p.association, f"/cases/{project_id}/rectification-orders", order) == ["RectificationOrdered"]

    def overdue_listed() -> bool:
        body = p.association.get("/overdue", params={"jurisdiction": DEYANG}).json()
        return project_id in {c["project_id"] for c in body["cases"]}

    wait_until(overdue_listed, timeout=60, interval=0.5, message="the deadline processor to mark the milestone overdue")
    wait_until(
        lambda: len(case(p.association, project_id)["overdue"]) == 2,
        timeout=30,
        message="both the milestone and the rectification to be marked overdue",
    )
    state = case(p.association, project_id)
    assert state["overdue"] == [
        {"kind": "milestone", "item_id": "late", "title": "里程碑 late", "due_date": yesterday.isoformat()},
        {"kind": "rectification", "item_id": "r-late", "title": "补齐档案", "due_date": yesterday.isoformat()},
    ]
    assert state["rectifications"]["r-late"]["overdue"] is True
    assert state["rectifications"]["r-ontime"]["overdue"] is False
    assert state["milestones"]["late"]["overdue"] is True
    assert state["milestones"]["ontime"]["overdue"] is False
    assert [e["event_type"] for e in state["timeline"]].count("RectificationOverdue") == 1
    marked = [e for e in state["timeline"] if e["event_type"] == "MilestoneOverdue"]
    assert len(marked) == 1
    assert marked[0]["payload"]["milestone_id"] == "late"
    assert marked[0]["payload"]["due_date"] == yesterday.isoformat()
    assert date.fromisoformat(marked[0]["payload"]["detected_on"]) > yesterday
    assert marked[0]["actor"]["role"] == "system"

    listed = p.association.get("/overdue", params={"jurisdiction": SICHUAN}).json()  # an ancestor sees it too
    entry = next(c for c in listed["cases"] if c["project_id"] == project_id)
    assert [i["item_id"] for i in entry["overdue"]] == ["late", "r-late"]
    flagged = p.association.get("/cases", params={"jurisdiction": DEYANG, "overdue": "true"}).json()
    assert project_id in {item["project_id"] for item in flagged["items"]}
    elsewhere = p.association.get("/overdue", params={"jurisdiction": MIANYANG}).json()
    assert project_id not in {c["project_id"] for c in elsewhere["cases"]}

    # done clears the overdue milestone; an accepted rectification clears the rectification
    done = {"milestone_id": "late", "status": "done", "evidence": ["迟交的成果.pdf"]}
    assert ok(p.society, f"/cases/{project_id}/milestone-reports", done) == ["MilestoneReported"]
    report = {"rectification_id": "r-late", "actions_taken": ["已补齐"], "evidence": []}
    assert ok(p.society, f"/cases/{project_id}/rectification-reports", report) == ["RectificationReported"]
    acceptance = {"rectification_id": "r-late", "basis": "复查合格"}
    assert ok(p.association, f"/cases/{project_id}/rectification-acceptances", acceptance) == ["RectificationAccepted"]
    assert case(p.association, project_id)["overdue"] == []
    assert not overdue_listed()


def test_termination_returns_the_function_in_the_registry(supervision_stack: Stack) -> None:
    stack = supervision_stack
    project_id, function_id, society_id, p = new_case(stack)
    base = f"/cases/{project_id}"
    to_implementation(p, project_id, [("m1", today() + timedelta(days=60))])
    wait_until(
        lambda: function_status(stack, function_id) == "transferred",
        message="the registry to mark the function transferred",
    )
    assert_problem(post(p.association, f"{base}/termination", {"basis": "", "reason": "x"}), 422, "basis_required")
    termination = {"basis": "督导意见〔2026〕5号", "reason": "学会无力继续承接"}
    assert ok(p.association, f"{base}/termination", termination) == ["ProjectTerminated"]
    assert case(p.association, project_id)["phase"] == "terminated"

    wait_until(
        lambda: function_status(stack, function_id) == "returned",
        message="the registry to return the function from ProjectTerminated",
    )
    registry = stack.client("registry", stack.token("association", ASSOCIATION, DEYANG))
    history = registry.get(f"/functions/{function_id}").json()["history"]
    assert [e["event_type"] for e in history][-2:] == ["FunctionTransferred", "FunctionReturned"]
    assert project_id in history[-1]["payload"]["reason"]
    wait_until(
        lambda: (
            "terminated" in [e["outcome"] for e in track_record(stack, society_id) if e["project_id"] == project_id]
        ),
        message="the capability service to note the termination in the track record",
    )
    again = post(p.association, f"{base}/implementation", {"basis": "重启"})
    assert_problem(again, 422, "invalid_phase")

    # the returned function can be opened and assigned again: that is a case of its own
    department = stack.client("registry", stack.token("department", DEPARTMENT, DEYANG))
    assert department.post(f"/functions/{function_id}/opening", json={"min_applicants": 1}).status_code == 200
    recommend_through_capability(stack, function_id, society_id, DEYANG, ASSOCIATION)
    assignment = {"society_id": society_id, "society_name": f"学会 {society_id}"}
    assert department.post(f"/functions/{function_id}/assignment", json=assignment).status_code == 200
    history = department.get(f"/functions/{function_id}").json()["history"]
    second = f"{function_id}-{history[-1]['stream_version']}"
    assert history[-1]["event_type"] == "FunctionAssigned" and second != project_id
    wait_until(
        lambda: p.association.get(f"/cases/{second}").status_code == 200,
        message="a second case to open from the second assignment",
    )
    assert case(p.association, second)["phase"] == "preparation"
    assert case(p.association, project_id)["phase"] == "terminated"


def test_a_rectification_ordered_in_the_summary_phase_is_watched_too(supervision_stack: Stack) -> None:
    stack = supervision_stack
    project_id, _, _, p = new_case(stack)
    base = f"/cases/{project_id}"
    to_implementation(p, project_id, [("m1", today() + timedelta(days=60))])
    assert ok(p.association, f"{base}/summary", {"basis": "实施期满"}) == ["PhaseChanged"]
    yesterday = (today() - timedelta(days=1)).isoformat()
    order = {
        "rectification_id": "r-summary",
        "required_actions": ["补交总结材料"],
        "deadline": yesterday,
        "basis": "验收",
    }
    assert ok(p.association, f"{base}/rectification-orders", order) == ["RectificationOrdered"]
    wait_until(
        lambda: case(p.association, project_id)["overdue"],
        timeout=10,
        interval=0.5,
        message="the rectification ordered in the summary phase to be marked overdue",
    )


def test_funding_can_never_be_overdrawn(supervision_stack: Stack) -> None:
    stack = supervision_stack
    project_id, _, _, p = new_case(stack)
    base = f"/cases/{project_id}"
    allocation = {"amount_fen": 1_000_000, "source": "能力提升项目经费", "basis": "德财〔2026〕9号"}
    assert ok(p.association, f"{base}/funding-allocations", allocation) == ["FundingAllocated"]
    assert ok(p.finance, f"{base}/disbursements", {"amount_fen": 400_000, "purpose": "首期"}) == ["FundingDisbursed"]
    before = case(p.association, project_id)
    expected = {"allocated": 1_000_000, "adjusted": 0, "awarded": 0, "disbursed": 400_000, "balance": 600_000}
    assert before["ledger"] == expected

    body = assert_problem(
        post(p.finance, f"{base}/disbursements", {"amount_fen": 600_001, "purpose": "超支"}), 422, "funding_exceeded"
    )
    assert body["balance"] == 600_000
    cut = {"delta_fen": -600_001, "basis": "预算调整"}
    assert_problem(post(p.association, f"{base}/funding-adjustments", cut), 422, "funding_exceeded")
    fractional = post(p.finance, f"{base}/disbursements", {"amount_fen": 0.5, "purpose": "半分"})
    assert fractional.status_code == 422, fractional.text
    after = case(p.association, project_id)
    assert after["ledger"] == expected and len(after["timeline"]) == len(before["timeline"])

    assert ok(p.finance, f"{base}/disbursements", {"amount_fen": 600_000, "purpose": "尾款"}) == ["FundingDisbursed"]
    assert case(p.association, project_id)["ledger"]["balance"] == 0
    assert_problem(
        post(p.finance, f"{base}/disbursements", {"amount_fen": 1, "purpose": "再付"}), 422, "funding_exceeded"
    )
    final = case(p.association, project_id)["ledger"]
    assert final == {"allocated": 1_000_000, "adjusted": 0, "awarded": 0, "disbursed": 1_000_000, "balance": 0}
