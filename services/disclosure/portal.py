"""The public portal (信息公开平台): server-rendered HTML pages over the public read models.

Everything shown here comes from the disclosure log and the read models built from it
(``projections``), exactly like the JSON API, so the portal can show nothing the disclosure
policy did not let through. Pages need no token and no JavaScript, load no external asset,
and page every list with LIMIT/OFFSET on indexed columns; only a single case loads its
whole timeline. Charts are inline SVG drawn on the server with pygal.

The pure helpers (Chinese labels, money, list-version differences, roll-up, paging,
charts) come first; the routes follow.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Annotated, Any

import pygal
from fastapi import APIRouter, Query
from fastapi import Path as FastAPIPath
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader
from markupsafe import Markup

from services.disclosure import domain
from services.disclosure import projections as statistics
from services.disclosure.api import parse_period
from shared import jurisdiction as jurisdictions
from shared import store
from shared.api import EntityId, JurisdictionCode
from shared.errors import InvalidInput, NotFound
from shared.http import PG_INTEGER_MAX
from shared.runtime import Context

router = APIRouter(prefix="/portal", include_in_schema=False)

TEMPLATES = Path(__file__).resolve().parent / "templates"
CHINA_TIME = timezone(timedelta(hours=8), "UTC+8")
"""Dates on the portal and briefing periods are calendar days in China (UTC+8)."""

PER_PAGE = 20
MAX_BRIEFING_DAYS = 366
BRIEFING_LIMIT = 1000
MAX_CHILD_COLUMNS = 10

PageNo = Annotated[int, Query(ge=1, le=100_000)]

# --- labels --------------------------------------------------------------------------------

FUNCTION_STATUS_LABELS: dict[str, str] = {
    "proposed": "拟转移",
    "in_consultation": "征求意见中",
    "listed": "已列入清单",
    "open": "开放承接",
    "assigned": "已指定学会",
    "transferred": "已转移",
    "returned": "已退回",
    "withdrawn": "已撤回",
    "delisted": "已移出清单",
}
PHASE_LABELS: dict[str, str] = {
    "preparation": "筹备协调",
    "deployment": "部署动员",
    "implementation": "实施",
    "summary": "系统总结",
    "closed": "已结项",
    "suspended": "暂停",
    "terminated": "终止",
}
GRADE_LABELS: dict[str, str] = {"excellent": "优秀", "good": "良好", "pass": "合格", "fail": "不合格"}
CATEGORY_LABELS: dict[str, str] = {
    "science_evaluation": "相关科技评估",
    "qualification_certification": "工程技术领域职业资格认定",
    "technical_standard": "技术标准研制",
    "award_nomination": "国家科技奖励推荐",
    "public_service": "科技类社会化公共服务",
}
SUB_KIND_LABELS: dict[str, str] = {
    "research_base_evaluation": "国家科研和创新基地评估",
    "programme_evaluation": "科技计划实施情况的整体评估",
    "project_post_evaluation": "科研项目完成情况评估",
    "level_evaluation": "水平评价类",
    "access": "行业准入类",
    "professional_title": "非公有制经济组织职称评定",
    "group_standard": "团体标准",
    "national_award_nomination": "国家科技奖励推荐",
    "purchased_service": "政府购买服务",
    "other": "其他",
}
SCOPE_LABELS: dict[str, str] = {"whole": "整体转移", "partial": "部分转移"}
ENTRUSTMENT_LABELS: dict[str, str] = {
    "centralised_purchase": "政府集中采购",
    "long_term_agreement": "长期协议",
    "tripartite_task_agreement": "三方试点任务书",
    "directed_purchase": "定向采购",
    "fiscal_subsidy": "财政补贴",
    "purchase_of_services": "政府购买服务",
    "self_regulation_after_cancellation": "取消后自律",
}
MILESTONE_STATUS_LABELS: dict[str, str] = {"in_progress": "进行中", "done": "已完成"}
RECTIFICATION_STATUS_LABELS: dict[str, str] = {
    "ordered": "整改中",
    "reported": "已报告整改情况",
    "accepted": "整改通过",
    "rejected": "整改未通过",
}
DECISION_LABELS: dict[str, str] = {
    "commended": "示范",
    "rectification_ordered": "整改",
    "rectification_accepted": "整改通过",
    "rectification_rejected": "整改未通过",
    "warning": "警示",
    "terminated": "终止",
    "award": "以奖代补",
}
RESPONDENT_LABELS: dict[str, str] = {"departments": "政府部门", "societies": "学会", "public": "社会公众"}
FINANCE_KIND_LABELS: dict[str, str] = {"overall": "整体评价", "on_site": "现场评价"}
RELATION_LABELS: dict[str, str] = {"supervised": "主管学会", "group_member": "团体会员"}
RANK_LABELS: dict[str, str] = {
    "member": "会员",
    "director": "理事",
    "deputy_secretary_general": "副秘书长",
    "secretary_general": "秘书长",
    "vice_president": "副理事长",
    "president": "理事长",
}
WILLINGNESS_LABELS: dict[str, str] = {"very_willing": "非常愿意", "willing": "愿意", "unwilling": "不愿意"}
SELF_ASSESSMENT_LABELS: dict[str, str] = {
    "fully_capable": "完全有能力",
    "partly_capable": "部分有能力",
    "not_capable": "能力不足",
}
SOCIETY_CLASS_LABELS: dict[str, str] = {
    "strengthen": "固强",
    "newly_establish": "新建",
    "stabilise": "稳定",
    "exit": "退出",
}
EVALUATION_TYPE_LABELS: dict[str, str] = {
    "SelfEvaluationSubmitted": "绩效自评",
    "ThirdPartyEvaluationSubmitted": "第三方评估",
    "FinanceEvaluationSubmitted": "财政绩效评价",
}

PUBLIC_TYPE_LABELS: dict[str, str] = {
    # registry: the transferable-function list
    "FunctionProposed": "提出拟转移职能",
    "ConsultationStarted": "征求部门意见",
    "FunctionListed": "列入可转移职能清单",
    "FunctionAmended": "修订清单条目",
    "FunctionOpened": "开放承接",
    "FunctionAssigned": "指定承接学会",
    "FunctionTransferred": "职能转移（任务书生效）",
    "FunctionReturned": "职能退回",
    "FunctionWithdrawn": "职能撤回",
    "FunctionDelisted": "移出清单",
    "FunctionListPublished": "发布清单新版本",
    # capability: societies and selection
    "SocietyRegistered": "学会登记",
    "SocietyMerged": "学会合并",
    "SocietyDissolved": "学会注销",
    "GovernanceRecorded": "治理结构",
    "DecouplingProgressed": "脱钩进展",
    "SurveyAnswered": "承接意愿调查",
    "SocietyClassified": "分类管理",
    "BrandSocietyDesignated": "认定品牌学会",
    "BrandSocietyRevoked": "撤销品牌学会",
    "ApplicationSubmitted": "提交承接申请",
    "ApplicationWithdrawn": "撤回承接申请",
    "RankingComputed": "遴选排序",
    "SocietiesRecommended": "推荐承接学会",
    "SelectionClosed": "遴选结束",
    # supervision: pilot projects
    "CaseOpened": "试点项目启动",
    "PlanApproved": "实施方案获批",
    "LeaderAppointed": "确定项目负责人",
    "AgreementTookEffect": "三方任务书生效",
    "PhaseChanged": "进入新阶段",
    "MilestoneReported": "里程碑进展",
    "IndicatorMeasured": "考核指标测量",
    "SupervisionMeetingHeld": "督导例会",
    "MilestoneOverdue": "里程碑逾期",
    "RectificationOverdue": "整改逾期",
    "ProjectCommended": "示范",
    "RectificationOrdered": "责令整改",
    "RectificationReported": "报告整改情况",
    "RectificationAccepted": "整改通过",
    "RectificationRejected": "整改未通过",
    "WarningIssued": "警示",
    "ProjectTerminated": "项目终止",
    "FundingAllocated": "经费下达",
    "FundingAdjusted": "经费调整",
    "FundingDisbursed": "经费拨付",
    "AwardGranted": "以奖代补",
    "SelfEvaluationSubmitted": "绩效自评",
    "EvaluatorCommissioned": "委托第三方评估",
    "ThirdPartyEvaluationSubmitted": "第三方评估报告",
    "FinanceEvaluationSubmitted": "财政绩效评价",
    "SatisfactionSurveyed": "满意度调查",
    "EvaluationCompleted": "评估完成",
    "SummaryReportSubmitted": "提交总结报告",
    "TypicalCaseDesignated": "列为典型案例",
}

ENTRY_FIELD_LABELS: dict[str, str] = {
    "title": "名称",
    "category": "类别",
    "sub_kind": "子类",
    "scope": "转移范围",
    "entrustment_mode": "委托方式",
    "department": "职能部门",
    "status": "状态",
    "qualification_conditions": "资质条件",
    "thresholds": "准入门槛",
    "description": "说明",
}

JURISDICTION_NAMES: dict[str, str] = {
    jurisdictions.CENTRAL: "全国（中国科协）",
    "510000": "四川省",
    "510100": "成都市",
    "510600": "德阳市",
    "510603": "旌阳区",
    "510604": "罗江区",
    "510623": "中江县",
    "510681": "广汉市",
    "510682": "什邡市",
    "510683": "绵竹市",
    "510700": "绵阳市",
}
LEVEL_LABELS: dict[str, str] = {"central": "中央", "province": "省级", "city": "市级", "county": "县级"}


def label(mapping: Mapping[str, str], key: object) -> str:
    """The Chinese label of ``key``; an unknown key is shown as it is, a missing one as "—"."""
    if key is None or key == "":
        return "—"
    return mapping.get(str(key), str(key))


def status_label(status: object) -> str:
    return label(FUNCTION_STATUS_LABELS, status)


def phase_label(phase: object) -> str:
    return label(PHASE_LABELS, phase)


def grade_label(grade: object) -> str:
    return label(GRADE_LABELS, grade)


def public_type_label(public_type: str) -> str:
    """A disclosed fact's Chinese label; a type without one is shown by its name."""
    return PUBLIC_TYPE_LABELS.get(public_type, public_type)


