"""The public portal in a real browser (headless Debian chromium), on a stack started with `chengneng up`.

The data is created through the real APIs: Deyang functions proposed, listed and published
in two list versions, a Mianyang function as a second jurisdiction, and a Deyang pilot
project taken through to implementation with its task agreement in force, progress,
money, a commendation and an evaluation. The test then reads the pages as a person does.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from services.disclosure.portal import PUBLIC_TYPE_LABELS
from tests.conftest import Stack, wait_until
from tests.e2e.flows import assigned_case

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
if not CHROMIUM.exists():
    pytest.skip(
        "Debian's chromium is not installed (/usr/bin/chromium); .ci/run installs chromium and chromium-driver",
        allow_module_level=True,
    )

pytestmark = pytest.mark.stack

DEYANG, MIANYANG, SICHUAN = "510600", "510700", "510000"
ASSOCIATION, CASE_DEPARTMENT, DEPARTMENT = "deyang-cast", "deyang-hr", "deyang-sci"


@dataclass(frozen=True)
class PortalData:
    listed: str
    listed_title: str
    added: str
    added_title: str
    proposed_title: str
    mianyang_title: str
    case_function: str
    project_id: str
    timeline_types: list[str]


def ok(client: httpx.Client, path: str, body: dict[str, Any] | None = None) -> None:
    response = client.post(path, json=body or {})
    assert response.status_code in (200, 201), f"{path}: {response.text}"


def function_body(fid: str, title: str, jurisdiction: str, department: str) -> dict[str, Any]:
    return {
        "function_id": fid,
        "jurisdiction": jurisdiction,
        "title": title,
        "description": "团体标准研制",
        "category": "technical_standard",
        "sub_kind": "group_standard",
        "scope": "partial",
        "entrustment_mode": "purchase_of_services",
        "department": department,
    }


def to_implementation_with_progress(stack: Stack, project_id: str, society_id: str) -> None:
    """Plan, deployment, leader, the tripartite agreement in force, implementation, progress, money, decisions."""
    society = stack.client("supervision", stack.token("society", society_id, DEYANG))
    department = stack.client("supervision", stack.token("department", CASE_DEPARTMENT, DEYANG))
    association = stack.client("supervision", stack.token("association", ASSOCIATION, DEYANG))
    base = f"/cases/{project_id}"
    today = datetime.now(UTC).date()
    ok(society, f"{base}/plans", {"content": "实施方案", "goals": ["评价 100 人"]})
    ok(society, f"{base}/plan-submissions", {"version": 1})
    ok(department, f"{base}/plan-approvals", {"version": 1, "note": "同意"})
    ok(association, f"{base}/deployment", {"basis": "部署动员会"})
    leader = {"person_name": "王秘书长", "rank": "secretary_general", "board_resolution_ref": "理事会决议〔2026〕1号"}
    ok(society, f"{base}/leader", leader)
    agreement = {
        "rights_and_obligations": "三方权利义务见任务书第二章",
        "cooperation_mode": "学会承接、部门指导、科协督导",
        "goals": ["完成年度软件工程技术人员水平评价"],
        "key_tasks": ["制定评价标准", "组织评价"],
        "milestones": [
            {"milestone_id": "m1", "title": "发布评价标准", "due_date": (today + timedelta(days=60)).isoformat()},
            {"milestone_id": "m2", "title": "完成首批评价", "due_date": (today + timedelta(days=180)).isoformat()},
        ],
        "quality_requirements": ["评价过程全程留痕"],
        "indicators": [
            {"name": "people_evaluated", "unit": "persons", "target": "100", "weight": "40"},
            {"name": "standards_issued", "unit": "documents", "target": "10", "weight": "35"},
            {"name": "employer_visits", "unit": "visits", "target": "8", "weight": "25"},
        ],
        "funding": [{"source": "能力提升项目经费", "amount_fen": 20_000_000}],
    }
    ok(association, f"{base}/agreements", agreement)
    for client in (department, society, association):
        ok(client, f"{base}/agreement-signatures", {"version": 1})
    ok(association, f"{base}/implementation", {"basis": "任务书生效"})
    ok(society, f"{base}/milestone-reports", {"milestone_id": "m1", "status": "done", "evidence": ["标准.pdf"]})
    for name, value in (("people_evaluated", "100"), ("standards_issued", "14"), ("employer_visits", "1")):
        ok(society, f"{base}/indicator-measurements", {"name": name, "value": value, "period": "2026-Q2"})
    meeting = {
        "meeting_id": f"meeting-{uuid.uuid4().hex[:6]}",
        "held_on": today.isoformat(),
        "attendees": ["科协", "人社局", "学会"],
        "progress": "评价标准已发布",
        "stage_goals": ["完成首批评价"],
        "next_priorities": ["组织第二批评价"],
        "issues_to_coordinate": ["场地"],
    }
    ok(association, f"{base}/supervision-meetings", meeting)
    ok(
        association,
        f"{base}/funding-allocations",
        {"amount_fen": 20_000_000, "source": "能力提升项目经费", "basis": "德财〔2026〕3号"},
    )
    ok(association, f"{base}/commendation", {"basis": "督导例会评议", "note": "进展良好，作为示范"})
    ok(association, f"{base}/evaluation")  # 40 + 35 + 25 × 1/8 = 78.12 → 良好


@pytest.fixture(scope="module")
def data(stack: Stack) -> PortalData:
    suffix = uuid.uuid4().hex[:6]
    case_function, society_id = f"fn-{suffix}", f"soc-{suffix}"
    project_id = assigned_case(
        stack,
        function_id=case_function,
        society_id=society_id,
        jurisdiction=DEYANG,
        association=ASSOCIATION,
        department=CASE_DEPARTMENT,
    )
    to_implementation_with_progress(stack, project_id, society_id)
    registry = stack.client("registry", stack.token("association", ASSOCIATION, DEYANG))
    wait_until(
        lambda: registry.get(f"/functions/{case_function}").json()["status"] == "transferred",
        message="the registry to learn that the task agreement took effect",
    )

    department = stack.client("registry", stack.token("department", DEPARTMENT, DEYANG))
    listed, added, proposed = f"gs-a-{suffix}", f"gs-b-{suffix}", f"gs-c-{suffix}"
    titles = {listed: "3D 打印团体标准研制", added: "工业机器人团体标准研制", proposed: "物联网团体标准研制"}
    for fid, title in titles.items():
        ok(department, "/functions", function_body(fid, title, DEYANG, DEPARTMENT))
    ok(department, f"/functions/{listed}/listing")
    ok(registry, f"/function-lists/{DEYANG}/versions", {"note": "首次发布"})
    ok(department, f"/functions/{added}/listing")
    ok(registry, f"/function-lists/{DEYANG}/versions", {"note": "新增工业机器人团体标准"})

    mianyang = stack.client("registry", stack.token("department", "mianyang-sci", MIANYANG))
    mianyang_fid, mianyang_title = f"my-{suffix}", "新能源汽车团体标准研制"
    ok(mianyang, "/functions", function_body(mianyang_fid, mianyang_title, MIANYANG, "mianyang-sci"))
    ok(mianyang, f"/functions/{mianyang_fid}/listing")

    disclosure = stack.client("disclosure")
    wait_until(
        lambda: (
            (r := disclosure.get(f"/public/jurisdictions/{DEYANG}/functions").json())["published_version"] == 2
            and {listed, added, case_function} == {f["function_id"] for f in r["functions"]}
        ),
        message="the Deyang list and its two versions to be disclosed",
    )
    wait_until(
        lambda: any(
            f["function_id"] == mianyang_fid
            for f in disclosure.get(f"/public/jurisdictions/{MIANYANG}/functions").json()["functions"]
        ),
        message="the Mianyang function to be disclosed",
    )
    wait_until(
        lambda: (
            (r := disclosure.get(f"/public/functions/{proposed}")).status_code == 200
            and r.json()["status"] == "proposed"
        ),
        message="the Deyang proposal to be disclosed",
    )
    case = wait_until(
        lambda: (
            (r := disclosure.get(f"/public/cases/{project_id}")).status_code == 200
            and r.json().get("evaluation")
            and r.json()
        ),
        message="the case and its evaluation to be disclosed",
    )
    return PortalData(
        listed=listed,
        listed_title=titles[listed],
        added=added,
        added_title=titles[added],
        proposed_title=titles[proposed],
        mianyang_title=mianyang_title,
        case_function=case_function,
        project_id=project_id,
        timeline_types=[fact["type"] for fact in case["timeline"]],
    )


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    options = Options()
    for argument in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1280,1600",
    ):
        options.add_argument(argument)
    options.binary_location = str(CHROMIUM)
    driver = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def open_page(browser: WebDriver, stack: Stack, path: str) -> str:
    """Open a portal page; returns the visible text of its body. Every page is Chinese, titled, script-free."""
    browser.get(stack.urls["disclosure"] + path)
    html = browser.find_element(By.TAG_NAME, "html")
    assert html.get_attribute("lang") == "zh-CN", path
    assert browser.title, path
    assert not browser.find_elements(By.CSS_SELECTOR, "script, link[rel=stylesheet]"), path
    for element in browser.find_elements(By.CSS_SELECTOR, "[src]"):
        assert (element.get_attribute("src") or "").startswith(stack.urls["disclosure"]), path
    return str(browser.find_element(By.TAG_NAME, "body").text)


def figure_cell(browser: WebDriver, row_label: str, column: int = 0) -> str:
    for row in browser.find_elements(By.CSS_SELECTOR, "table.figures-table tbody tr"):
        if row.find_element(By.TAG_NAME, "th").text == row_label:
            return str(row.find_elements(By.TAG_NAME, "td")[column].text)
    raise AssertionError(f"no row {row_label!r} in the figures table")


def test_the_home_page_lists_both_jurisdictions_and_the_switcher_goes_to_one(
    stack: Stack, browser: WebDriver, data: PortalData
) -> None:
    text = open_page(browser, stack, "/portal/")
    assert "德阳市（510600）" in text and "绵阳市（510700）" in text
    switch = browser.find_element(By.ID, "jurisdiction-switch")
    switch.clear()
    switch.send_keys(MIANYANG)
    switch.submit()
    wait_until(lambda: browser.current_url.endswith(f"/portal/j/{MIANYANG}"), message="the switcher to go to Mianyang")
    assert "绵阳市（510700） 概览" in browser.find_element(By.TAG_NAME, "h1").text


def test_the_function_list_shows_titles_chinese_statuses_versions_and_their_difference(
    stack: Stack, browser: WebDriver, data: PortalData
) -> None:
    text = open_page(browser, stack, f"/portal/j/{DEYANG}/functions")
    assert "可转移职能清单" in browser.title
    statuses = {
        row.get_attribute("data-function-id"): row.find_element(By.CSS_SELECTOR, "td.status").text
        for row in browser.find_elements(By.CSS_SELECTOR, "table.functions tbody tr")
    }
    assert statuses[data.listed] == "已列入清单" and statuses[data.added] == "已列入清单"
    assert statuses[data.case_function] == "已转移"
    assert data.listed_title in text and data.proposed_title in text and "拟转移" in text
    assert data.mianyang_title not in text  # each jurisdiction has its own list
    assert "第 2 版" in text and "新增 1，移出 0，变更 0" in text and "首次发布" in text
    assert "列入可转移职能清单" in text  # the latest disclosed changes, labelled in Chinese

    browser.find_element(By.LINK_TEXT, "第 2 版").click()
    version = browser.find_element(By.TAG_NAME, "main").text
    assert "与第 1 版相比的变化" in version
    assert [li.text for li in browser.find_elements(By.CSS_SELECTOR, "ul.added li")] == [
        f"{data.added_title}（{DEPARTMENT}）"
    ]


def test_the_overview_shows_figures_and_server_drawn_charts(
    stack: Stack, browser: WebDriver, data: PortalData, tmp_path: Path
) -> None:
    text = open_page(browser, stack, f"/portal/j/{DEYANG}")
    assert "德阳市（510600） 概览" in browser.title
    assert "列入清单的职能" in text and "200,000.00" in text
    charts = browser.find_elements(By.CSS_SELECTOR, "figure.chart > svg")
    assert len(charts) == 4
    assert browser.find_elements(By.CSS_SELECTOR, "figure[data-chart=functions-by-status] svg .bar rect")
    assert browser.find_elements(By.CSS_SELECTOR, "figure[data-chart=grades] svg .slice")
    assert "已列入清单" in browser.find_element(By.CSS_SELECTOR, "figure[data-chart=functions-by-status]").text
    screenshot = tmp_path / "overview.png"
    assert browser.save_screenshot(str(screenshot))
    png = screenshot.read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 1000


def test_statistics_for_a_city_and_for_its_province_with_children(
    stack: Stack, browser: WebDriver, data: PortalData
) -> None:
    open_page(browser, stack, f"/portal/j/{DEYANG}/statistics")
    assert figure_cell(browser, "学会总数") == "1"
    assert figure_cell(browser, "其中：主管学会") == "1"
    assert figure_cell(browser, "已参与承接的学会") == "1"
    assert figure_cell(browser, "提出的职能（含拟转移）") == "4"
    assert figure_cell(browser, "列入清单的职能") == "3"
    assert figure_cell(browser, "已承接的职能") == "1"
    assert figure_cell(browser, "其中：实施") == "1"
    assert figure_cell(browser, "评估等级：良好") == "1"
    assert browser.find_elements(By.CSS_SELECTOR, "figure[data-chart=rollup] svg .bar rect")

    open_page(browser, stack, f"/portal/j/{SICHUAN}/statistics")
    headers = [th.text for th in browser.find_elements(By.CSS_SELECTOR, "table.figures-table thead th")]
    assert headers == ["指标", "四川省（510000）（含下级）", "德阳市（510600）", "绵阳市（510700）"]
    assert [figure_cell(browser, "列入清单的职能", i) for i in range(3)] == ["4", "3", "1"]
    rollup = browser.find_element(By.CSS_SELECTOR, "figure[data-chart=rollup]").text
    assert "德阳市" in rollup and "绵阳市" in rollup


def test_cases_filter_by_phase_and_a_case_page_shows_its_agreement_decisions_and_timeline_in_order(
    stack: Stack, browser: WebDriver, data: PortalData
) -> None:
    open_page(browser, stack, f"/portal/j/{SICHUAN}/cases?phase=implementation")
    row = browser.find_element(By.CSS_SELECTOR, f"tr[data-project-id='{data.project_id}']")
    assert row.find_element(By.CSS_SELECTOR, "td.phase").text == "实施" and "良好" in row.text
    assert "没有符合条件的试点项目" in open_page(browser, stack, f"/portal/j/{DEYANG}/cases?phase=closed")

    open_page(browser, stack, f"/portal/j/{DEYANG}/cases")
    browser.find_element(By.CSS_SELECTOR, f"tr[data-project-id='{data.project_id}'] a").click()
    text = browser.find_element(By.TAG_NAME, "main").text
    assert browser.current_url.endswith(f"/portal/cases/{data.project_id}")
    assert "试点项目：软件工程技术人员水平评价" in browser.title
    assert "完成年度软件工程技术人员水平评价" in text and "制定评价标准" in text
    milestones = [r.text for r in browser.find_elements(By.CSS_SELECTOR, "table.milestones tbody tr")]
    assert milestones[0].startswith("发布评价标准") and milestones[0].endswith("已完成")
    assert "示范" in browser.find_element(By.CSS_SELECTOR, "table.decisions").text
    assert "78.12" in text and "良好" in text
    assert "200,000.00" in browser.find_element(By.CSS_SELECTOR, "table.funding").text

    labels = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "ol.timeline .fact-label")]
    assert labels == [PUBLIC_TYPE_LABELS[t] for t in data.timeline_types]
    assert data.timeline_types[:6] == [
        "CaseOpened",
        "PlanApproved",
        "PhaseChanged",
        "LeaderAppointed",
        "AgreementTookEffect",
        "PhaseChanged",
    ]
    assert labels[-1] == "评估完成"
    times = [e.get_attribute("datetime") or "" for e in browser.find_elements(By.CSS_SELECTOR, "ol.timeline time")]
    assert times == sorted(times, key=datetime.fromisoformat)
    summaries = browser.find_element(By.CSS_SELECTOR, "ol.timeline").text
    assert "部署动员 → 实施" in summaries and "发布评价标准：已完成" in summaries


def test_the_work_briefing_covers_the_period_and_bad_dates_are_refused(
    stack: Stack, browser: WebDriver, data: PortalData
) -> None:
    today = datetime.now(UTC).date()
    first, last = today - timedelta(days=1), today + timedelta(days=1)
    text = open_page(browser, stack, f"/portal/j/{DEYANG}/briefing?from={first}&to={last}")
    heading = browser.find_element(By.TAG_NAME, "h1").text
    assert "工作简报" in heading
    assert browser.find_element(By.CSS_SELECTOR, ".period-range").text == f"{first} 至 {last}"
    assert "工作简报" in browser.title and str(first) in browser.title
    for expected in (
        "新列入清单的职能",
        "三方任务书生效",
        "督导例会",
        "示范",
        "评估完成",
        data.added_title,
        "发布评价标准：已完成",
    ):
        assert expected in text, expected
    assert "本期无" not in browser.find_element(By.CSS_SELECTOR, "article.briefing section:nth-of-type(3)").text

    earlier = date(2001, 1, 1)
    quiet = open_page(browser, stack, f"/portal/j/{DEYANG}/briefing?from={earlier}&to={earlier + timedelta(days=30)}")
    assert "本期无" in quiet and "三方任务书生效" not in quiet

    portal = stack.client("disclosure")
    for query, code in (
        ({"from": "2026-02-30", "to": "2026-03-01"}, "invalid_date"),
        ({"from": "2026-03-02", "to": "2026-03-01"}, "invalid_period"),
    ):
        response = portal.get(f"/portal/j/{DEYANG}/briefing", params=query)
        assert response.status_code == 422, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
        assert response.json()["code"] == code
