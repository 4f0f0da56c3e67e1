"""The public portal's pure helpers and templates, without a database or a browser."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
import yaml

from services.disclosure import portal
from shared.errors import InvalidInput

POLICY = Path(portal.__file__).with_name("policy.yaml")


# --- labels -------------------------------------------------------------------------------


def test_every_function_status_phase_and_grade_has_its_chinese_label() -> None:
    assert [portal.status_label(s) for s in portal.FUNCTION_STATUS_LABELS] == [
        "拟转移",
        "征求意见中",
        "已列入清单",
        "开放承接",
        "已指定学会",
        "已转移",
        "已退回",
        "已撤回",
        "已移出清单",
    ]
    assert [portal.phase_label(p) for p in portal.PHASE_LABELS] == [
        "筹备协调",
        "部署动员",
        "实施",
        "系统总结",
        "已结项",
        "暂停",
        "终止",
    ]
    assert [portal.grade_label(g) for g in ("excellent", "good", "pass", "fail")] == ["优秀", "良好", "合格", "不合格"]
    assert portal.status_label(None) == "—"
    assert portal.status_label("something_new") == "something_new"


def test_every_public_type_of_the_disclosure_policy_has_a_label_and_unknown_types_show_by_name() -> None:
    policy = yaml.safe_load(POLICY.read_text(encoding="utf-8"))
    public_types = {e["public_type"] for e in policy["events"].values() if e.get("disclose")}
    assert public_types, "the policy discloses something"
    assert public_types <= portal.PUBLIC_TYPE_LABELS.keys(), public_types - portal.PUBLIC_TYPE_LABELS.keys()
    assert all(re.search(r"[\u4e00-\u9fff]", portal.PUBLIC_TYPE_LABELS[t]) for t in public_types)
    assert portal.public_type_label("AgreementTookEffect") == "三方任务书生效"
    assert portal.public_type_label("SomethingNew") == "SomethingNew"


def test_jurisdiction_names_fall_back_to_the_level() -> None:
    assert portal.jurisdiction_name("510600") == "德阳市（510600）"
    assert portal.jurisdiction_name("100000") == "全国（中国科协）（100000）"
    assert portal.jurisdiction_name("520100") == "市级行政区（520100）"
    assert portal.jurisdiction_name("510699") == "县级行政区（510699）"


# --- money, rates, periods -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("fen", "text"),
    [
        (20_000_000, "200,000.00"),
        (4_154_322, "41,543.22"),
        (5, "0.05"),
        (100, "1.00"),
        (0, "0.00"),
        (None, "0.00"),
        (-1_000_000, "-10,000.00"),
        (-7, "-0.07"),
    ],
)
def test_fen_are_shown_as_yuan(fen: int | None, text: str) -> None:
    assert portal.yuan(fen) == text


def test_satisfaction_rate_is_rounded_half_to_even_and_absent_without_respondents() -> None:
    assert portal.rate_percent(797, 800) == "99.62"
    assert portal.rate_percent(12, 12) == "100.00"
    assert portal.rate_percent(0, 0) is None


def test_briefing_period_defaults_to_the_month_and_refuses_bad_dates() -> None:
    today = date(2026, 3, 17)
    assert portal.briefing_period(None, None, today) == (date(2026, 3, 1), today)
    assert portal.briefing_period("2026-01-01", "2026-01-31", today) == (date(2026, 1, 1), date(2026, 1, 31))
    for start, end, code in (
        ("2026-13-01", "2026-12-31", "invalid_date"),
        ("yesterday", "2026-12-31", "invalid_date"),
        ("2026-02-01", "2026-01-01", "invalid_period"),
        ("2024-01-01", "2026-01-01", "period_too_long"),
    ):
        with pytest.raises(InvalidInput) as caught:
            portal.briefing_period(start, end, today)
        assert caught.value.code == code and caught.value.status == 422


def test_a_period_is_whole_days_in_china_time() -> None:
    start, end = portal.period_bounds(date(2026, 1, 1), date(2026, 1, 31))
    assert start.astimezone(UTC) == datetime(2025, 12, 31, 16, tzinfo=UTC)
    assert end.astimezone(UTC) == datetime(2026, 1, 31, 16, tzinfo=UTC)
    assert portal.local_date(datetime(2026, 1, 31, 17, tzinfo=UTC)) == "2026-02-01"


# --- list versions -------------------------------------------------------------------------


def entry(fid: str, title: str, status: str = "listed", **extra: object) -> dict[str, object]:
    return {"function_id": fid, "title": title, "department": "guanghan-sci", "status": status, **extra}


def test_list_diff_finds_added_removed_and_changed_entries_by_function_id() -> None:
    v1 = [entry("gh-0", "团体标准 0"), entry("gh-1", "团体标准 1")]
    v2 = [entry("gh-2", "团体标准 2"), entry("gh-1", "团体标准 1（修订）", status="open")]
    diff = portal.list_diff(v1, v2)
    assert [e["function_id"] for e in diff["added"]] == ["gh-2"]
    assert [e["function_id"] for e in diff["removed"]] == ["gh-0"]
    assert diff["changed"] == [
        {
            "function_id": "gh-1",
            "title": "团体标准 1（修订）",
            "fields": {
                "status": {"from": "listed", "to": "open"},
                "title": {"from": "团体标准 1", "to": "团体标准 1（修订）"},
            },
        }
    ]
    assert portal.list_diff(v2, v2) == {"added": [], "removed": [], "changed": []}
    first = portal.list_diff([], v1)
    assert [e["function_id"] for e in first["added"]] == ["gh-0", "gh-1"]


def test_a_field_present_on_one_side_only_is_a_change() -> None:
    diff = portal.list_diff([entry("a", "A")], [entry("a", "A", qualification_conditions=["3 年"])])
    assert diff["changed"][0]["fields"] == {"qualification_conditions": {"from": None, "to": ["3 年"]}}


def test_list_entry_values_are_shown_in_chinese() -> None:
    assert portal.show_value("status", "open") == "开放承接"
    assert portal.show_value("category", "technical_standard") == "技术标准研制"
    assert portal.show_value("thresholds", [{"name": "专职人员", "requirement": ">= 3"}]) == "专职人员 >= 3"
    assert portal.show_value("qualification_conditions", []) == "—"
    assert portal.show_value("title", None) == "—"


# --- jurisdictions and paging --------------------------------------------------------------


def test_subtree_bounds_match_the_jurisdiction_tree() -> None:
    assert portal.subtree_bounds("100000") == ("100000", "999999")
    assert portal.subtree_bounds("510000") == ("510000", "519999")
    assert portal.subtree_bounds("510600") == ("510600", "510699")
    assert portal.subtree_bounds("510681") == ("510681", "510681")


def test_counts_roll_up_to_the_jurisdiction_and_its_direct_children() -> None:
    counts = {"510000": 1, "510600": 2, "510681": 3, "510700": 4, "520000": 9}
    assert portal.rollup(counts, "510000") == {"510000": 1, "510600": 5, "510700": 4}
    assert portal.rollup(counts, "100000") == {"510000": 10, "520000": 9}
    assert portal.rollup(counts, "510600") == {"510600": 2, "510681": 3}
    assert portal.child_under("510600", "510700") is None


def test_count_axes_are_whole_numbers() -> None:
    assert portal.count_axis(0) == [0, 1]
    assert portal.count_axis(2) == [0, 1, 2]
    assert portal.count_axis(17) == [0, 3, 6, 9, 12, 15, 18]


def test_pager() -> None:
    pager = portal.Pager(page=2, per_page=20, total=45)
    assert (pager.offset, pager.pages, pager.has_previous, pager.has_next) == (20, 3, True, True)
    empty = portal.Pager(page=1, per_page=20, total=0)
    assert (empty.pages, empty.has_previous, empty.has_next) == (1, False, False)
    uncounted = portal.Pager(page=3, per_page=20, total=None, more=True)
    assert (uncounted.offset, uncounted.pages, uncounted.has_previous, uncounted.has_next) == (40, None, True, True)
    assert not portal.Pager(page=1, per_page=20, total=None).has_next


# --- facts, charts, templates --------------------------------------------------------------


def test_facts_are_summarised_in_chinese() -> None:
    changed = {"from_phase": "deployment", "to_phase": "implementation", "basis": "任务书生效"}
    assert portal.fact_summary("PhaseChanged", changed) == "部署动员 → 实施；依据：任务书生效"
    assert portal.fact_summary("MilestoneReported", {"milestone_id": "m1", "status": "done"}, {"m1": "标准"}) == (
        "标准：已完成"
    )
    assert portal.fact_summary("FundingAllocated", {"amount_fen": 20_000_000, "source": "能力提升项目经费"}) == (
        "200,000.00 元；来源：能力提升项目经费"
    )
    assert portal.fact_summary("EvaluationCompleted", {"score": "78.12", "grade": "good"}) == "得分 78.12，等级 良好"
    proposal = {"function_id": "f", "title": "团体标准", "category": "technical_standard", "department": "d"}
    assert portal.fact_summary("FunctionProposed", proposal) == "技术标准研制；职能部门 d"
    assert portal.fact_summary("Unknown", {"project_id": "p", "note": "x", "items": [1]}) == "note：x"


def test_charts_are_inline_svg_without_script_or_external_links() -> None:
    bars = str(portal.bar_chart("各状态职能数", {"已列入清单": 3, "拟转移": 1}))
    assert bars.startswith("<svg") and 'class="bar"' in bars and "已列入清单" in bars
    pie = str(portal.pie_chart("评估等级分布", {"良好": 1}))
    assert "slice" in pie
    grouped = str(portal.grouped_bar_chart("roll-up", ["德阳市", "绵阳市"], {"职能": [3, 1], "试点项目": [1, 0]}))
    empty = [portal.bar_chart("empty", {}), portal.grouped_bar_chart("e", [], {}), portal.pie_chart("e", {})]
    assert all("暂无数据" in str(svg) for svg in empty)
    for svg in (bars, pie, grouped, *map(str, empty)):
        assert "<script" not in svg and "<!--" not in svg
        assert not re.search(r"(?:href|src)=\"(?:https?:)?//", svg)
    assert portal.in_order({"open": 1, "listed": 2, "odd": 1}, portal.FUNCTION_STATUS_LABELS) == {
        "已列入清单": 2,
        "开放承接": 1,
        "odd": 1,
    }


CASE_DATA = {
    "project_id": "fn-1-5",
    "title": "软件工程技术人员水平评价",
    "society_name": "学会 <b>",
    "department": "deyang-hr",
    "phase": "implementation",
    "agreement": {
        "version": 1,
        "agreement_reference": "任务书-1",
        "goals": ["完成评价"],
        "key_tasks": ["制定标准"],
        "indicators": [{"name": "people_evaluated", "unit": "persons", "target": "100", "weight": "40"}],
        "funding": [{"source": "能力提升项目经费", "amount_fen": 20_000_000}],
    },
    "milestones": {
        "m2": {"title": "里程碑 2", "due_date": "2026-06-30", "status": None, "overdue": True},
        "m1": {"title": "里程碑 1", "due_date": "2026-03-31", "status": "done", "overdue": True},
    },
    "indicators": {"people_evaluated": {"value": "100", "period": "2026-Q2"}, "extra": {"value": "1", "period": "Q"}},
    "rectifications": {"r1": {"required_actions": ["补档案"], "deadline": "2026-05-01", "status": "ordered"}},
    "decisions": [{"kind": "commended", "basis": "例会评议", "text": "进展良好", "on": "2026-04-01"}],
    "evaluations": [{"type": "SelfEvaluationSubmitted", "claimed_score": "85"}],
    "evaluation": {"score": "78.12", "grade": "good", "method": "performance-score-v1", "on": "2026-04-02"},
    "satisfaction": {"public": {"respondents": 800, "satisfied": 797}},
    "funding": {"allocated_fen": 20_000_000, "adjusted_fen": -1_000_000, "awarded_fen": 0, "disbursed_fen": 14_845_678},
}


def test_case_view_marks_overdue_milestones_not_done_and_totals_funding() -> None:
    view = portal.case_view(CASE_DATA, date(2026, 4, 10))
    assert [(m["milestone_id"], m["status"], m["overdue"]) for m in view["milestones"]] == [
        ("m1", "已完成", False),
        ("m2", "未报告", True),
    ]
    assert view["funding"]["balance"] == 20_000_000 - 1_000_000 - 14_845_678
    assert [i["name"] for i in view["indicators"]] == ["people_evaluated", "extra"]
    assert view["indicators"][0]["measured"] == "100"
    assert view["decisions"][0]["label"] == "示范"
    assert view["satisfaction"][0]["rate"] == "99.62"


def test_every_page_template_renders_chinese_html_with_a_title_and_no_external_assets() -> None:
    now = datetime(2026, 4, 10, 2, tzinfo=UTC)
    base = {"code": "510600", "jname": "德阳市（510600）", "section": "x"}
    pager = portal.Pager(1, 20, 0)
    figures = {
        "societies": dict.fromkeys(
            ("total", "supervised", "group_members", "very_willing", "fully_capable", "participating", "brand"), 0
        ),
        "functions": {"proposed": 0, "on_the_list": 0, "undertaken": 0, "departments_in_consultation": 0},
        "cases": {"total": 0, "typical_cases": 0, "with_overdue_items": 0, "by_phase": {}, "by_grade": {}},
        "satisfaction": {},
        "funding": {"allocated_fen": 0, "disbursed_fen": 0},
    }
    charts = {k: portal.bar_chart(k, {}) for k in ("functions_by_status", "cases_by_phase", "grades", "rollup")}
    timeline = [{"occurred_at": now, "type": "CaseOpened", "label": "试点项目启动", "correction": False, "summary": ""}]
    pages = {
        "index.html": {"code": None, "section": "index", "places": [("510600", {"functions": 1})], "pager": pager},
        "overview.html": {**base, "figures": figures, "charts": charts, "latest": None, "parent": "510000"},
        "functions.html": {
            **base,
            "items": [{"function_id": "f", "title": "<职能>", "status": "listed", "society_name": None}],
            "pager": pager,
            "status": None,
            "versions": [],
            "vpager": pager,
            "changes": [],
            "cpager": portal.Pager(2, 20, None, more=True),
        },
        "list_version.html": {
            **base,
            "version": {"version": 2, "note": "", "published_at": now},
            "previous": 1,
            "diff": portal.list_diff([entry("a", "A")], [entry("a", "A2"), entry("b", "B")]),
            "entries": [entry("a", "A2"), entry("b", "B")],
            "pager": pager,
        },
        "cases.html": {**base, "items": [], "pager": pager, "phase": None},
        "typical_cases.html": {**base, "items": [], "pager": pager},
        "case.html": {
            **base,
            "case": {"project_id": "fn-1-5", "jurisdiction": "510600", "title": "t", "phase": "implementation"},
            "data": CASE_DATA,
            "view": portal.case_view(CASE_DATA, date(2026, 4, 10)),
            "timeline": timeline,
        },
        "statistics.html": {
            **base,
            "headers": ["德阳市"],
            "table": [(n, [v]) for n, v in portal.figure_rows(figures)],
            "charts": charts,
            "more_children": False,
        },
        "briefing.html": {
            **base,
            "first": date(2026, 4, 1),
            "last": date(2026, 4, 30),
            "sections": portal.briefing_sections([]),
            "truncated": False,
            "limit": 10,
            "period_figures": [("任务书生效", 0)],
            "total_facts": 0,
            "figures": portal.figure_rows(figures),
            "generated_at": now,
            "generated_utc": now,
        },
    }
    for name, context in pages.items():
        html = portal.TEMPLATE_ENV.get_template(name).render(**context)
        assert html.startswith('<!DOCTYPE html>\n<html lang="zh-CN">'), name
        assert re.search(r"<title>[^<]+</title>", html), name
        assert not re.search(r"<(?:script|link)\b", html), name
        assert not re.search(r"(?:href|src)=\"(?:https?:)?//", html), name
    case_html = portal.TEMPLATE_ENV.get_template("case.html").render(**pages["case.html"])
    assert "学会 &lt;b&gt;" in case_html and "逾期" in case_html and "200,000.00" in case_html
    functions = portal.TEMPLATE_ENV.get_template("functions.html").render(**pages["functions.html"])
    assert "&lt;职能&gt;" in functions and "cpage=3" in functions and "cpage=1" in functions
    briefing = portal.TEMPLATE_ENV.get_template("briefing.html").render(**pages["briefing.html"])
    assert "工作简报" in briefing and "2026-04-01 至 2026-04-30" in briefing and "@media print" in briefing