def jurisdiction_name(code: str) -> str:
    """``德阳市（510600）``; a code without a known name by its level: ``市级行政区（510900）``."""
    name = JURISDICTION_NAMES.get(code)
    if name is None:
        try:
            name = LEVEL_LABELS[jurisdictions.level(code)] + "行政区"
        except InvalidInput:
            name = "行政区"
    return f"{name}（{code}）"


# --- money, rates, dates -------------------------------------------------------------------


def yuan(fen: object) -> str:
    """Whole fen as yuan with thousands separators and two decimals: 20000000 → ``200,000.00``."""
    amount = int(fen or 0)  # type: ignore[call-overload]
    sign = "-" if amount < 0 else ""
    whole, cents = divmod(abs(amount), 100)
    return f"{sign}{whole:,}.{cents:02d}"


def rate_percent(satisfied: object, respondents: object) -> str | None:
    """Satisfied share in percent with two decimals, half to even (as the JSON API); None without answers."""
    total = int(respondents or 0)  # type: ignore[call-overload]
    if total <= 0:
        return None
    value = Decimal(100 * int(satisfied or 0)) / Decimal(total)  # type: ignore[call-overload]
    return str(value.quantize(Decimal("0.01"), rounding=ROUND_HALF_EVEN))


def local_date(moment: datetime) -> str:
    return moment.astimezone(CHINA_TIME).date().isoformat()


def local_time(moment: datetime) -> str:
    return moment.astimezone(CHINA_TIME).strftime("%Y-%m-%d %H:%M")


def period_bounds(first: date, last: date) -> tuple[datetime, datetime]:
    """[start, end) instants of the calendar days ``first``..``last`` in China time."""
    start = datetime.combine(first, datetime.min.time(), CHINA_TIME)
    end = datetime.combine(last + timedelta(days=1), datetime.min.time(), CHINA_TIME)
    return start, end


def briefing_period(start: str | None, end: str | None, today: date) -> tuple[date, date]:
    """The briefing's period; by default the current month up to today. Bad dates are a 422."""
    first, last = parse_period(start or today.replace(day=1).isoformat(), end or today.isoformat())
    if (last - first).days >= MAX_BRIEFING_DAYS:
        raise InvalidInput("period_too_long", f"a briefing covers at most {MAX_BRIEFING_DAYS} days")
    return first, last


# --- list versions -------------------------------------------------------------------------


def list_diff(older: Sequence[Mapping[str, Any]], newer: Sequence[Mapping[str, Any]]) -> dict[str, list[Any]]:
    """What changed between two published list versions, by function id (sorted).

    ``changed`` holds ``{"function_id", "title", "fields": {name: {"from", "to"}}}`` for every
    entry present in both whose disclosed fields differ; a field present on one side only
    counts as changed (from or to ``None``).
    """
    old = {str(e["function_id"]): e for e in older}
    new = {str(e["function_id"]): e for e in newer}
    changed: list[dict[str, Any]] = []
    for fid in sorted(old.keys() & new.keys()):
        before, after = old[fid], new[fid]
        names = sorted((before.keys() | after.keys()) - {"function_id"})
        fields = {n: {"from": before.get(n), "to": after.get(n)} for n in names if before.get(n) != after.get(n)}
        if fields:
            changed.append(
                {"function_id": fid, "title": after.get("title", before.get("title", fid)), "fields": fields}
            )
    return {
        "added": [new[fid] for fid in sorted(new.keys() - old.keys())],
        "removed": [old[fid] for fid in sorted(old.keys() - new.keys())],
        "changed": changed,
    }


def show_value(name: str, value: Any) -> str:
    """A list-entry field for people: labels for codes, lists joined."""
    mappings = {
        "status": FUNCTION_STATUS_LABELS,
        "category": CATEGORY_LABELS,
        "sub_kind": SUB_KIND_LABELS,
        "scope": SCOPE_LABELS,
        "entrustment_mode": ENTRUSTMENT_LABELS,
    }
    if value is None:
        return "—"
    if name in mappings:
        return label(mappings[name], value)
    if isinstance(value, list):
        parts = [
            f"{v.get('name', '')} {v.get('requirement', '')}".strip() if isinstance(v, dict) else str(v) for v in value
        ]
        return "；".join(parts) or "—"
    return str(value)


# --- jurisdictions -------------------------------------------------------------------------


def subtree_bounds(code: str) -> tuple[str, str]:
    """Lowest and highest code in ``code``'s subtree, for an index range scan on a jurisdiction column.

    Equivalent to ``projections.in_scope`` for well-formed codes: a province ``PP0000`` covers
    ``PP0000..PP9999``, a city ``PPCC00`` covers ``PPCC00..PPCC99``, the central level everything.
    """
    lv = jurisdictions.level(code)
    if lv is jurisdictions.Level.CENTRAL:
        return "100000", "999999"
    if lv is jurisdictions.Level.PROVINCE:
        return code, code[:2] + "9999"
    if lv is jurisdictions.Level.CITY:
        return code, code[:4] + "99"
    return code, code


def child_under(top: str, code: str) -> str | None:
    """The direct child of ``top`` that ``code`` lies in; ``top`` itself for ``top``; None outside."""
    try:
        chain = jurisdictions.ancestors(code)
    except InvalidInput:
        return None
    if top not in chain:
        return None
    index = chain.index(top)
    return chain[index - 1] if index > 0 else top


def rollup(counts: Mapping[str, int], top: str) -> dict[str, int]:
    """Counts per jurisdiction summed up to ``top`` itself and its direct children, in code order."""
    out: dict[str, int] = {}
    for code, n in counts.items():
        key = child_under(top, code)
        if key is not None:
            out[key] = out.get(key, 0) + int(n)
    return dict(sorted(out.items(), key=lambda item: (item[0] != top, item[0])))


# --- paging --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pager:
    """Where one page of a list stands; ``offset`` goes to SQL, the rest to the template.

    A long history is not counted: its ``total`` is None and ``more`` says whether the query
    found a row beyond this page (fetch ``per_page + 1`` rows).
    """

    page: int
    per_page: int
    total: int | None
    more: bool = False

    @property
    def offset(self) -> int:
        return (self.page - 1) * self.per_page

    @property
    def pages(self) -> int | None:
        return None if self.total is None else max(1, math.ceil(self.total / self.per_page))

    @property
    def has_previous(self) -> bool:
        return self.page > 1

    @property
    def has_next(self) -> bool:
        return self.more if self.total is None else self.page < (self.pages or 1)


# --- charts --------------------------------------------------------------------------------

_SCRIPT = re.compile(r"<script\b.*?</script>", re.S)
_COMMENT = re.compile(r"<!--.*?-->", re.S)
_STYLE = pygal.style.Style(
    background="#ffffff",
    plot_background="#ffffff",
    foreground="#333333",
    foreground_strong="#111111",
    foreground_subtle="#888888",
    colors=("#1f5fa8", "#c0392b", "#27ae60", "#e67e22", "#8e44ad", "#16a085", "#7f8c8d"),
    font_family="sans-serif",
    label_font_size=15,
    major_label_font_size=15,
    value_font_size=15,
    title_font_size=18,
    legend_font_size=15,
)


def _svg(chart: Any) -> Markup:
    """A pygal chart as inline SVG with no script and no comments (nothing to load, nothing to run)."""
    svg = chart.render(is_unicode=True, disable_xml_declaration=True)
    return Markup(_COMMENT.sub("", _SCRIPT.sub("", svg)))  # pygal escapes the labels itself


def _config(title: str, **extra: Any) -> dict[str, Any]:
    return {
        "title": title,
        "js": [],
        "style": _STYLE,
        "width": 640,
        "height": 320,
        "print_values": True,
        "print_zeroes": False,
        "no_data_text": "暂无数据",
        "disable_xml_declaration": True,
        **extra,
    }


def count_axis(highest: int) -> list[int]:
    """Whole-number y-axis labels for counts up to ``highest`` (at most about eight of them)."""
    step = max(1, math.ceil(highest / 8))
    return list(range(0, max(highest, 1) + step, step))


def bar_chart(title: str, values: Mapping[str, int], series: str = "数量") -> Markup:
    """A bar chart of labelled counts (labels as given, in order)."""
    axis = {"y_labels": count_axis(max(values.values()))} if values else {}
    chart = pygal.Bar(**_config(title, show_legend=False, **axis))
    chart.x_labels = list(values.keys())
    if values:
        chart.add(series, [int(v) for v in values.values()])
    return _svg(chart)


def grouped_bar_chart(title: str, labels: Sequence[str], series: Mapping[str, Sequence[int]]) -> Markup:
    """Bars of several series side by side for each label (e.g. functions and projects per jurisdiction)."""
    counts = [n for numbers in series.values() for n in numbers]
    axis = {"y_labels": count_axis(max(counts))} if labels and counts else {}
    chart = pygal.Bar(**_config(title, show_legend=True, legend_at_bottom=True, **axis))
    chart.x_labels = list(labels)
    if labels:
        for name, numbers in series.items():
            chart.add(name, [int(n) for n in numbers])
    return _svg(chart)


def pie_chart(title: str, values: Mapping[str, int]) -> Markup:
    chart = pygal.Pie(**_config(title, show_legend=True, legend_at_bottom=True, inner_radius=0.4))
    for name, n in values.items():
        if n:
            chart.add(name, int(n))
    return _svg(chart)


def in_order(counts: Mapping[str, int], labels: Mapping[str, str]) -> dict[str, int]:
    """Counts keyed by Chinese label, in the labels' order, unknown keys last."""
    known = {labels[k]: int(counts[k]) for k in labels if counts.get(k)}
    unknown = {str(k): int(v) for k, v in counts.items() if k not in labels and v}
    return {**known, **unknown}


# --- one disclosed fact in words ------------------------------------------------------------


def _join(items: Any) -> str:
    if isinstance(items, list):
        return "；".join(str(i) for i in items)
    return str(items or "")


def fact_summary(public_type: str, data: Mapping[str, Any], names: Mapping[str, str] | None = None) -> str:
    """One line in Chinese saying what a disclosed fact says; ``names`` maps ids to titles."""
    names = names or {}
    d = data

    def name(key: str) -> str:
        value = str(d.get(key, ""))
        return names.get(value, value)

    basis = f"依据：{d['basis']}" if d.get("basis") else ""
    match public_type:
        case "FunctionProposed":
            text = f"{label(CATEGORY_LABELS, d.get('category'))}；职能部门 {d.get('department', '')}"
        case "ConsultationStarted":
            text = f"征求 {d.get('department', '')} 意见"
        case "FunctionListed":
            text = f"{d.get('department', '')} 同意列入清单"
        case "FunctionAmended":
            changes = d.get("changes") or {}
            fields = "、".join(label(ENTRY_FIELD_LABELS, k) for k in changes)
            text = f"修订 {fields}；{d.get('reason', '')}"
        case "FunctionOpened":
            conditions = _join(d.get("qualification_conditions", []))
            text = f"资质条件 {conditions or '—'}"
        case "FunctionAssigned":
            society = d.get("society_name") or d.get("society_id", "")
            text = f"承接学会 {society}"
        case "FunctionTransferred":
            text = f"任务书 {d.get('agreement_reference', '')}"
        case "FunctionReturned" | "FunctionWithdrawn" | "FunctionDelisted":
            text = f"原因 {d.get('reason', '')}"
        case "FunctionListPublished":
            text = f"第 {d.get('version')} 版，共 {len(d.get('entries', []))} 项；{d.get('note', '')}"
        case "SocietyRegistered":
            text = f"{d.get('name', '')}（{label(RELATION_LABELS, d.get('relation'))}）"
        case "SurveyAnswered":
            text = (
                f"意愿：{label(WILLINGNESS_LABELS, d.get('willingness'))}；"
                f"能力自评：{label(SELF_ASSESSMENT_LABELS, d.get('self_assessment'))}"
            )
        case "SocietyClassified":
            text = f"{label(SOCIETY_CLASS_LABELS, d.get('society_class'))}"
        case "CaseOpened":
            text = f"{d.get('title', '')}；承接学会 {d.get('society_name', '')}；职能部门 {d.get('department', '')}"
        case "PlanApproved":
            text = f"第 {d.get('version')} 版实施方案"
        case "LeaderAppointed":
            text = f"项目负责人职级：{label(RANK_LABELS, d.get('rank'))}"
        case "AgreementTookEffect":
            text = f"第 {d.get('version')} 版任务书生效；目标：{_join(d.get('goals', []))}"
        case "PhaseChanged":
            text = f"{phase_label(d.get('from_phase'))} → {phase_label(d.get('to_phase'))}；{basis}"
        case "MilestoneReported":
            text = f"{name('milestone_id')}：{label(MILESTONE_STATUS_LABELS, d.get('status'))}"
        case "MilestoneOverdue":
            text = f"{name('milestone_id')} 应于 {d.get('due_date', '')} 完成，逾期"
        case "RectificationOverdue":
            text = f"整改期限 {d.get('deadline', '')} 已过，逾期"
        case "IndicatorMeasured":
            text = f"{d.get('name', '')} = {d.get('value', '')}（{d.get('period', '')}）"
        case "SupervisionMeetingHeld":
            text = f"{d.get('held_on', '')}：{d.get('progress', '')}；下一步：{_join(d.get('next_priorities', []))}"
        case "ProjectCommended":
            text = f"{basis}；{d.get('note', '')}"
        case "RectificationOrdered":
            text = f"整改要求：{_join(d.get('required_actions', []))}；期限 {d.get('deadline', '')}；{basis}"
        case "RectificationReported":
            text = f"整改措施：{_join(d.get('actions_taken', []))}"
        case "RectificationAccepted":
            text = basis
        case "RectificationRejected":
            text = f"原因：{_join(d.get('reasons', []))}；{basis}"
        case "WarningIssued":
            text = f"{d.get('text', '')}；{basis}"
        case "ProjectTerminated":
            text = f"原因：{d.get('reason', '')}；{basis}"
        case "FundingAllocated":
            text = f"{yuan(d.get('amount_fen'))} 元；来源：{d.get('source', '')}；{basis}"
        case "FundingAdjusted":
            text = f"{yuan(d.get('delta_fen'))} 元；{basis}"
        case "FundingDisbursed":
            text = f"{yuan(d.get('amount_fen'))} 元"
        case "AwardGranted":
            text = f"{yuan(d.get('amount_fen'))} 元；{basis}"
        case "SelfEvaluationSubmitted":
            text = f"自评分 {d.get('claimed_score', '')}"
        case "EvaluatorCommissioned" | "ThirdPartyEvaluationSubmitted":
            text = f"评估机构 {d.get('evaluator_org', '')}；{_join(d.get('findings', []))}"
        case "FinanceEvaluationSubmitted":
            text = f"{label(FINANCE_KIND_LABELS, d.get('kind'))}：{_join(d.get('findings', []))}"
        case "SatisfactionSurveyed":
            rate = rate_percent(d.get("satisfied"), d.get("respondents"))
            group = label(RESPONDENT_LABELS, d.get("respondent_group"))
            text = f"{group}：{d.get('satisfied')}/{d.get('respondents')} 满意" + (f"（{rate}%）" if rate else "")
        case "EvaluationCompleted":
            text = f"得分 {d.get('score', '')}，等级 {grade_label(d.get('grade'))}"
        case "SummaryReportSubmitted":
            text = f"可复制模式：{_join(d.get('replicable_models', []))}"
        case "TypicalCaseDesignated":
            text = str(d.get("rationale", ""))
        case _:
            hidden = {"function_id", "project_id", "society_id"}
            text = "；".join(
                f"{k}：{v}" for k, v in d.items() if k not in hidden and isinstance(v, (str, int, float, bool))
            )
    return text.strip("；").strip()


# --- templates -----------------------------------------------------------------------------


def _environment() -> Environment:
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=True, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(
        yuan=yuan,
        status=status_label,
        phase=phase_label,
        grade=grade_label,
        fact_type=public_type_label,
        category=lambda v: label(CATEGORY_LABELS, v),
        sub_kind=lambda v: label(SUB_KIND_LABELS, v),
        jname=jurisdiction_name,
        local_date=local_date,
        local_time=local_time,
        entry_value=lambda v, name: show_value(name, v),
        field_name=lambda v: label(ENTRY_FIELD_LABELS, v),
    )
    env.globals.update(
        PHASE_LABELS=PHASE_LABELS,
        FUNCTION_STATUS_LABELS=FUNCTION_STATUS_LABELS,
        MILESTONE_STATUS_LABELS=MILESTONE_STATUS_LABELS,
        RECTIFICATION_STATUS_LABELS=RECTIFICATION_STATUS_LABELS,
        DECISION_LABELS=DECISION_LABELS,
        RESPONDENT_LABELS=RESPONDENT_LABELS,
        RELATION_LABELS=RELATION_LABELS,
        EVALUATION_TYPE_LABELS=EVALUATION_TYPE_LABELS,
        FINANCE_KIND_LABELS=FINANCE_KIND_LABELS,
        RANK_LABELS=RANK_LABELS,
        label=label,
    )
    return env


TEMPLATE_ENV = _environment()


def render(template: str, **context: Any) -> HTMLResponse:
    return HTMLResponse(TEMPLATE_ENV.get_template(template).render(**context))


def _jcontext(code: str, section: str) -> dict[str, Any]:
    return {"code": code, "jname": jurisdiction_name(code), "section": section}


# --- queries -------------------------------------------------------------------------------


async def _count(pool: Any, sql: str, *args: Any) -> int:
    return int(await pool.fetchval(sql, *args) or 0)


async def _counts_by_jurisdiction(pool: Any, table: str, code: str) -> dict[str, int]:
    low, high = subtree_bounds(code)
    rows = await pool.fetch(
        f"SELECT jurisdiction, count(*) AS n FROM {table} WHERE jurisdiction BETWEEN $1 AND $2 GROUP BY jurisdiction",
        low,
        high,
    )
    return {r["jurisdiction"]: int(r["n"]) for r in rows}


async def _charts(pool: Any, code: str, figures: Mapping[str, Any]) -> dict[str, Markup]:
    functions = rollup(await _counts_by_jurisdiction(pool, "p_functions", code), code)
    cases = rollup(await _counts_by_jurisdiction(pool, "p_cases", code), code)
    places = sorted(functions.keys() | cases.keys(), key=lambda c: (c != code, c))
    return {
        "functions_by_status": bar_chart(
            "各状态职能数", in_order(figures["functions"]["by_status"], FUNCTION_STATUS_LABELS), "职能"
        ),
        "cases_by_phase": bar_chart("各阶段试点项目数", in_order(figures["cases"]["by_phase"], PHASE_LABELS), "项目"),
        "grades": pie_chart("评估等级分布", in_order(figures["cases"]["by_grade"], GRADE_LABELS)),
        "rollup": grouped_bar_chart(
            "本级及下级职能与项目数",
            [JURISDICTION_NAMES.get(c, c) for c in places],
            {"职能": [functions.get(c, 0) for c in places], "试点项目": [cases.get(c, 0) for c in places]},
        ),
    }


async def _titles(
    pool: Any, function_ids: Iterable[str] = (), project_ids: Iterable[str] = ()
) -> tuple[dict[str, str], dict[str, dict[str, str]]]:
    """Titles of the functions and projects named on one page, and each project's milestone titles."""
    names: dict[str, str] = {}
    milestones: dict[str, dict[str, str]] = {}
    fids, pids = sorted(set(function_ids)), sorted(set(project_ids))
    if fids:
        rows = await pool.fetch("SELECT function_id, title FROM p_functions WHERE function_id = ANY($1::text[])", fids)
        names.update({r["function_id"]: r["title"] for r in rows})
    if pids:
        rows = await pool.fetch(
            """SELECT project_id, title, data->'milestones' AS milestones FROM p_cases
               WHERE project_id = ANY($1::text[])""",
            pids,
        )
        names.update({r["project_id"]: r["title"] for r in rows})
        milestones = {
            r["project_id"]: {mid: m.get("title") or mid for mid, m in (r["milestones"] or {}).items()} for r in rows
        }
    return names, milestones


def _fact_row(
    record: Any, names: Mapping[str, str], milestones: Mapping[str, Mapping[str, str]] | None = None
) -> dict[str, Any]:
    payload = record["payload"]
    public_type = payload["public_type"]
    kind, _, key = payload["subject"].partition("/")
    if kind == "case" and milestones and key in milestones:
        names = {**names, **milestones[key]}
    return {
        "position": record["position"],
        "occurred_at": record["occurred_at"],
        "jurisdiction": record["jurisdiction"],
        "type": public_type,
        "label": public_type_label(public_type),
        "subject_kind": kind,
        "subject_id": key,
        "subject_title": names.get(key, key),
        "correction": payload.get("correction", False),
        "summary": fact_summary(public_type, payload["data"], names),
    }


# --- routes --------------------------------------------------------------------------------


@router.get("/", response_class=HTMLResponse, summary="Jurisdictions with disclosed facts")
async def index(ctx: Context, page: PageNo = 1, jurisdiction: str | None = None) -> Response:
    if jurisdiction:
        code = jurisdictions.validate(jurisdiction.strip())
        return RedirectResponse(f"/portal/j/{code}", status_code=303)
    distinct = """SELECT DISTINCT jurisdiction FROM p_functions
                  UNION SELECT DISTINCT jurisdiction FROM p_cases
                  UNION SELECT DISTINCT jurisdiction FROM p_societies"""
    pager = Pager(page, 100, await _count(ctx.pool, f"SELECT count(*) FROM ({distinct}) t"))
    rows = await ctx.pool.fetch(f"{distinct} ORDER BY 1 LIMIT $1 OFFSET $2", pager.per_page, pager.offset)
    codes = [r["jurisdiction"] for r in rows]
    counts: dict[str, dict[str, int]] = {c: {"functions": 0, "cases": 0, "societies": 0} for c in codes}
    for table, key in (("p_functions", "functions"), ("p_cases", "cases"), ("p_societies", "societies")):
        for r in await ctx.pool.fetch(
            f"SELECT jurisdiction, count(*) AS n FROM {table} WHERE jurisdiction = ANY($1::text[]) GROUP BY 1", codes
        ):
            counts[r["jurisdiction"]][key] = int(r["n"])
    return render("index.html", section="index", places=[(c, counts[c]) for c in codes], pager=pager)


@router.get("/j/{code}", response_class=HTMLResponse, summary="Overview of one jurisdiction")
async def overview(code: JurisdictionCode, ctx: Context) -> HTMLResponse:
    jurisdictions.validate(code)
    figures = await statistics.figures(ctx.pool, code)
    latest = await ctx.pool.fetchrow(
        "SELECT version, published_at FROM p_list_versions WHERE jurisdiction = $1 ORDER BY version DESC LIMIT 1", code
    )
    return render(
        "overview.html",
        **_jcontext(code, "overview"),
        figures=figures,
        charts=await _charts(ctx.pool, code, figures),
        latest=latest,
        parent=jurisdictions.parent(code),
    )


@router.get("/j/{code}/functions", response_class=HTMLResponse, summary="The transferable-function list")
async def functions(
    code: JurisdictionCode,
    ctx: Context,
    page: PageNo = 1,
    vpage: PageNo = 1,
    cpage: PageNo = 1,
    status: Annotated[str | None, Query(max_length=40)] = None,
) -> HTMLResponse:
    jurisdictions.validate(code)
    status = status if status in FUNCTION_STATUS_LABELS else None
    where, args = "jurisdiction = $1", [code]
    if status:
        where, args = "jurisdiction = $1 AND status = $2", [code, status]
    pager = Pager(page, PER_PAGE, await _count(ctx.pool, f"SELECT count(*) FROM p_functions WHERE {where}", *args))
    rows = await ctx.pool.fetch(
        f"""SELECT function_id, title, category, department, status, society_id, data->>'society_name' AS society_name
            FROM p_functions WHERE {where} ORDER BY function_id LIMIT {pager.per_page} OFFSET {pager.offset}""",
        *args,
    )
    items = [dict(r) for r in rows]
    missing = sorted({i["society_id"] for i in items if i["society_id"] and not i["society_name"]})
    if missing:
        known = await ctx.pool.fetch(
            "SELECT society_id, name FROM p_societies WHERE society_id = ANY($1::text[])", missing
        )
        names = {r["society_id"]: r["name"] for r in known}
        for i in items:
            i["society_name"] = i["society_name"] or names.get(i["society_id"], i["society_id"])

    vpager = Pager(
        vpage, 10, await _count(ctx.pool, "SELECT count(*) FROM p_list_versions WHERE jurisdiction = $1", code)
    )
    versions = [
        dict(r)
        for r in await ctx.pool.fetch(
            """SELECT version, note, published_at, jsonb_array_length(entries) AS size FROM p_list_versions
               WHERE jurisdiction = $1 ORDER BY version DESC LIMIT $2 OFFSET $3""",
            code,
            vpager.per_page,
            vpager.offset,
        )
    ]
    if versions:
        numbers = [v["version"] for v in versions]
        entries = {
            r["version"]: r["entries"]
            for r in await ctx.pool.fetch(
                """SELECT version, entries FROM p_list_versions
                   WHERE jurisdiction = $1 AND version BETWEEN $2 AND $3""",
                code,
                min(numbers) - 1,
                max(numbers),
            )
        }
        for v in versions:
            previous = entries.get(v["version"] - 1)
            diff = list_diff(previous or [], entries.get(v["version"], []))
            v["diff"] = {k: len(items_) for k, items_ in diff.items()}
            v["first"] = previous is None

    # The change history only grows: page it by position without counting it.
    offset = (cpage - 1) * PER_PAGE
    changes = await ctx.pool.fetch(
        """SELECT position, occurred_at, jurisdiction, payload FROM events
           WHERE jurisdiction = $1 AND stream_id LIKE 'public-function/%'
           ORDER BY position DESC LIMIT $2 OFFSET $3""",
        code,
        PER_PAGE + 1,
        offset,
    )
    cpager = Pager(cpage, PER_PAGE, None, more=len(changes) > PER_PAGE)
    changes = changes[:PER_PAGE]
    names, _ = await _titles(ctx.pool, function_ids=[c["payload"]["subject"].partition("/")[2] for c in changes])
    return render(
        "functions.html",
        **_jcontext(code, "functions"),
        items=items,
        pager=pager,
        status=status,
        versions=versions,
        vpager=vpager,
        changes=[_fact_row(c, names) for c in changes],
        cpager=cpager,
    )


@router.get("/j/{code}/list-versions/{version}", response_class=HTMLResponse, summary="One published list version")
async def list_version(
    code: JurisdictionCode,
    version: Annotated[int, FastAPIPath(ge=1, le=PG_INTEGER_MAX)],
    ctx: Context,
    page: PageNo = 1,
) -> HTMLResponse:
    jurisdictions.validate(code)
    row = await ctx.pool.fetchrow(
        "SELECT version, note, published_at, entries FROM p_list_versions WHERE jurisdiction = $1 AND version = $2",
        code,
        version,
    )
    if row is None:
        raise NotFound("list_version_not_found", f"{code} has no published list version {version}")
    previous = await ctx.pool.fetchrow(
        """SELECT version, entries FROM p_list_versions WHERE jurisdiction = $1 AND version < $2
           ORDER BY version DESC LIMIT 1""",
        code,
        version,
    )
    entries = list(row["entries"])
    pager = Pager(page, 100, len(entries))
    return render(
        "list_version.html",
        **_jcontext(code, "functions"),
        version=row,
        previous=previous["version"] if previous else None,
        diff=list_diff(previous["entries"] if previous else [], entries),
        entries=entries[pager.offset : pager.offset + pager.per_page],
        pager=pager,
    )


async def _case_page(
    ctx: Any, code: str, page: int, *, phase: str | None = None, typical_only: bool = False
) -> tuple[list[dict[str, Any]], Pager]:
    low, high = subtree_bounds(code)
    where, args = ["jurisdiction BETWEEN $1 AND $2"], [low, high]
    if phase:
        args.append(phase)
        where.append(f"phase = ${len(args)}")
    if typical_only:
        where.append("typical_case")
    condition = " AND ".join(where)
    pager = Pager(page, PER_PAGE, await _count(ctx.pool, f"SELECT count(*) FROM p_cases WHERE {condition}", *args))
    rows = await ctx.pool.fetch(
        f"""SELECT project_id, title, society_name, department, jurisdiction, category, phase, grade, score,
                   typical_case, overdue_items, updated_at, data->'typical_case' AS typical, data->'summary' AS summary
            FROM p_cases WHERE {condition} ORDER BY updated_at DESC, project_id
            LIMIT {pager.per_page} OFFSET {pager.offset}""",
        *args,
    )
    return [dict(r) for r in rows], pager


@router.get("/j/{code}/cases", response_class=HTMLResponse, summary="Pilot projects of a jurisdiction and below")
async def cases(
    code: JurisdictionCode,
    ctx: Context,
    page: PageNo = 1,
    phase: Annotated[str | None, Query(max_length=40)] = None,
) -> HTMLResponse:
    jurisdictions.validate(code)
    phase = phase if phase in PHASE_LABELS else None
    items, pager = await _case_page(ctx, code, page, phase=phase)
    return render("cases.html", **_jcontext(code, "cases"), items=items, pager=pager, phase=phase)


@router.get("/j/{code}/typical-cases", response_class=HTMLResponse, summary="Typical cases (典型案例)")
async def typical_cases(code: JurisdictionCode, ctx: Context, page: PageNo = 1) -> HTMLResponse:
    jurisdictions.validate(code)
    items, pager = await _case_page(ctx, code, page, typical_only=True)
    return render("typical_cases.html", **_jcontext(code, "typical"), items=items, pager=pager)


def case_view(data: Mapping[str, Any], today: date) -> dict[str, Any]:
    """What the case page shows, from a ``p_cases.data`` document."""
    agreement = data.get("agreement") or {}
    milestones = []
    for milestone_id, m in (data.get("milestones") or {}).items():
        done = m.get("status") == "done"
        milestones.append(
            {
                "milestone_id": milestone_id,
                "title": m.get("title") or milestone_id,
                "due_date": m.get("due_date"),
                "status": label(MILESTONE_STATUS_LABELS, m.get("status")) if m.get("status") else "未报告",
                "overdue": bool(m.get("overdue")) and not done,
            }
        )
    milestones.sort(key=lambda m: (m["due_date"] or "9999", m["milestone_id"]))
    measured = data.get("indicators") or {}
    indicators = [
        {
            **i,
            "measured": measured.get(i.get("name"), {}).get("value"),
            "period": measured.get(i.get("name"), {}).get("period"),
        }
        for i in agreement.get("indicators", [])
    ]
    planned = {i["name"] for i in indicators}
    indicators += [
        {"name": n, "unit": "", "target": None, "weight": None, "measured": m.get("value"), "period": m.get("period")}
        for n, m in measured.items()
        if n not in planned
    ]
    funding = data.get("funding") or {}
    satisfaction = [
        {
            "group": label(RESPONDENT_LABELS, group),
            "respondents": s.get("respondents"),
            "satisfied": s.get("satisfied"),
            "rate": rate_percent(s.get("satisfied"), s.get("respondents")),
        }
        for group, s in (data.get("satisfaction") or {}).items()
    ]
    rectifications = [
        {
            "rectification_id": rid,
            "required_actions": r.get("required_actions", []),
            "deadline": r.get("deadline"),
            "status": label(RECTIFICATION_STATUS_LABELS, r.get("status")),
            "overdue": bool(r.get("overdue")) and r.get("status") != "accepted",
        }
        for rid, r in (data.get("rectifications") or {}).items()
    ]
    return {
        "agreement": agreement,
        "milestones": milestones,
        "indicators": indicators,
        "decisions": [
            {**d, "label": label(DECISION_LABELS, d.get("kind"))}
            for d in data.get("decisions", [])
            if isinstance(d, dict)
        ],
        "rectifications": rectifications,
        "evaluation": data.get("evaluation"),
        "evaluations": data.get("evaluations", []),
        "satisfaction": satisfaction,
        "funding": {
            "allocated": funding.get("allocated_fen", 0),
            "adjusted": funding.get("adjusted_fen", 0),
            "awarded": funding.get("awarded_fen", 0),
            "disbursed": funding.get("disbursed_fen", 0),
            "balance": int(funding.get("allocated_fen", 0))
            + int(funding.get("adjusted_fen", 0))
            + int(funding.get("awarded_fen", 0))
            - int(funding.get("disbursed_fen", 0)),
        },
        "planned_funding": agreement.get("funding", []),
        "summary": data.get("summary"),
        "typical": data.get("typical_case"),
        "today": today.isoformat(),
    }


@router.get("/cases/{project_id}", response_class=HTMLResponse, summary="One pilot project with its timeline")
async def case(project_id: EntityId, ctx: Context) -> HTMLResponse:
    row = await ctx.pool.fetchrow(
        "SELECT project_id, jurisdiction, title, phase, grade, score, overdue_items, data FROM p_cases "
        "WHERE project_id = $1",
        project_id,
    )
    if row is None:
        raise NotFound("case_not_found", f"no pilot project {project_id} has been disclosed")
    data = row["data"]
    view = case_view(data, datetime.now(CHINA_TIME).date())
    names = {m["milestone_id"]: m["title"] for m in view["milestones"]}
    timeline = []
    for e in await store.read_stream(ctx.pool, domain.public_stream(f"case/{project_id}")):
        public_type = e.payload["public_type"]
        timeline.append(
            {
                "occurred_at": e.occurred_at,
                "type": public_type,
                "label": public_type_label(public_type),
                "correction": e.payload.get("correction", False),
                "summary": fact_summary(public_type, e.payload["data"], names),
            }
        )
    return render(
        "case.html",
        **_jcontext(row["jurisdiction"], "cases"),
        case=row,
        data=data,
        view=view,
        timeline=timeline,
    )


def figure_rows(figures: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """The statistics table's rows (label, value) from ``projections.figures``."""
    s, f, c = figures["societies"], figures["functions"], figures["cases"]
    rows: list[tuple[str, Any]] = [
        ("学会总数", s["total"]),
        ("其中：主管学会", s["supervised"]),
        ("其中：团体会员", s["group_members"]),
        ("非常愿意承接的学会", s["very_willing"]),
        ("自认为完全有能力承接的学会", s["fully_capable"]),
        ("已参与承接的学会", s["participating"]),
        ("品牌学会", s["brand"]),
        ("提出的职能（含拟转移）", f["proposed"]),
        ("列入清单的职能", f["on_the_list"]),
        ("已承接的职能", f["undertaken"]),
        ("征求意见中的部门", f["departments_in_consultation"]),
        ("试点项目", c["total"]),
    ]
    rows += [(f"其中：{PHASE_LABELS[p]}", c["by_phase"].get(p, 0)) for p in PHASE_LABELS]
    rows += [(f"评估等级：{GRADE_LABELS[g]}", c["by_grade"].get(g, 0)) for g in GRADE_LABELS]
    rows += [("典型案例", c["typical_cases"]), ("有逾期事项的项目", c["with_overdue_items"])]
    for group, name in RESPONDENT_LABELS.items():
        sat = figures["satisfaction"].get(group)
        rows.append((f"满意度（{name}）", f"{sat['rate_percent']}%" if sat and sat["rate_percent"] else "—"))
    rows += [
        ("下达经费（元）", yuan(figures["funding"]["allocated_fen"])),
        ("拨付经费（元）", yuan(figures["funding"]["disbursed_fen"])),
    ]
    return rows


@router.get("/j/{code}/statistics", response_class=HTMLResponse, summary="Figures for a jurisdiction and below")
async def statistics_page(code: JurisdictionCode, ctx: Context) -> HTMLResponse:
    jurisdictions.validate(code)
    figures = await statistics.figures(ctx.pool, code)
    places: set[str] = set()
    for source in ("p_functions", "p_cases", "p_societies"):
        places |= set(rollup(await _counts_by_jurisdiction(ctx.pool, source, code), code))
    children = sorted(places - {code})[:MAX_CHILD_COLUMNS]
    columns = [(jurisdiction_name(code) + "（含下级）", figure_rows(figures))]
    for child in children:
        columns.append((jurisdiction_name(child), figure_rows(await statistics.figures(ctx.pool, child))))
    table = [(name, [col[1][i][1] for col in columns]) for i, (name, _) in enumerate(columns[0][1])]
    return render(
        "statistics.html",
        **_jcontext(code, "statistics"),
        headers=[c[0] for c in columns],
        table=table,
        charts=await _charts(ctx.pool, code, figures),
        more_children=len(places - {code}) > MAX_CHILD_COLUMNS,
    )


BRIEFING_SECTIONS: dict[str, tuple[str, ...]] = {
    "新列入清单的职能": ("FunctionListed", "FunctionListPublished"),
    "生效的任务书": ("AgreementTookEffect", "FunctionTransferred"),
    "工作进展": (
        "FunctionOpened",
        "FunctionAssigned",
        "CaseOpened",
        "PhaseChanged",
        "MilestoneReported",
        "MilestoneOverdue",
        "IndicatorMeasured",
        "SupervisionMeetingHeld",
    ),
    "监管决定": (
        "ProjectCommended",
        "RectificationOrdered",
        "RectificationAccepted",
        "RectificationRejected",
        "RectificationOverdue",
        "WarningIssued",
        "ProjectTerminated",
        "AwardGranted",
        "TypicalCaseDesignated",
    ),
    "评估与满意度": (
        "SelfEvaluationSubmitted",
        "ThirdPartyEvaluationSubmitted",
        "FinanceEvaluationSubmitted",
        "SatisfactionSurveyed",
        "EvaluationCompleted",
    ),
}
PERIOD_FIGURES: tuple[tuple[str, str], ...] = (
    ("FunctionProposed", "提出拟转移职能"),
    ("FunctionListed", "新列入清单"),
    ("FunctionListPublished", "发布清单版本"),
    ("FunctionAssigned", "指定承接学会"),
    ("CaseOpened", "启动试点项目"),
    ("AgreementTookEffect", "任务书生效"),
    ("MilestoneReported", "里程碑进展报告"),
    ("MilestoneOverdue", "里程碑逾期"),
    ("SupervisionMeetingHeld", "督导例会"),
    ("ProjectCommended", "示范"),
    ("RectificationOrdered", "责令整改"),
    ("WarningIssued", "警示"),
    ("EvaluationCompleted", "完成评估"),
    ("TypicalCaseDesignated", "新增典型案例"),
)


def briefing_sections(facts: Sequence[Mapping[str, Any]]) -> list[tuple[str, list[Mapping[str, Any]]]]:
    """The briefing's facts grouped into its sections, each in time order."""
    return [(title, [f for f in facts if f["type"] in types]) for title, types in BRIEFING_SECTIONS.items()]


@router.get("/j/{code}/briefing", response_class=HTMLResponse, summary="Work briefing (工作简报) for a period")
async def briefing(
    code: JurisdictionCode,
    ctx: Context,
    start: Annotated[str | None, Query(alias="from", max_length=20)] = None,
    end: Annotated[str | None, Query(alias="to", max_length=20)] = None,
) -> HTMLResponse:
    jurisdictions.validate(code)
    now = datetime.now(CHINA_TIME)
    first, last = briefing_period(start, end, now.date())
    since, until = period_bounds(first, last)
    low, high = subtree_bounds(code)
    types = sorted({t for group in BRIEFING_SECTIONS.values() for t in group})
    rows = await ctx.pool.fetch(
        """SELECT position, occurred_at, jurisdiction, payload FROM events
           WHERE jurisdiction BETWEEN $1 AND $2 AND occurred_at >= $3 AND occurred_at < $4
             AND payload->>'public_type' = ANY($5::text[])
           ORDER BY occurred_at, position LIMIT $6""",
        low,
        high,
        since,
        until,
        types,
        BRIEFING_LIMIT + 1,
    )
    truncated = len(rows) > BRIEFING_LIMIT
    rows = rows[:BRIEFING_LIMIT]
    subjects = [r["payload"]["subject"].partition("/") for r in rows]
    names, milestones = await _titles(
        ctx.pool,
        function_ids=[key for kind, _, key in subjects if kind == "function"],
        project_ids=[key for kind, _, key in subjects if kind == "case"],
    )
    facts = [_fact_row(r, names, milestones) for r in rows]
    counted = await ctx.pool.fetch(
        """SELECT payload->>'public_type' AS type, count(*) AS n FROM events
           WHERE jurisdiction BETWEEN $1 AND $2 AND occurred_at >= $3 AND occurred_at < $4 GROUP BY 1""",
        low,
        high,
        since,
        until,
    )
    period_counts = {r["type"]: int(r["n"]) for r in counted}
    figures = await statistics.figures(ctx.pool, code)
    return render(
        "briefing.html",
        **_jcontext(code, "briefing"),
        first=first,
        last=last,
        sections=briefing_sections(facts),
        truncated=truncated,
        limit=BRIEFING_LIMIT,
        period_figures=[(name, period_counts.get(t, 0)) for t, name in PERIOD_FIGURES],
        total_facts=sum(period_counts.values()),
        figures=figure_rows(figures),
        generated_at=now,
        generated_utc=datetime.now(UTC),
    )
